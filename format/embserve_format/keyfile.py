"""The ``keys.idx`` file of a bundle: build a :class:`~embserve_format.keyindex.KeyIndex`, write it, map it.

File format (version :data:`FORMAT_VERSION`): a 64-byte little-endian header (magic, version, hash
id, count, longest key, keys.txt size, offset and row widths), then ``offsets``, ``hashes`` and
``order``, each 64-byte aligned, so that a loader maps them as arrays without copying.
"""

from __future__ import annotations

import codecs
import mmap
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from embserve_format.keyindex import _VERIFY_CHUNK, HASH_ID, HASH_MULTIPLIERS, KeyIndex, KeyIndexError

MAGIC = b"EMBSKIDX"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIIQQQII")  # magic, version, hash, count, maxlen, blob size, off width, row width
_HEADER_SIZE = 64
_ALIGN = 64


def _text_offsets(blob: np.ndarray) -> np.ndarray:
    ends = np.flatnonzero(blob == 10)
    off = np.empty(len(ends) + 1, dtype=np.uint32 if len(blob) < (1 << 32) else np.uint64)
    off[0] = 0
    off[1:] = ends + 1
    return off


def build(blob: Any, hash_id: int = HASH_ID) -> KeyIndex:
    """Index the key text ``blob`` (bytes or mmap of keys.txt, one key per line, newline-terminated).

    Deterministic: rows sorted by hash, rows of one hash by row id. ``hash_id``: which hash
    (:data:`~embserve_format.keyindex.HASH_MULTIPLIERS`); older ones only to test that they load.

    Raises:
        KeyIndexError: the text is not newline-terminated or holds no key.
    """
    arr = np.frombuffer(blob, dtype=np.uint8)
    if not len(arr) or arr[-1] != 10:
        raise KeyIndexError("keys.txt must hold at least one key and end with a line break")
    off = _text_offsets(arr)
    n = len(off) - 1
    lens = np.diff(off.astype(np.int64)) - 1
    maxlen = int(lens.max())
    rows = np.int32 if n < (1 << 31) else np.int64
    index = KeyIndex(blob, off, np.zeros(n, dtype=np.uint32), np.zeros(n, dtype=rows), maxlen, hash_id=hash_id)
    hashes = np.empty(n, dtype=np.uint32)
    for a in range(0, n, _VERIFY_CHUNK):  # hashed in chunks: bounded temporaries
        b = min(n, a + _VERIFY_CHUNK)
        base = int(off[a])
        hashes[a:b] = index._hash(arr[base : int(off[b])], off[a:b].astype(np.int64) - base, lens[a:b])
    order = np.argsort(hashes, kind="stable").astype(rows)
    return KeyIndex(blob, off, hashes[order], order, maxlen, hash_id=hash_id)


def write(index: KeyIndex, path: str | os.PathLike[str]) -> None:
    """Write ``index`` as a ``keys.idx`` file (header, offsets, hashes, order)."""
    off_w, row_w = index.offsets.dtype.itemsize, index.order.dtype.itemsize
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, index.hash_id, index.count, index.maxlen, len(index.blob), off_w, row_w)
    with open(path, "wb") as f:
        f.write(header.ljust(_HEADER_SIZE, b"\0"))
        for arr in (index.offsets.astype(f"<u{off_w}"), index.hashes.astype("<u4"), index.order.astype(f"<i{row_w}")):
            f.write(arr.tobytes())
            f.write(b"\0" * (-f.tell() % _ALIGN))


def _layout(count: int, off_w: int, row_w: int) -> tuple[int, int, int, int]:
    """Byte offsets of offsets, hashes, order in a keys.idx file, and its size."""
    pos, out = _HEADER_SIZE, []
    for size in ((count + 1) * off_w, count * 4, count * row_w):
        out.append(pos)
        pos += size
        pos += -pos % _ALIGN
    return out[0], out[1], out[2], pos


def file_bytes(count: int, blob_bytes: int) -> int:
    """Size of the keys.idx that :func:`build` + :func:`write` make for ``count`` keys in ``blob_bytes`` of keys.txt.

    What a server maps per key beyond the key text (the capacity model's key memory).
    """
    off_w = 4 if blob_bytes < (1 << 32) else 8
    row_w = 4 if count < (1 << 31) else 8
    return _layout(count, off_w, row_w)[3]


def load(keys_path: Path, index_path: Path | None, *, verify: bool = True) -> KeyIndex:
    """Map ``keys.txt`` and its ``keys.idx`` (built here, in memory, when ``index_path`` is None).

    The key text is checked to be UTF-8 (in chunks, no str per key); with ``verify`` the index is
    checked against it (:meth:`KeyIndex.verify`).

    Raises:
        KeyIndexError: unreadable, wrong magic/version/hash, sizes that do not add up, or an index
            that disagrees with keys.txt.
    """
    try:
        with open(keys_path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            blob: Any = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    except OSError as exc:
        raise KeyIndexError(f"{keys_path}: cannot read keys ({exc.strerror or exc})") from exc
    _check_utf8(keys_path, blob)
    if size and blob[-1:] != b"\n":
        blob = bytes(blob) + b"\n"  # an old bundle whose last line has no line break
    if index_path is None:
        index = build(blob)
        if verify:
            index.verify(str(keys_path))
        return index
    try:
        with open(index_path, "rb") as f:
            imm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        raise KeyIndexError(f"{index_path}: cannot read the key index ({exc})") from exc
    if len(imm) < _HEADER_SIZE:
        raise KeyIndexError(f"{index_path}: {len(imm)} bytes, shorter than the {_HEADER_SIZE}-byte header")
    magic, version, hash_id, count, maxlen, blob_size, off_w, row_w = _HEADER.unpack_from(imm)
    if magic != MAGIC or version != FORMAT_VERSION or hash_id not in HASH_MULTIPLIERS:
        raise KeyIndexError(
            f"{index_path}: header {magic!r} version {version} hash {hash_id}, this reader needs {MAGIC!r} version {FORMAT_VERSION}"
            f" hash {' or '.join(map(str, HASH_MULTIPLIERS))}"
        )
    if off_w not in (4, 8) or row_w not in (4, 8) or blob_size != len(blob) or not 0 < maxlen <= blob_size:
        raise KeyIndexError(f"{index_path}: header does not fit keys.txt ({blob_size} vs {len(blob)} bytes)")
    o_off, o_hash, o_order, total = _layout(count, off_w, row_w)
    if len(imm) != total:
        raise KeyIndexError(f"{index_path}: {len(imm)} bytes, the header promises {total}")
    offsets = np.frombuffer(imm, dtype=f"<u{off_w}", count=count + 1, offset=o_off)
    hashes = np.frombuffer(imm, dtype="<u4", count=count, offset=o_hash)
    order = np.frombuffer(imm, dtype=f"<i{row_w}", count=count, offset=o_order)
    index = KeyIndex(blob, offsets, hashes, order, int(maxlen), owners=[imm], hash_id=hash_id)
    if verify:
        index.verify(str(index_path))
    return index


def _check_utf8(path: Path, blob: Any, chunk: int = 1 << 20) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for a in range(0, len(blob), chunk):
            decoder.decode(blob[a : a + chunk], final=a + chunk >= len(blob))
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise KeyIndexError(f"{path}: not valid UTF-8 near byte {a + exc.start}") from exc

"""fastText subword vectors for unknown keys (numpy only; the server must not import gensim).

A fastText table ships its n-gram bucket matrix (``ngrams.npy``, (bucket, dim) float32) and the
manifest entry ``extras.subword = {"minn", "maxn", "bucket", ...}``. An unknown word is the mean of
the bucket vectors of its character n-grams, exactly as gensim's ``FastTextKeyedVectors.get_vector``
(and Facebook's fastText) compute it:

- n-grams of ``"<" + word + ">"`` in UTF-8, lengths minn..maxn counted in characters (a UTF-8
  continuation byte never starts an n-gram), single-character ``<`` / ``>`` n-grams skipped;
- bucket = FNV-1a-32 of the n-gram's bytes, each byte sign-extended as a C ``char`` (fastText's
  historical quirk that gensim reproduces), modulo ``bucket``;
- vector = sum of bucket rows / number of n-grams (duplicates count twice); no n-gram -> zeros.

    vecs = compose(["dogg"], ngrams, minn=3, maxn=6, bucket=200_000)   # (1, dim) float32

:mod:`embserve_server.tables` lists :func:`load` among its optional parts (the ``"subwords"``
extra), so fastText bundles load their n-gram matrix (memory-mapped, checksummed like every
bundle file); :func:`compose_for_table` answers the missing-key policy "subword".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from embserve_format.bundle import MANIFEST, NGRAMS, Bundle, BundleError

from embserve_server.errors import FailedPreconditionError

if TYPE_CHECKING:
    from embserve_server.tables import Table


EXTRA = "subwords"  # Table.extras entry
FNV_OFFSET = 2166136261
FNV_PRIME = 16777619


def ngrams_bytes(word: str, minn: int, maxn: int) -> list[bytes]:
    """Character n-grams of ``<word>`` as UTF-8 byte strings, in fastText's order.

    Raises:
        ValueError: ``minn``/``maxn`` not positive or ``minn > maxn``.
    """
    if minn < 1 or maxn < minn:
        raise ValueError(f"invalid n-gram range minn={minn!r}, maxn={maxn!r}: need 1 <= minn <= maxn")
    b = f"<{word}>".encode()
    size = len(b)
    out = []
    for i in range(size):
        if b[i] & 0xC0 == 0x80:  # continuation byte: n-grams start at character boundaries only
            continue
        j, n = i, 1
        while j < size and n <= maxn:
            j += 1
            while j < size and b[j] & 0xC0 == 0x80:
                j += 1
            if n >= minn and not (n == 1 and (i == 0 or j == size)):
                out.append(b[i:j])
            n += 1
    return out


def fnv1a_hashes(grams: Sequence[bytes]) -> np.ndarray:
    """fastText's FNV-1a-32 of each byte string, vectorised over all of them (uint32, (len(grams),)).

    The loop runs over byte positions (at most 4 * maxn), each step hashing every n-gram at once.
    """
    m = len(grams)
    if m == 0:
        return np.zeros(0, dtype=np.uint32)
    lengths = np.fromiter((len(g) for g in grams), dtype=np.int64, count=m)
    width = int(lengths.max())
    padded = np.zeros((m, width), dtype=np.uint8)  # (m, width) bytes, zero-padded
    flat = np.frombuffer(b"".join(grams), dtype=np.uint8)
    rows = np.repeat(np.arange(m), lengths)
    cols = np.arange(flat.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    padded[rows, cols] = flat
    # C char is signed here: bytes >= 0x80 are sign-extended before the xor (0xC3 -> 0xFFFFFFC3).
    extended = padded.view(np.int8).astype(np.int32).view(np.uint32)
    h = np.full(m, FNV_OFFSET, dtype=np.uint32)
    for pos in range(width):
        live = lengths > pos
        mixed = (h ^ extended[:, pos]) * np.uint32(FNV_PRIME)  # uint32 arithmetic wraps mod 2**32
        h = np.where(live, mixed, h)
    return h


def compose(words: Sequence[str], ngrams: np.ndarray, minn: int, maxn: int, bucket: int) -> np.ndarray:
    """Subword vectors of ``words``: the mean of their n-gram bucket rows (gensim ``wv[word]`` for OOV).

    Args:
        words: the keys to compose (normally those missing from the table).
        ngrams: (bucket, dim) float32 n-gram matrix (``ngrams.npy``; may be memory-mapped).
        minn, maxn: n-gram lengths in characters.
        bucket: number of hash buckets; must equal ``ngrams.shape[0]``.

    Returns:
        (len(words), dim) C-contiguous float32; all-zero rows for words without any n-gram.

    Raises:
        ValueError: bad n-gram range, or ``bucket`` disagreeing with the matrix.
    """
    if ngrams.ndim != 2 or ngrams.shape[0] != bucket:
        raise ValueError(f"n-gram matrix has shape {ngrams.shape}, expected ({bucket}, dim) for bucket={bucket}")
    dim = ngrams.shape[1]
    out = np.zeros((len(words), dim), dtype=np.float32)
    if not len(words):
        return out
    grams: list[bytes] = []
    per_word = np.zeros(len(words), dtype=np.int64)
    for i, w in enumerate(words):
        g = ngrams_bytes(w, minn, maxn)
        grams.extend(g)
        per_word[i] = len(g)
    if not grams:
        return out
    ids = (fnv1a_hashes(grams) % np.uint32(bucket)).astype(np.int64)
    rows = np.asarray(ngrams[ids], dtype=np.float32)  # (total n-grams, dim), gathered once
    has = per_word > 0
    starts = (np.cumsum(per_word) - per_word)[has]
    out[has] = np.add.reduceat(rows, starts, axis=0) / per_word[has, None].astype(np.float32)
    return out


def subword_spec(extras: Mapping[str, Any]) -> dict[str, int] | None:
    """``{"minn", "maxn", "bucket"}`` from a manifest's extras, or None for tables without subwords.

    Raises:
        ValueError: a ``subword`` entry with missing or invalid fields.
    """
    spec = extras.get("subword")
    if not spec:
        return None
    try:
        out = {k: int(spec[k]) for k in ("minn", "maxn", "bucket")}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"manifest extras.subword {spec!r} needs integer minn, maxn and bucket") from exc
    if out["minn"] < 1 or out["maxn"] < out["minn"] or out["bucket"] < 1:
        raise ValueError(f"manifest extras.subword {spec!r} is invalid: need 1 <= minn <= maxn and bucket >= 1")
    return out


@dataclass(frozen=True)
class SubwordTable:
    """A fastText table's n-gram side: (bucket, dim) float32 rows and the n-gram settings."""

    ngrams: np.ndarray  # (bucket, dim) float32, read-only (memory-mapped)
    minn: int
    maxn: int
    bucket: int

    def compose(self, words: Sequence[str]) -> np.ndarray:
        """(len(words), dim) float32 subword vectors; see :func:`compose`."""
        return compose(words, self.ngrams, self.minn, self.maxn, self.bucket)


def load(b: Bundle) -> SubwordTable | None:
    """The n-gram matrix of a fastText bundle, or None for tables without ``extras.subword``.

    Raises:
        BundleError: the manifest promises subwords but the file is missing, unreadable or mis-shaped.
    """
    try:
        spec = subword_spec(b.extras)
    except ValueError as exc:
        raise BundleError(f"{b.path / MANIFEST}: {exc}") from exc
    if spec is None:
        return None
    fname = str((b.extras.get("subword") or {}).get("file") or NGRAMS)
    path = b.file(fname)
    if path is None:
        raise BundleError(f"{b.path}: extras.subword is set but {fname} is not listed in the manifest files")
    try:
        ngrams = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise BundleError(f"{path}: not a readable .npy array ({exc})") from exc
    if ngrams.dtype != np.float32 or ngrams.shape != (spec["bucket"], b.vector_size):
        raise BundleError(
            f"{path}: is {ngrams.dtype} {ngrams.shape}, expected float32 ({spec['bucket']}, {b.vector_size})"
        )
    return SubwordTable(ngrams, spec["minn"], spec["maxn"], spec["bucket"])


def compose_for_table(table: Table, keys: list[str]) -> np.ndarray:
    """Subword vectors of ``keys`` in a fastText ``table`` (missing-key policy "subword").

    Raises:
        FailedPreconditionError: the table has no n-gram buckets (not a fastText table).
    """
    sub: SubwordTable | None = table.extras.get(EXTRA)
    if sub is None:
        raise FailedPreconditionError(
            f"table {table.name!r} has no subword n-grams: missing policy 'subword' needs a fastText table (embserve-train train --model fasttext)"
        )
    return sub.compose(keys)

"""Strict readers of the binary embedding tables: word2vec binary (``COUNT DIM`` line, then per row
``KEY SP`` and DIM little-endian float32) and a ``.npy`` matrix with a one-key-per-line vocabulary.

word2vec binary has no lines past the header; errors name the row's line as the C tool writes it
(header on line 1, row i on line i + 1) and its byte offset.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from embserve_trainer.formats import BOM, FormatError, KeyCollector, ReadOptions, RowError, Table, check_header, open_progress, skip_bom

logger = logging.getLogger(__name__)

MAX_KEY_BYTES = 1 << 16  # a "key" longer than this means the file is not what the header says
_ROWS_PER_CHECK = 1 << 16  # rows copied/checked at once from a .npy (bounds temporaries)


def read_word2vec_binary(path: Path, options: ReadOptions) -> Table:
    """Read the C word2vec tool's binary format the way gensim does, strictly.

    Args:
        path: the ``.bin`` file.
        options: unicode/duplicate policies, row limit, block size, progress bar.

    Returns:
        The rows (float32, first occurrence of each key), keys and what the reader did.

    Raises:
        FormatError: ``FILE:LINE: what; expected`` for the header, a truncated or NaN/Inf row, a bad
            key, or data after the header's last row.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        bom = skip_bom(f, path)
        first = f.readline()
        if not first:
            raise FormatError(path, 1, "empty file", "a 'COUNT DIM' header, then the rows")
        count, dim = check_header(path, first)
        row_bytes = 4 * dim
        body = size - f.tell()
        if count * (row_bytes + 2) > body:  # each row: a key byte, a space, the floats
            raise FormatError(
                path, 1, f"the header says {count} rows of {dim} float32 (at least {count * (row_bytes + 2)} bytes) "
                f"but only {body} bytes follow", "COUNT and DIM to match the file (is it a text file? try --format word2vec)",
            )
        rows = count if options.limit is None else min(count, options.limit)
        out = np.empty((rows, dim), dtype=np.float32)
        keys = KeyCollector(options, first_line=2)
        buf, pos, offset, ptr = b"", 0, f.tell(), 0  # offset: file position of buf[0]
        with open_progress(rows, f"import {path.name}", "row", options.progress) as progress:
            for row in range(rows):
                space = buf.find(b" ", pos)
                while space < 0 or len(buf) - space - 1 < row_bytes:
                    if space < 0 and len(buf) - pos > MAX_KEY_BYTES:
                        raise FormatError(path, f"{row + 2} (byte {offset + pos})", f"no space within {MAX_KEY_BYTES} bytes",
                                          f"KEY, a space, then {row_bytes} bytes of float32 (is DIM right?)")
                    more = f.read(options.block_size)
                    if not more:
                        raise FormatError(path, f"{row + 2} (byte {offset + pos})", f"the file ends inside row {row + 1}",
                                          f"{count} rows of a key and {dim} float32 (the header's count)")
                    buf, offset, pos = buf[pos:] + more, offset + pos, 0
                    space = buf.find(b" ")
                vector = np.frombuffer(buf, dtype="<f4", count=dim, offset=space + 1)
                try:
                    if not np.isfinite(vector).all():
                        raise RowError(f"NaN or Inf in row {row + 1}", "finite numbers")
                    # gensim strips the line feed the C tool writes after each vector from the next key.
                    if keys.add(buf[pos:space].lstrip(b"\n")):
                        out[ptr] = vector
                        ptr += 1
                except RowError as exc:
                    raise exc.at(path, f"{row + 2} (byte {offset + pos})") from None
                pos = space + 1 + row_bytes
                if row % 4096 == 4095:
                    progress.update(4096)
            progress.update(rows % 4096)
        if options.limit is None or options.limit >= count:
            tail = buf[pos:] + f.read(MAX_KEY_BYTES)
            if tail.strip(b"\r\n"):
                raise FormatError(path, f"{count + 2} (byte {offset + pos})", f"data after the header's {count} rows",
                                  "the file to end (is COUNT right?)")
    if keys.dropped:
        logger.warning("%s: %d duplicate keys dropped (first occurrence kept, as gensim does)", path, keys.dropped)
    return Table(out[:ptr], keys.keys, {**keys.info(), "bom_stripped": bom})


def read_npy(path: Path, vocab: Path | None, options: ReadOptions) -> Table:
    """Read a 2-D float ``.npy`` and its vocabulary (line i = key of row i).

    Args:
        path: the ``.npy`` file (never unpickled).
        vocab: the key file: UTF-8, one key per line, ``\\n`` or ``\\r\\n``.
        options: unicode/duplicate policies, row limit.

    Returns:
        The rows (float32, first occurrence of each key), keys and what the reader did.

    Raises:
        FormatError: an unreadable or non-float array, NaN/Inf (naming the row and its key's line),
            a vocabulary line that is empty, not UTF-8, a duplicate, or a line count that differs
            from the rows.
    """
    if vocab is None:
        raise FormatError(path, "-", "a .npy table without --vocab", "--vocab FILE (one key per line, line i = row i)")
    try:
        matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise FormatError(path, "-", f"not a readable .npy array ({exc})", "a file written by numpy.save") from exc
    if matrix.ndim != 2 or 0 in matrix.shape:
        raise FormatError(path, "-", f"array of shape {matrix.shape}", "a non-empty 2-D array (rows, dim)")
    if matrix.dtype.kind != "f":
        raise FormatError(path, "-", f"array of dtype {matrix.dtype}", "float16, float32 or float64 values")
    raw = vocab.read_bytes()
    bom = raw.startswith(BOM)
    if bom:
        logger.info("%s: stripped a UTF-8 byte-order mark", vocab)
        raw = raw[len(BOM) :]
    lines = raw.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    if len(lines) != matrix.shape[0]:
        line = min(len(lines), matrix.shape[0]) + 1
        raise FormatError(vocab, line, f"{len(lines)} keys for the {matrix.shape[0]} rows of {path}", "one key per row")
    rows = len(lines) if options.limit is None else min(options.limit, len(lines))
    keys = KeyCollector(options, first_line=1)
    keep = np.ones(rows, dtype=bool)
    for i in range(rows):
        try:
            keep[i] = keys.add(lines[i].removesuffix(b"\r"))
        except RowError as exc:
            raise exc.at(vocab, i + 1) from None
    # Every row kept, already little-endian float32: the mapped file is the table (checked a block
    # at a time), not a second copy of it in memory (2.4 GB for 2M x 300).
    direct = rows == matrix.shape[0] and bool(keep.all()) and matrix.dtype == np.dtype("<f4") and matrix.flags.c_contiguous
    out = matrix if direct else np.empty((int(keep.sum()), matrix.shape[1]), dtype=np.float32)
    ptr = 0
    for start in range(0, rows, _ROWS_PER_CHECK):
        part = matrix[start : start + _ROWS_PER_CHECK]
        if not direct:
            part = part[keep[start : start + _ROWS_PER_CHECK]]
        with np.errstate(over="ignore"):
            block = part.astype(np.float32, copy=False)
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            row = int(np.flatnonzero(keep[start:])[np.argmin(finite)]) + start
            raise FormatError(path, f"row {row}", f"NaN or Inf (or a value past float32) in the row of key on {vocab}:{row + 1}",
                              "finite float32 numbers")
        if not direct:
            out[ptr : ptr + len(block)] = block
        ptr += len(block)
    if keys.dropped:
        logger.warning("%s: %d duplicate keys dropped (first occurrence kept)", vocab, keys.dropped)
    return Table(out, keys.keys, {**keys.info(), "bom_stripped": bom})

"""Strict, streaming readers of text embedding tables: GloVe (no header), word2vec text and fastText
``.vec`` (first line ``COUNT DIM``).

What is accepted is what gensim's ``KeyedVectors.load_word2vec_format`` reads, minus its accidents
(a short row broadcast over the whole vector, a blank line, extra rows past the header's count,
NaN/Inf, a carriage return inside a key). One line is one row::

    KEY SP V1 SP V2 ... SP Vd [trailing spaces, tabs, \\r]\\n

KEY is every byte before the first space; values are decimal numbers (``-0.12``, ``3e-05``) parsed
to float64 and rounded to float32, exactly as ``numpy.float32(str)`` does in gensim.

Two implementations of one rule set: :func:`parse_row` (plain Python: the specification, and the
one that names the first bad line) and :func:`parse_block_fast` (numpy over whole blocks plus pyarrow's
multi-threaded CSV reader for the numbers). A block the fast path does not take is re-read with
:func:`parse_row`, so both always agree; ``tests/processes/test_import_formats.py`` runs both on every case.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import BinaryIO

import numpy as np

from embserve_trainer.formats import (
    BOM,
    FormatError,
    KeyCollector,
    ReadOptions,
    RowError,
    Table,
    check_header,
    open_progress,
    skip_bom,
)

logger = logging.getLogger(__name__)

# Python's float() grammar without its extras (underscores, inner whitespace, non-ASCII digits,
# "nan"/"inf"): every token that matches parses to the same float32 in gensim and here.
NUMBER = re.compile(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NON_FINITE = {b"nan", b"inf", b"infinity"}
# bytes.rstrip()'s whitespace, less the line feed that ends every line.
_TRAILING = b" \t\r\x0b\x0c"
_WS = np.zeros(256, dtype=bool)
_WS[list(_TRAILING)] = True
# Bytes a compacted numbers block may hold (see parse_block_fast).
_NUMERIC = b"0123456789.eE+- \n"


def row_shape(dim: int | None, header: bool) -> str:
    if dim is None:
        return "a row 'KEY V1 ... Vd' (key, then numbers separated by single spaces)"
    return f"{dim} numbers after the key ({'the header' if header else 'the first row'} says {dim})"


def parse_row(line: bytes, dim: int | None, header: bool) -> tuple[bytes, np.ndarray]:
    """Split one line (without its ``\\n``) into key bytes and float32 values.

    Args:
        line: the raw bytes of the line.
        dim: the number of values every row must have; None for the first row of a GloVe file.
        header: whether ``dim`` comes from a header (only changes the error text).

    Returns:
        (key bytes, (dim,) float32 values).

    Raises:
        RowError: the first rule the line breaks, and what was expected instead.
    """
    line = line.rstrip(_TRAILING)
    if not line:
        raise RowError("blank line", row_shape(dim, header))
    if b"\r" in line:
        raise RowError("a carriage return inside the line", "lines ending in \\n or \\r\\n")
    key, sep, rest = line.partition(b" ")
    if not key:
        raise RowError("the line starts with a space (an empty key)", "the key first, then the numbers")
    if not sep:
        raise RowError(f"key {_show(key)} has no values", row_shape(dim, header))
    tokens = rest.split(b" ")
    if b"" in tokens:
        raise RowError("two spaces in a row (an empty value)", "single spaces between values")
    if dim is not None and len(tokens) != dim:
        raise RowError(f"{len(tokens)} value{'s' * (len(tokens) != 1)} after key {_show(key)}", row_shape(dim, header))
    for token in tokens:
        if not NUMBER.fullmatch(token):
            if token.lower().lstrip(b"+-") in _NON_FINITE:
                raise RowError(f"value {_show(token)} is NaN or Inf", "finite numbers")
            raise RowError(f"value {_show(token)} is not a number", "decimal numbers such as -0.0123 or 4.5e-05")
    with np.errstate(over="ignore"):
        values = np.array([float(t) for t in tokens], dtype=np.float64).astype(np.float32)
    if not np.isfinite(values).all():
        bad = tokens[int(np.argmin(np.isfinite(values)))]
        raise RowError(f"value {_show(bad)} overflows float32", "finite float32 numbers (|x| < 3.4e38)")
    return key, values


def _show(raw: bytes) -> str:
    text = repr(raw.decode("utf-8", "backslashreplace"))
    return text if len(text) <= 60 else text[:57] + "...'"


def read_text(path: Path, *, header: bool, options: ReadOptions) -> Table:
    """Read a GloVe (``header=False``) or word2vec/fastText text (``header=True``) file.

    Args:
        path: the input file.
        header: whether the first line is ``COUNT DIM``.
        options: unicode/duplicate policies, row limit, block size, progress bar.

    Returns:
        The rows (float32, first occurrence of each key) and what the reader did.

    Raises:
        FormatError: ``FILE:LINE: what was wrong; what was expected`` (nothing was written).
    """
    with open(path, "rb") as f:
        bom = skip_bom(f, path)
        lines = count_lines(f, options.block_size)
        f.seek(len(BOM) if bom else 0)
        first = 1
        dim: int | None = None
        if header:
            count, dim = check_header(path, f.readline())
            if lines - 1 != count:
                what = "no rows after the header" if lines == 1 else (
                    f"the header says {count} rows but {lines - 1} lines follow (blank ones too)")
                raise FormatError(path, 1, what, "COUNT to equal the number of rows below the header")
            first = 2
        elif lines == 0:
            raise FormatError(path, 1, "empty file", row_shape(None, header))
        else:
            start = f.tell()
            try:
                dim = len(parse_row(f.readline().rstrip(b"\n"), None, header)[1])
            except RowError as exc:
                raise exc.at(path, 1) from None
            f.seek(start)
        rows = lines - first + 1 if options.limit is None else min(options.limit, lines - first + 1)
        table = _read_rows(f, path, rows, dim, first, header, options)
    table.info["bom_stripped"] = bom
    return table


def count_lines(f: BinaryIO, block_size: int) -> int:
    """Lines from the current position to the end (a last line without ``\\n`` counts)."""
    n, last = 0, b"\n"
    while chunk := f.read(max(block_size, 1 << 20)):
        n += chunk.count(b"\n")
        last = chunk[-1:]
    return n + (last != b"\n")


def _read_rows(f: BinaryIO, path: Path, rows: int, dim: int, first: int, header: bool, options: ReadOptions) -> Table:
    out = np.empty((rows, dim), dtype=np.float32)  # (rows, dim): pages are touched only as rows land
    keys = KeyCollector(options, first_line=first)
    ptr, line, carry = 0, first, b""
    with open_progress(rows, f"import {path.name}", "row", options.progress) as bar:
        while line - first < rows:
            chunk = f.read(max(options.block_size, len(carry)))  # doubling: long lines stay linear
            buf = carry + chunk
            if not chunk:
                buf += b"\n"  # the last line has no line feed
            cut = buf.rfind(b"\n") + 1
            if cut == 0:
                carry = buf  # a line longer than the block: read on
                continue
            block, carry = buf[:cut], buf[cut:]
            n = block.count(b"\n")
            if n > rows - (line - first):  # --limit: stop at the last wanted row
                n = rows - (line - first)
                block = block[: _nth_newline(block, n) + 1]
            ptr = _parse_block(block, path, line, dim, header, keys, out, ptr)
            line += n
            bar.update(n)
    if keys.dropped:
        logger.warning("%s: %d duplicate keys dropped (first occurrence kept, as gensim does)", path, keys.dropped)
    return Table(out[:ptr], keys.keys, keys.info())


def _nth_newline(block: bytes, n: int) -> int:
    return int(np.flatnonzero(np.frombuffer(block, np.uint8) == 10)[n - 1])


def _parse_block(
    block: bytes, path: Path, line: int, dim: int, header: bool, keys: KeyCollector, out: np.ndarray, ptr: int
) -> int:
    """Parse whole lines ``block`` (starting at file line ``line``) into ``out[ptr:]``; return the new ptr."""
    fast = parse_block_fast(block, dim, out[ptr:])
    if fast is None:
        return _slow_block(block, path, line, dim, header, keys, out, ptr)
    key_spans, n = fast
    keep = np.ones(n, dtype=bool)
    for i, (s, e) in enumerate(key_spans):
        try:
            keep[i] = keys.add(block[s:e])
        except RowError as exc:
            raise exc.at(path, line + i) from None
    if not keep.all():
        out[ptr : ptr + int(keep.sum())] = out[ptr : ptr + n][keep]
    return ptr + int(keep.sum())


def _slow_block(
    block: bytes, path: Path, line: int, dim: int, header: bool, keys: KeyCollector, out: np.ndarray, ptr: int
) -> int:
    for i, raw in enumerate(block.split(b"\n")[:-1]):
        try:
            key, values = parse_row(raw, dim, header)
            if keys.add(key):
                out[ptr] = values
                ptr += 1
        except RowError as exc:
            raise exc.at(path, line + i) from None
    return ptr


def parse_block_fast(block: bytes, dim: int, out: np.ndarray) -> tuple[list[tuple[int, int]], int] | None:
    """Numbers of every line into ``out[:n]`` at C speed; None when any line needs a closer look.

    Returns:
        ((key start, key end) per line, n lines), or None (nothing in ``out`` is then relied on).
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv

    a = np.frombuffer(block, dtype=np.uint8)
    nl = np.flatnonzero(a == 10)  # (n,) line ends
    n = len(nl)
    starts = np.zeros(n, dtype=np.int64)
    starts[1:] = nl[:-1] + 1
    ends = nl.copy()
    todo = np.flatnonzero((ends > starts) & _WS[a[ends - 1]])  # rstrip, a byte per round
    while todo.size:
        ends[todo] -= 1
        todo = todo[(ends[todo] > starts[todo]) & _WS[a[ends[todo] - 1]]]
    spaces = np.flatnonzero(a == 32)
    if not spaces.size:
        return None
    at = np.searchsorted(spaces, starts)  # the first space at or after each line start
    key_end = spaces[np.minimum(at, spaces.size - 1)]
    if ((at == spaces.size) | (key_end >= ends) | (key_end == starts)).any():
        return None  # blank line, empty key or no values
    cr = np.flatnonzero(a == 13)
    if cr.size and (cr < ends[np.searchsorted(nl, cr)]).any():
        return None  # a carriage return that is not part of a line ending
    # Compact the numbers of every line, one \n each, into a CSV of dim float columns.
    edge = np.zeros(len(a) + 1, dtype=np.int8)
    edge[key_end + 1] = 1
    edge[ends + 1] = -1
    numbers = a[np.cumsum(edge[:-1], dtype=np.int8).view(bool)]
    numbers[np.cumsum(ends - key_end) - 1] = 10
    if numbers.tobytes().translate(None, _NUMERIC):
        return None  # letters, tabs, non-ASCII...: parse_row names the culprit
    names = [str(j) for j in range(dim)]
    try:
        table = pcsv.read_csv(
            pa.py_buffer(numbers),
            read_options=pcsv.ReadOptions(column_names=names, block_size=1 << 20),
            parse_options=pcsv.ParseOptions(
                delimiter=" ", quote_char=False, escape_char=False, double_quote=False, ignore_empty_lines=False
            ),
            convert_options=pcsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.float64()), null_values=[], strings_can_be_null=False,
                quoted_strings_can_be_null=False, check_utf8=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None  # wrong count, empty value, "1e" or "1-2": parse_row names the line
    if table.num_rows != n or table.num_columns != dim:
        return None
    rows = out[:n]
    with np.errstate(over="ignore"):
        for j, column in enumerate(table.columns):
            rows[:, j] = column.to_numpy()  # float64 -> float32: gensim's numpy.float32(str) rounding
    if not np.isfinite(rows).all():
        return None  # a value past float32's range
    return list(zip(starts.tolist(), key_end.tolist())), n

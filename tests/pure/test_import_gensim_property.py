"""gensim as the oracle: on generated valid and broken files (unicode keys, ragged rows, truncations,
headers that lie, stray blank lines, trailing spaces, CRLF, BOM, invalid UTF-8, duplicates, NaN),
every file embserve accepts yields exactly gensim's ``load_word2vec_format`` keys (in order) and rows
(bit for bit), and every file gensim refuses is refused too, with ``FILE:LINE`` in the message.
Both parser paths run: the block parser at sizes that cut rows, and one block for the whole file."""

from __future__ import annotations

import logging
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import require_module
from embserve_trainer.formats import BOM, FormatError, RowError
from embserve_trainer.importers import import_table
from embserve_trainer.textformats import parse_block_fast, parse_row
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

gensim_kv = require_module("gensim.models.keyedvectors", "embserve-trainer depends on gensim")
EXAMPLES = 700  # per format: the figure the issue asks about

KEY = st.text(st.characters(exclude_characters=" \n", exclude_categories=("Cs",)), min_size=1, max_size=4)
NUMBER_TEXT = st.from_regex(rb"\A[+-]?(?:[0-9]{1,10}(?:\.[0-9]{0,10})?|\.[0-9]{1,10})(?:[eE][+-]?[0-9]{1,2})?\Z")
SPELLINGS = [repr, lambda v: np.format_float_positional(np.float32(v)), lambda v: f"{v:.6f}", lambda v: f"{v:+E}"]
BREAKAGES = [
    "none", "none", "none", "short-row", "long-row", "blank-line", "bad-token", "nan", "double-space",
    "leading-space", "invalid-utf8", "duplicate", "header-count", "header-dim", "truncate", "key-cr", "tab",
]


@st.composite
def number(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(NUMBER_TEXT)
    value = draw(st.floats(-1e6, 1e6, width=32))
    return draw(st.sampled_from(SPELLINGS))(value).encode()


@st.composite
def text_file(draw: st.DrawFn, header: bool) -> tuple[bytes, str]:
    n, dim = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    lines = [[k.encode()] + [draw(number()) for _ in range(dim)] for k in draw(st.lists(KEY, min_size=n, max_size=n))]
    breakage = draw(st.sampled_from(BREAKAGES))
    i = draw(st.integers(0, n - 1))
    head = [str(n).encode(), str(dim).encode()]
    if breakage == "short-row":
        lines[i].pop()
    elif breakage == "long-row":
        lines[i].append(b"1")
    elif breakage == "bad-token":
        lines[i][-1] = draw(st.sampled_from([b"x", b"1e", b"--1", b"1_0", b"0x10", b".", b"1.5.2", b"\xd9\xa1"]))
    elif breakage == "nan":
        lines[i][-1] = draw(st.sampled_from([b"nan", b"-inf", b"Infinity", b"1e39", b"-4e38"]))
    elif breakage == "double-space":
        lines[i][-1] = b" " + lines[i][-1]
    elif breakage == "leading-space":
        lines[i][0] = b" " + lines[i][0]
    elif breakage == "invalid-utf8":
        lines[i][0] += draw(st.sampled_from([b"\xff", b"\xe6\x97", b"\xc0\xaf"]))
    elif breakage == "duplicate":
        lines[i][0] = lines[0][0]
    elif breakage == "key-cr":
        lines[i][0] += b"\r"
    elif breakage == "tab":
        lines[i][-1] += b"\t1"
    elif breakage == "header-count":
        head[0] = str(n + draw(st.sampled_from([-1, 1]))).encode()
    elif breakage == "header-dim":
        head[1] = str(dim + draw(st.sampled_from([-1, 1]))).encode()
    trailing = draw(st.sampled_from([b"", b"", b" ", b" \t", b"\x0c"]))
    rows = [b" ".join(parts) + trailing for parts in lines]
    if breakage == "blank-line":
        rows.insert(i + draw(st.integers(0, 1)), draw(st.sampled_from([b"", b" ", b"\r"])))
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    data = eol.join(([b" ".join(head)] if header else []) + rows) + draw(st.sampled_from([eol, b""]))
    if breakage == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    if draw(st.integers(0, 5)) == 0:
        data = BOM + data
    return data, breakage


@st.composite
def binary_file(draw: st.DrawFn) -> tuple[bytes, str]:
    n, dim = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    keys = [k.encode() for k in draw(st.lists(KEY, min_size=n, max_size=n))]
    rows = np.array([[draw(st.floats(width=32, allow_nan=False, allow_infinity=False)) for _ in range(dim)] for _ in range(n)], "<f4")
    breakage = draw(st.sampled_from(["none", "none", "none", "nan", "invalid-utf8", "duplicate", "header-count",
                                     "header-dim", "truncate", "trailing-data", "leading-newlines", "no-newlines"]))
    i = draw(st.integers(0, n - 1))
    count, size = n, dim
    if breakage == "nan":
        rows[i, -1] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    elif breakage == "invalid-utf8":
        keys[i] += b"\xff"
    elif breakage == "duplicate":
        keys[i] = keys[0]
    elif breakage == "header-count":
        count += draw(st.sampled_from([-1, 1]))
    elif breakage == "header-dim":
        size += draw(st.sampled_from([-1, 1]))
    elif breakage == "leading-newlines":
        keys[i] = b"\n\n" + keys[i]
    sep = b"" if breakage == "no-newlines" else b"\n"
    data = f"{count} {size}\n".encode() + b"".join(k + b" " + r.tobytes() + sep for k, r in zip(keys, rows))
    if breakage == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif breakage == "trailing-data":
        data += draw(st.sampled_from([b"x", b"more 1234", b"\n\n"]))
    if draw(st.integers(0, 5)) == 0:
        data = BOM + data
    return data, breakage


def gensim_reads(path: Path, fmt: str) -> tuple[list[str], np.ndarray] | None:
    """gensim's reading of the file (keys of ignored duplicates are None at the end: dropped)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kv = gensim_kv.KeyedVectors.load_word2vec_format(str(path), binary=fmt == "word2vec-binary", no_header=fmt == "glove")
    except (ValueError, EOFError, IndexError, AssertionError, TypeError):  # how gensim refuses (UnicodeDecodeError: a ValueError; an empty GloVe file: TypeError)
        return None
    keys = [k for k in kv.index_to_key if k is not None]
    return keys, np.asarray(kv.vectors)[: len(keys)]


def check_against_gensim(data: bytes, fmt: str, block_size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ours_path, theirs_path = Path(tmp) / "ours.txt", Path(tmp) / "gensim.txt"
        ours_path.write_bytes(data)
        theirs_path.write_bytes(data.removeprefix(BOM))  # embserve strips a BOM; gensim would keep it in the key
        theirs = gensim_reads(theirs_path, fmt)
        try:
            ours = import_table(fmt, ours_path, block_size=block_size, progress=False)
        except FormatError as exc:
            assert re.match(rf"{re.escape(str(ours_path))}:\d+[^:]*: .+; expected .+", str(exc)), str(exc)
            event("refused by both" if theirs is None else "refused by embserve only (stricter)")
            return
    assert theirs is not None, f"embserve accepted a file gensim refuses: {data!r}"
    keys, vectors = theirs
    assert ours.keys == keys, data
    assert ours.vectors.dtype == np.float32 and ours.vectors.shape == vectors.shape
    assert np.array_equal(ours.vectors.view(np.uint32), vectors.astype(np.float32).view(np.uint32)), data
    event("accepted by both, identical")


@pytest.fixture(autouse=True)
def quiet_gensim() -> None:
    logging.getLogger("gensim").setLevel(logging.ERROR)
    logging.getLogger("embserve_trainer").setLevel(logging.ERROR)


SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])  # same examples every run
BLOCKS = st.sampled_from([1, 5, 64, 1 << 22])


@SETTINGS
@given(case=text_file(header=False), block_size=BLOCKS)
def test_glove_text_matches_gensim(case: tuple[bytes, str], block_size: int) -> None:
    check_against_gensim(case[0], "glove", block_size)


@SETTINGS
@given(case=text_file(header=True), block_size=BLOCKS)
def test_word2vec_text_matches_gensim(case: tuple[bytes, str], block_size: int) -> None:
    check_against_gensim(case[0], "word2vec", block_size)


@SETTINGS
@given(case=binary_file(), block_size=BLOCKS)
def test_word2vec_binary_matches_gensim(case: tuple[bytes, str], block_size: int) -> None:
    check_against_gensim(case[0], "word2vec-binary", block_size)


@settings(max_examples=3000, deadline=None, derandomize=True)
@given(tokens=st.lists(st.text("0123456789.eE+-", min_size=1, max_size=8).map(str.encode), min_size=1, max_size=3))
def test_block_parser_reads_numbers_like_the_reference(tokens: list[bytes]) -> None:
    """Whatever the block path (pyarrow's number grammar over the bytes it lets through) accepts, the
    reference (a subset of Python's float()) accepts with the same float32 values."""
    line = b"k " + b" ".join(tokens)
    out = np.zeros((1, len(tokens)), np.float32)
    fast = parse_block_fast(line + b"\n", len(tokens), out)
    try:
        reference: np.ndarray | None = parse_row(line, len(tokens), False)[1]
    except RowError:
        reference = None
    if fast is None:
        event("block path declines (the reference reads the block)")
        return
    assert reference is not None, line
    assert reference.tobytes() == out[0].tobytes(), line
    event("both accept")

"""A catalogue of malformed inputs per format: each one exits 2 through the real CLI with
``FILE:LINE: what; expected`` on stderr and leaves no bundle and no hidden temp directory.
Plus: BOM/CRLF files import to the same bundle as clean ones, and the block parser (numpy + pyarrow)
agrees with the line-by-line specification at block sizes that cut rows in half."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import BIN, require_module
from embserve_format.bundle import read_bundle
from embserve_trainer import cli
from embserve_trainer.formats import FormatError
from embserve_trainer.importers import import_table

W2V = b"2 3\ncat 1 2 3\ndog 4 5 6\n"


def binary(rows: list[tuple[bytes, list[float]]], count: int | None = None, dim: int = 2, tail: bytes = b"") -> bytes:
    head = f"{len(rows) if count is None else count} {dim}\n".encode()
    return head + b"".join(k + b" " + np.array(v, "<f4").tobytes() + b"\n" for k, v in rows) + tail


CASES = {  # name: (format, file bytes, the line the message must name, words it must contain)
    "glove-short-row": ("glove", b"cat 1 2\ndog 1\n", 2, "1 value"),
    "glove-long-row": ("glove", b"cat 1 2\ndog 1 2 3\n", 2, "3 values"),
    "glove-not-a-number": ("glove", b"cat 1 2\ndog 1 x\n", 2, "not a number"),
    "glove-nan": ("glove", b"cat 1 2\ndog NaN 2\n", 2, "NaN or Inf"),
    "glove-inf": ("glove", b"cat 1 2\ndog 1 -inf\n", 2, "NaN or Inf"),
    "glove-overflow": ("glove", b"cat 1 2\ndog 1 1e39\n", 2, "overflows float32"),
    "glove-blank-line": ("glove", b"cat 1 2\n\ndog 1 2\n", 2, "blank line"),
    "glove-trailing-blank-line": ("glove", b"cat 1 2\ndog 1 2\n\n", 3, "blank line"),
    "glove-invalid-utf8": ("glove", b"cat 1 2\nd\xffg 1 2\n", 2, "not valid UTF-8"),
    "glove-empty": ("glove", b"", 1, "empty file"),
    "glove-bom-only": ("glove", b"\xef\xbb\xbf", 1, "empty file"),
    "glove-double-space": ("glove", b"cat 1 2\ndog 1  2\n", 2, "two spaces"),
    "glove-leading-space": ("glove", b"cat 1 2\n dog 1 2\n", 2, "starts with a space"),
    "glove-key-only": ("glove", b"cat 1 2\ndog\n", 2, "has no values"),
    "glove-inner-cr": ("glove", b"cat 1 2\nd\rog 1 2\n", 2, "carriage return"),
    "glove-tab-separated": ("glove", b"cat 1 2\ndog 1\t2\n", 2, "1 value after key"),
    "w2v-header-only": ("word2vec", b"2 3\n", 1, "no rows after the header"),
    "w2v-header-too-big": ("word2vec", b"3 3\ncat 1 2 3\ndog 4 5 6\n", 1, "says 3 rows but 2"),
    "w2v-header-too-small": ("word2vec", b"1 3\ncat 1 2 3\ndog 4 5 6\n", 1, "says 1 rows but 2"),
    "w2v-header-not-ints": ("word2vec", b"2 three\ncat 1 2 3\ndog 4 5 6\n", 1, "not 'COUNT DIM'"),
    "w2v-header-zero": ("word2vec", b"0 3\n", 1, "0 rows"),
    "w2v-wrong-dim": ("word2vec", b"2 3\ncat 1 2 3\ndog 4 5\n", 3, "2 values"),
    "w2v-truncated-row": ("word2vec", W2V[:-4], 3, "1 value"),
    "vec-nan": ("fasttext-vec", b"2 2\ncat 1 2 \ndog nan 2 \n", 3, "NaN or Inf"),
    "bin-empty": ("word2vec-binary", b"", 1, "empty file"),
    "bin-header-lies": ("word2vec-binary", binary([(b"cat", [1, 2])], count=5), 1, "the header says 5 rows"),
    "bin-truncated": ("word2vec-binary", binary([(b"cat", [1, 2]), (b"dog", [3, 4])])[:-6], 3, "ends inside row 2"),
    "bin-trailing-data": ("word2vec-binary", binary([(b"cat", [1, 2])], tail=b"dog junk"), 3, "data after"),
    "bin-nan": ("word2vec-binary", binary([(b"cat", [1, 2]), (b"dog", [float("nan"), 4])]), 3, "NaN or Inf"),
    "bin-invalid-utf8": ("word2vec-binary", binary([(b"cat", [1, 2]), (b"d\xffg", [3, 4])]), 3, "not valid UTF-8"),
    "bin-header-not-ints": ("word2vec-binary", b"x y\n", 1, "not 'COUNT DIM'"),
}


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(args)
    return code, capsys.readouterr().err


def assert_nothing_written(tables: Path) -> None:
    leftovers = [p.relative_to(tables) for p in tables.rglob("*")] if tables.exists() else []
    assert all(p.parts == ("x",) for p in leftovers), f"left behind: {leftovers}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_file_exits_2_naming_file_and_line(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    fmt, data, line, words = CASES[case]
    src = tmp_path / "input.dat"
    src.write_bytes(data)
    tables = tmp_path / "t"
    code, err = run_cli(["import", str(src), "--format", fmt, "--tables", str(tables), "--name", "x", "--no-progress"], capsys)
    assert code == 2
    match = re.search(rf"{re.escape(str(src))}:(\d+)\b[^:]*: (.*); expected .+", err)
    assert match, err
    assert int(match.group(1)) == line and words in match.group(2), err
    assert_nothing_written(tables)


def test_duplicates_error_names_both_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "dup.txt"
    src.write_bytes(b"a 1 2\nb 3 4\na 5 6\n")
    args = ["import", str(src), "--tables", str(tmp_path / "t"), "--name", "x", "--no-progress"]
    code, err = run_cli([*args, "--duplicates", "error"], capsys)
    assert code == 2 and f"{src}:3: duplicate key 'a' (first on line 1)" in err
    assert_nothing_written(tmp_path / "t")
    code, err = run_cli(args, capsys)  # default: gensim's keep-first, counted in a warning
    assert code == 0
    bundle = read_bundle(tmp_path / "t" / "x" / "1")
    assert bundle.keys == ["a", "b"] and bundle.vectors.tolist() == [[1, 2], [3, 4]]
    assert bundle.manifest["source"]["duplicates_dropped"] == 1


def test_unicode_errors_replace_is_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "bad.txt"
    src.write_bytes(b"cat 1 2\nd\xffg 3 4\n")
    code, _ = run_cli(["import", str(src), "--tables", str(tmp_path / "t"), "--name", "x", "--no-progress",
                       "--unicode-errors", "replace"], capsys)
    assert code == 0
    bundle = read_bundle(tmp_path / "t" / "x" / "1")
    assert bundle.keys == ["cat", "d\ufffdg"]
    assert bundle.manifest["source"]["unicode_errors"] == "replace" and bundle.manifest["source"]["keys_not_utf8"] == 1


NPY_CASES = {  # name: (array, vocab bytes, where the message points, words)
    "nan-row": (np.array([[1, 2], [np.nan, 1]], np.float32), b"a\nb\n", "v.npy:row 1", "NaN or Inf"),
    "f64-overflow": (np.array([[1, 2], [1e300, 1]]), b"a\nb\n", "v.npy:row 1", "NaN or Inf"),
    "too-few-keys": (np.ones((3, 2), np.float32), b"a\nb\n", "vocab.txt:3", "2 keys for the 3 rows"),
    "too-many-keys": (np.ones((1, 2), np.float32), b"a\nb\n", "vocab.txt:2", "2 keys for the 1 rows"),
    "blank-key": (np.ones((2, 2), np.float32), b"a\n\n", "vocab.txt:2", "empty key"),
    "invalid-utf8": (np.ones((2, 2), np.float32), b"a\n\xff\n", "vocab.txt:2", "not valid UTF-8"),
    "int-dtype": (np.ones((2, 2), np.int64), b"a\nb\n", "v.npy:-", "dtype int64"),
    "3-d": (np.ones((2, 2, 2), np.float32), b"a\nb\n", "v.npy:-", "shape (2, 2, 2)"),
}


@pytest.mark.parametrize("case", sorted(NPY_CASES))
def test_malformed_npy_exits_2(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    array, vocab, where, words = NPY_CASES[case]
    np.save(tmp_path / "v.npy", array)
    (tmp_path / "vocab.txt").write_bytes(vocab)
    code, err = run_cli(["import", str(tmp_path / "v.npy"), "--vocab", str(tmp_path / "vocab.txt"),
                         "--tables", str(tmp_path / "t"), "--name", "x", "--no-progress"], capsys)
    assert code == 2 and f"{tmp_path / where}" in err and words in err and "; expected " in err, err
    assert_nothing_written(tmp_path / "t")


def test_npy_vocab_with_bom_and_crlf(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.arange(6, dtype=np.float64).reshape(3, 2))
    (tmp_path / "vocab.txt").write_bytes(b"\xef\xbb\xbfa\r\nb\r\na\r\n")
    got = import_table("npy", tmp_path / "v.npy", vocab=tmp_path / "vocab.txt", progress=False)
    assert got.keys == ["a", "b"] and got.vectors.tolist() == [[0, 1], [2, 3]]
    assert got.source["bom_stripped"] and got.source["duplicates_dropped"] == 1


def test_bom_and_crlf_import_to_the_same_bundle(tmp_path: Path) -> None:
    clean = b"cat 0.5 -1.25 3e-3\n\xe6\x9d\xb1\xe4\xba\xac 1 2 3\n"
    variants = {"clean": clean, "bom": b"\xef\xbb\xbf" + clean, "crlf": clean.replace(b"\n", b"\r\n"),
                "both": b"\xef\xbb\xbf" + clean.replace(b"\n", b"\r\n"), "no-final-newline": clean[:-1],
                "trailing-spaces": clean.replace(b"\n", b" \t\n")}
    sums = set()
    for name, data in variants.items():
        (tmp_path / f"{name}.txt").write_bytes(data)
        subprocess.run([BIN / "embserve-train", "import", str(tmp_path / f"{name}.txt"), "--tables", str(tmp_path / name),
                        "--name", "x", "--no-progress"], check=True, capture_output=True)
        files = read_bundle(tmp_path / name / "x" / "1").manifest["files"]
        sums.add(json.dumps({k: files[k] for k in ("vectors.npy", "keys.txt")}))
    assert len(sums) == 1


def test_cli_exit_code_and_stderr_in_a_real_process(tmp_path: Path) -> None:
    src = tmp_path / "g.txt"
    src.write_bytes(b"cat 1 2\ndog 1\n")
    r = subprocess.run([BIN / "embserve-train", "import", str(src), "--tables", str(tmp_path / "t"), "--name", "x"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and f"{src}:2: 1 value after key 'dog'; expected 2 numbers" in r.stderr
    assert r.stdout == "" and not (tmp_path / "t").exists()


def random_text(rng: np.random.Generator, n: int, dim: int, header: bool) -> tuple[bytes, np.ndarray, list[str]]:
    keys = [f"k{i}{'é' * (i % 3)}" for i in range(n)]
    rows = (rng.normal(size=(n, dim)) * 10.0 ** rng.integers(-6, 6, size=(n, 1))).astype(np.float32)
    spelled = [" ".join(np.format_float_scientific(v) if i % 2 else repr(float(v)) for v in row) for i, row in enumerate(rows)]
    lines = [f"{k} {s}" + " " * (i % 2) for i, (k, s) in enumerate(zip(keys, spelled))]
    text = (f"{n} {dim}\n" if header else "") + "\r\n".join(lines) + "\n"
    return text.encode(), rows, keys


@pytest.mark.parametrize("block_size", [1, 7, 64, 1000, 1 << 22])
def test_block_boundaries_inside_rows(tmp_path: Path, block_size: int) -> None:
    """The streaming path cuts the file into blocks that end mid-row; the result never changes."""
    data, rows, keys = random_text(np.random.default_rng(3), 120, 5, header=True)
    src = tmp_path / "in.vec"
    src.write_bytes(data)
    got = import_table("fasttext-vec", src, block_size=block_size, progress=False)
    assert got.keys == keys and np.array_equal(got.vectors, rows)
    assert import_table("fasttext-vec", src, block_size=block_size, limit=37, progress=False).keys == keys[:37]


@pytest.mark.parametrize("block_size", [5, 300, 1 << 22])
def test_block_path_names_the_same_line_as_the_reference(tmp_path: Path, block_size: int) -> None:
    data, _, _ = random_text(np.random.default_rng(4), 60, 4, header=False)
    lines = data.rstrip(b"\n").split(b"\r\n")
    for bad_line, breakage in [(1, b" x"), (17, b" 1e400"), (41, b"  7"), (60, b"\tz")]:
        broken = b"\r\n".join(line + breakage if i == bad_line - 1 else line for i, line in enumerate(lines)) + b"\n"
        src = tmp_path / "in.txt"
        src.write_bytes(broken)
        with pytest.raises(FormatError, match=rf"^{re.escape(str(src))}:{bad_line}: "):
            import_table("glove", src, block_size=block_size, progress=False)


def write_model(tmp_path: Path, rows: np.ndarray) -> tuple[Path, Path]:
    """A 4-token WordLevel tokenizer.json and a safetensors file with its embedding tensor."""
    safetensors_numpy = require_module("safetensors.numpy", "requirements-dev.txt: safetensors")
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    tokenizer = tmp_path / "tokenizer.json"
    Tokenizer(WordLevel({"[UNK]": 0, "cat": 1, "dog": 2, "mat": 3}, unk_token="[UNK]")).save(str(tokenizer))
    model = tmp_path / "model.safetensors"
    safetensors_numpy.save_file({"embeddings.word_embeddings.weight": rows}, str(model))
    return model, tokenizer


def test_safetensors_with_nan_names_the_row_and_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = np.ones((4, 3), np.float32)
    rows[2, 1] = np.nan
    model, _ = write_model(tmp_path, rows)
    code, err = run_cli(["import", str(model), "--tables", str(tmp_path / "t"), "--name", "x", "--no-progress"], capsys)
    assert code == 2 and f"{model}:row 2: " in err and "'dog'" in err and "expected finite" in err, err
    assert_nothing_written(tmp_path / "t")


@pytest.mark.parametrize("breakage, words", [
    (lambda text: "{," + text[1:], "not valid JSON"),  # line 1
    (lambda text: "\n\n" + text[: len(text) // 2], "not valid JSON"),  # cut in the middle: the last line
    (lambda text: '{"version": "1.0"}', 'no "model"'),
])
def test_broken_tokenizer_json_names_the_line(tmp_path: Path, breakage: object, words: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    model, tokenizer = write_model(tmp_path, np.ones((4, 3), np.float32))
    broken = breakage(tokenizer.read_text())  # type: ignore[operator]
    tokenizer.write_text(broken)
    code, err = run_cli(["import", str(model), "--tables", str(tmp_path / "t"), "--name", "x", "--no-progress"], capsys)
    line = 1 if broken.startswith(("{,", '{"version"')) else broken.count("\n") + 1
    assert code == 2 and f"{tokenizer}:{line}: " in err and words in err and "; expected " in err, err
    assert_nothing_written(tmp_path / "t")


def test_truncated_safetensors_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = write_model(tmp_path, np.ones((4, 3), np.float32))
    model.write_bytes(model.read_bytes()[:-7])
    code, err = run_cli(["import", str(model), "--tables", str(tmp_path / "t"), "--name", "x", "--no-progress"], capsys)
    assert code == 2 and str(model) in err, err
    assert_nothing_written(tmp_path / "t")


def test_float32_npy_is_served_from_its_mapping_not_copied(tmp_path: Path) -> None:
    """A little-endian float32 .npy with every row kept is checked in blocks and passed on mapped."""
    from embserve_trainer.binformats import read_npy
    from embserve_trainer.formats import ReadOptions

    rows = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    np.save(tmp_path / "v.npy", rows)
    (tmp_path / "k.txt").write_bytes(b"".join(b"k%d\n" % i for i in range(50)))
    table = read_npy(tmp_path / "v.npy", tmp_path / "k.txt", ReadOptions())
    assert isinstance(table.vectors, np.memmap) and table.vectors.tobytes() == rows.tobytes()
    # float64, or a duplicate key dropped: a float32 copy of the kept rows.
    np.save(tmp_path / "d.npy", rows.astype(np.float64))
    assert not isinstance(read_npy(tmp_path / "d.npy", tmp_path / "k.txt", ReadOptions()).vectors, np.memmap)
    (tmp_path / "k2.txt").write_bytes(b"".join(b"k%d\n" % min(i, 48) for i in range(50)))
    dup = read_npy(tmp_path / "v.npy", tmp_path / "k2.txt", ReadOptions())
    assert len(dup.vectors) == 49 and dup.vectors.tobytes() == rows[:49].tobytes()

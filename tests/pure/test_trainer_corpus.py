"""Streaming corpus reader and tokenizer: every format, document modes, deterministic tokens."""

from __future__ import annotations

import bz2
import gzip
import lzma
from pathlib import Path

import pytest
from embserve_format.text import Tokenizer, clean_gcide
from embserve_trainer.corpus import corpus_sha256, document_mode, iter_documents, resolve_corpus

TEXT = "The cat sat on the mat.\nA kitten slept.\n\nDogs bark at night.\n"
DOCS = ["The cat sat on the mat.\n", "A kitten slept.\n", "Dogs bark at night.\n"]


def write_all_formats(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = {
        "plain": root / "a.txt",
        "gz": root / "b.txt.gz",
        "bz2": root / "c.txt.bz2",
        "xz": root / "d.txt.xz",
        "dictd": root / "e.dict.dz",
    }
    paths["plain"].write_text(TEXT, encoding="utf-8")
    with gzip.open(paths["gz"], "wt", encoding="utf-8") as f:
        f.write(TEXT)
    with bz2.open(paths["bz2"], "wt", encoding="utf-8") as f:
        f.write(TEXT)
    with lzma.open(paths["xz"], "wt", encoding="utf-8") as f:
        f.write(TEXT)
    with gzip.open(paths["dictd"], "wt", encoding="utf-8") as f:  # dictzip is gzip with an extra header
        f.write(TEXT)
    return paths


@pytest.mark.parametrize("fmt", ["plain", "gz", "bz2", "xz", "dictd"])
def test_every_format_streams_the_same_documents(tmp_path: Path, fmt: str) -> None:
    path = write_all_formats(tmp_path)[fmt]
    files = resolve_corpus([path])
    assert [f.path for f in files] == [path]
    docs = iter_documents(files, "line")
    assert iter(docs) is docs  # a generator: nothing is read into a list up front
    assert [d for d in docs if d.strip()] == DOCS


def test_dictd_files_default_to_paragraph_documents(tmp_path: Path) -> None:
    paths = write_all_formats(tmp_path)
    files = resolve_corpus([paths["dictd"]])
    assert files[0].kind == "dictd"
    assert document_mode(files, "auto") == "paragraph"
    assert list(iter_documents(files, "paragraph")) == ["".join(DOCS[:2]), DOCS[2]]
    assert document_mode(resolve_corpus([paths["plain"]]), "auto") == "line"


def test_directory_is_read_recursively_in_sorted_order_skipping_hidden(tmp_path: Path) -> None:
    write_all_formats(tmp_path / "corpus" / "sub")
    (tmp_path / "corpus" / "0.txt").write_text("first\n", encoding="utf-8")
    (tmp_path / "corpus" / ".hidden.txt").write_text("secret\n", encoding="utf-8")
    files = resolve_corpus([tmp_path / "corpus"])
    assert [f.path.name for f in files] == ["0.txt", "a.txt", "b.txt.gz", "c.txt.bz2", "d.txt.xz", "e.dict.dz"]
    docs = list(iter_documents(files, "line"))
    assert docs[0] == "first\n" and "secret\n" not in docs
    assert [d for d in docs if d.strip()].count(DOCS[0]) == 5


def test_corpus_sha256_covers_raw_bytes(tmp_path: Path) -> None:
    paths = write_all_formats(tmp_path)
    files = resolve_corpus([paths["plain"], paths["gz"]])
    digest, per_file = corpus_sha256(files)
    assert len(digest) == 64 and set(per_file) == {str(paths["plain"]), str(paths["gz"])}
    paths["plain"].write_text(TEXT + "more\n", encoding="utf-8")
    assert corpus_sha256(files)[0] != digest


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("missing.txt", None, "no such corpus file"),
        ("bad.txt.gz", b"this is not gzip data at all", "not valid gz data"),
        ("bad.txt.xz", b"not xz either", "xz"),
        ("archive.zip", b"PK\x03\x04", "unsupported corpus format"),
        ("blob.txt", b"abc\x00\x01\x02", "binary"),
    ],
)
def test_bad_files_are_refused_with_the_file_name(tmp_path: Path, name: str, content: bytes | None, needle: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=needle) as info:
        resolve_corpus([path])
    assert str(path) in str(info.value)


def test_empty_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no corpus files"):
        resolve_corpus([tmp_path / "empty"])


def test_tokenization_is_deterministic_and_normalised() -> None:
    tok = Tokenizer()
    text = "Ｔｈｅ ﬁne CAT's naïve café — don't_stop 42!"
    expected = ["the", "fine", "cat's", "naïve", "café", "don't", "stop", "42"]
    assert [tok(text), tok(text), Tokenizer()(text)] == [expected] * 3  # same answer again, and from a new instance
    assert Tokenizer(lowercase=False)("Cat cat") == ["Cat", "cat"]
    assert Tokenizer(pattern="alpha")("route 66 ok") == ["route", "ok"]
    assert tok.settings()["normalization"] == "NFKC" and tok.settings()["regex"]


def test_gcide_cleaner_removes_markup() -> None:
    entry = (
        'Affect \\Af*fect"\\, v. t. [L. affectus, p. p. of [=a]f?ran {Fact}.]\n'
        "   1. To act upon; to produce an <i>effect</i> upon.\n"
        "      [1913 Webster]\n"
        "            As might affect the earth. --Milton.\n"
        "      [1913 Webster]\n"
    )
    tokens = Tokenizer(cleaner="gcide")(entry)
    assert tokens == ["affect", "v", "t", "1", "to", "act", "upon", "to", "produce", "an", "effect", "upon",
                      "as", "might", "affect", "the", "earth"]
    for junk in ("webster", "1913", "milton", "i", "af", "fact", "l"):
        assert junk not in tokens
    assert "caf\u00e9" not in clean_gcide("caf['e]") and clean_gcide("caf['e]") == "cafe"
    assert clean_gcide("00-database-url\n   ftp://x\n") == ""


def test_long_documents_are_split_not_truncated() -> None:
    tok = Tokenizer(max_document_tokens=10_000)
    text = " ".join(f"w{i}" for i in range(25_001))
    chunks = list(tok.chunks(text))
    assert [len(c) for c in chunks] == [10_000, 10_000, 5_001]
    assert [t for c in chunks for t in c] == [f"w{i}" for i in range(25_001)]
    assert list(tok.chunks("  ...  ")) == []

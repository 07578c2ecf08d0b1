"""Training: planted structure, round trip to a bundle, fastText subwords, the CLI and its refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL, planted_corpus
from embserve_format.bundle import read_bundle
from embserve_format.text import Tokenizer
from embserve_server import subword
from embserve_server.subword import compose
from embserve_server.tables import EXTRA_LOADERS
from embserve_trainer.cli import main
from embserve_trainer.export import export_table
from embserve_trainer.train import TrainConfig, train_table


def neighbours(vectors: np.ndarray, keys: list[str], word: str, k: int = 1) -> list[str]:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    i = keys.index(word)
    order = np.argsort(-(unit @ unit[i]))
    return [keys[j] for j in order if j != i][:k]


def test_planted_structure_gives_mutual_neighbours(tmp_path: Path) -> None:
    trained = train_table([planted_corpus(tmp_path / "c.txt")], TrainConfig(**SMALL))
    v, k = trained.vectors, trained.keys
    assert neighbours(v, k, "cat") == ["kitten"] and neighbours(v, k, "kitten") == ["cat"]
    assert neighbours(v, k, "car") == ["truck"] and neighbours(v, k, "truck") == ["car"]


def test_cbow_also_learns_planted_structure(tmp_path: Path) -> None:
    trained = train_table([planted_corpus(tmp_path / "c.txt")], TrainConfig(model="cbow", **{**SMALL, "epochs": 30}))
    assert neighbours(trained.vectors, trained.keys, "cat", 2)[0] in ("kitten",)


def test_training_is_reproducible_with_one_worker(tmp_path: Path) -> None:
    corpus = planted_corpus(tmp_path / "c.txt")
    a = train_table([corpus], TrainConfig(**SMALL))
    b = train_table([corpus], TrainConfig(**SMALL))
    assert a.keys == b.keys
    np.testing.assert_array_equal(a.vectors, b.vectors)


def test_single_worker_training_equals_plain_gensim_on_the_same_tokens(tmp_path: Path) -> None:
    """Our pipeline adds streaming, tokenisation and progress, not different training: with one worker
    (deterministic) it gives gensim's Word2Vec(LineSentence(...)) bit for bit."""
    from gensim.models import Word2Vec
    from gensim.models.word2vec import LineSentence

    corpus = planted_corpus(tmp_path / "c.txt")
    config = TrainConfig(**SMALL)
    ours = train_table([corpus], config)
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("".join(" ".join(Tokenizer()(line)) + "\n" for line in corpus.read_text().splitlines()))
    plain = Word2Vec(sentences=LineSentence(str(tokens)), vector_size=16, window=3, min_count=2, epochs=10,
                     workers=1, seed=7, sg=1, negative=5, hs=0, sample=1e-3)
    assert ours.keys == list(plain.wv.index_to_key)
    np.testing.assert_array_equal(ours.vectors, plain.wv.vectors)


def test_round_trip_bundle_holds_the_trainers_vectors_exactly(tmp_path: Path) -> None:
    corpus = planted_corpus(tmp_path / "c.txt")
    trained = train_table([corpus], TrainConfig(**SMALL))
    path = export_table(tmp_path / "tables", "planted", trained.vectors, trained.keys, source=trained.source,
                        counts=trained.counts, extras=trained.extras)
    bundle = read_bundle(path)
    np.testing.assert_array_equal(bundle.vectors, trained.model.wv.vectors)
    assert bundle.keys == list(trained.model.wv.index_to_key)
    assert bundle.counts is not None and np.all(np.diff(bundle.counts) <= 0)  # frequency order
    assert bundle.counts[bundle.keys.index("the")] == trained.model.wv.get_vecattr("the", "count")
    src = bundle.manifest["source"]
    assert src["kind"] == "trained" and src["seed"] == 7 and src["workers"] == 1
    assert src["parameters"]["dim"] == 16 and src["parameters"]["window"] == 3
    assert src["input_sha256"] == hashlib.sha256(hashlib.sha256(corpus.read_bytes()).digest()).hexdigest()
    assert src["tokenizer"]["normalization"] == "NFKC" and src["tokenizer"]["lowercase"] is True
    assert "gensim" in src["libraries"] and "numpy" in src["libraries"]
    assert len(src["training"]["epoch_losses"]) == 10
    assert bundle.extras["tokenizer"] == src["tokenizer"]


def test_long_documents_are_split_for_gensim(tmp_path: Path) -> None:
    words = ["alpha", "beta", "gamma", "delta"] * 6_250  # one 25,000-token line
    (tmp_path / "long.txt").write_text(" ".join(words) + "\n", encoding="utf-8")
    trained = train_table([tmp_path / "long.txt"], TrainConfig(**{**SMALL, "epochs": 1}))
    corpus = trained.source["corpus"]
    assert corpus == {"documents": 3, "tokens": 25_000, "split_documents": 1, "vocabulary": 4}
    assert trained.source["training"]["raw_words"] == 25_000  # nothing silently truncated


def test_fasttext_subword_composition_matches_gensim(tmp_path: Path) -> None:
    config = TrainConfig(model="fasttext", bucket=5_000, **SMALL)
    trained = train_table([planted_corpus(tmp_path / "c.txt")], config)
    assert trained.ngrams is not None and trained.ngrams.shape == (5_000, 16)
    sub = trained.extras["subword"]
    assert (sub["minn"], sub["maxn"], sub["bucket"]) == (3, 6, 5_000)
    unseen = ["kittens", "trucking", "purring", "zz", "ab\u00e9c\u00e9"]
    for w in unseen:
        assert w not in trained.keys
    got = compose(unseen, trained.ngrams, sub["minn"], sub["maxn"], sub["bucket"])
    want = np.stack([trained.model.wv[w] for w in unseen])
    assert got.dtype == np.float32 and got.shape == (5, 16)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.linalg.norm(got[0]) > 0
    # the composed vector lands near the words it shares n-grams with
    assert neighbours(np.vstack([trained.vectors, got[:1]]), trained.keys + ["kittens"], "kittens") == ["kitten"]


def test_cli_train_writes_a_complete_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = planted_corpus(tmp_path / "c.txt")
    tables = tmp_path / "tables"
    rc = main(["train", "--corpus", str(corpus), "--tables", str(tables), "--name", "planted", "--model", "fasttext",
               "--dim", "16", "--window", "3", "--min-count", "2", "--epochs", "3", "--workers", "1", "--bucket", "3000"])
    assert rc == 0
    path = Path(capsys.readouterr().out.strip().splitlines()[-1])
    bundle = read_bundle(path)
    assert path == tables / "planted" / "1"
    assert {"eval.json", "ngrams.npy", "index.faiss", "counts.npy"} <= set(bundle.manifest["files"])
    report = json.loads((path / "eval.json").read_text())
    assert set(report["word_pairs"]) == {"wordsim353", "simlex999"} and "analogies" in report
    ngrams = np.load(path / "ngrams.npy")
    assert ngrams.shape == (3000, 16) and bundle.extras["subword"]["bucket"] == 3000
    # the server-side loader reads the bundle's n-grams and composes unseen words from them
    sub = subword.load(bundle)
    assert sub is not None and (sub.minn, sub.maxn, sub.bucket) == (3, 6, 3000)
    np.testing.assert_array_equal(sub.ngrams, ngrams)
    vec = sub.compose(["kittens"])
    assert vec.shape == (1, 16) and np.linalg.norm(vec) > 0
    assert EXTRA_LOADERS[subword.EXTRA] is subword.load  # the tables layer declares it


def test_subword_loader_ignores_plain_tables_and_refuses_broken_ones(tmp_path: Path) -> None:
    vectors = np.eye(4, dtype=np.float32)
    plain = read_bundle(export_table(tmp_path, "plain", vectors, list("abcd"), source={}))
    assert subword.load(plain) is None
    broken = read_bundle(export_table(tmp_path, "broken", vectors, list("abcd"), source={},
                                      extras={"subword": {"minn": 3, "maxn": 6, "bucket": 10}}))
    with pytest.raises(ValueError, match="ngrams.npy is not listed"):
        subword.load(broken)
    wrong = read_bundle(export_table(tmp_path, "wrong", vectors, list("abcd"), source={},
                                     extras={"subword": {"minn": 3, "maxn": 6, "bucket": 10}},
                                     files={"ngrams.npy": lambda p: np.save(p, np.zeros((9, 4), np.float32))}))
    with pytest.raises(ValueError, match=r"expected float32 \(10, 4\)"):
        subword.load(wrong)


def _no_bundle(tables: Path) -> bool:
    return not tables.exists() or not any(p for p in tables.rglob("manifest.json"))


@pytest.mark.parametrize(
    ("make", "extra", "needle"),
    [
        (lambda d: (d / "empty.txt").write_text(""), [], "no tokens found"),
        (lambda d: (d / "empty.txt").write_text("... !!! ,,,\n"), [], "no tokens found"),
        (lambda d: (d / "empty.txt").write_text("one two three two\n"), ["--min-count", "3"], "--min-count=3"),
        (lambda d: (d / "empty.txt").write_bytes(b"\x00\x01binary"), [], "binary"),
        (lambda d: (d / "empty.txt.gz").write_bytes(b"not gzip"), [], "cannot read corpus file"),
        (lambda d: (d / "empty.zip").write_bytes(b"PK\x03\x04"), [], "unsupported corpus format"),
        (lambda d: None, [], "no such corpus file"),
    ],
)
def test_bad_input_fails_clearly_and_writes_no_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, extra: list[str], needle: str
) -> None:
    make(tmp_path)  # type: ignore[operator]
    corpus = next(iter(sorted(tmp_path.glob("empty*"))), tmp_path / "missing.txt")
    tables = tmp_path / "tables"
    rc = main(["train", "--corpus", str(corpus), "--tables", str(tables), "--name", "bad", *extra])
    err = capsys.readouterr().err
    assert rc != 0
    assert needle in err and str(corpus) in err
    assert _no_bundle(tables)


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="--dim must be a positive integer, got 0"):
        TrainConfig(dim=0)
    with pytest.raises(ValueError, match="unknown model 'glove'"):
        TrainConfig(model="glove")

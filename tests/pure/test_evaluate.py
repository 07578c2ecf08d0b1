"""Evaluation agrees with gensim's evaluate_word_pairs / evaluate_word_analogies on the same vectors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from embserve_format.bundle import read_bundle
from embserve_index import prepare_rows
from embserve_trainer.cli import main
from embserve_trainer.evaluate import (
    ANALOGY_EF_SEARCH,
    ANALOGY_SET,
    PAIR_SETS,
    bundle_index_search,
    evaluate_bundle,
    evaluate_table,
    exact_search,
    gensim_test_data,
)
from embserve_trainer.export import export_table
from gensim.models import KeyedVectors

PER_SECTION = 60  # questions kept per section: gensim's one-by-one loop stays well under a second


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real word-pair sets, and a subset of the analogy questions."""
    src, dst = gensim_test_data(), tmp_path_factory.mktemp("evaldata")
    for fname in PAIR_SETS.values():
        shutil.copy(src / fname, dst / fname)
    out, n = [], 0
    for line in (src / ANALOGY_SET).read_text(encoding="utf8").splitlines(keepends=True):
        n = 0 if line.startswith(": ") else n + 1
        if n <= PER_SECTION:
            out.append(line)
    (dst / ANALOGY_SET).write_text("".join(out), encoding="utf8")
    return dst


def structured_table(data_dir: Path, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Vectors where b - a ~ a per-section offset (so analogies are partly right), plus traps:
    case variants ("Paris" after "paris"), missing words, and rare words beyond restrict_vocab."""
    rng = np.random.default_rng(seed)
    dim = 24
    vec: dict[str, np.ndarray] = {}
    offset = None
    for line in (data_dir / ANALOGY_SET).read_text(encoding="utf8").splitlines():
        if line.startswith(": "):
            offset = rng.normal(size=dim)
            continue
        a, b, c, d = line.lower().split()
        for x, y in ((a, b), (c, d)):
            vec.setdefault(x, rng.normal(size=dim))
            vec.setdefault(y, vec[x] + offset + 0.8 * rng.normal(size=dim))
    for fname in PAIR_SETS.values():
        for line in (data_dir / fname).read_text(encoding="utf8").splitlines():
            if line and not line.startswith("#"):
                a, b, _ = line.lower().split("\t")
                vec.setdefault(a, rng.normal(size=dim))
                vec.setdefault(b, vec[a] + 1.5 * rng.normal(size=dim))
    keys = sorted(vec)
    rng.shuffle(keys)
    drop = set(keys[::17])  # ~6% out of vocabulary
    keys = [k for k in keys if k not in drop]
    vectors = [vec[k] for k in keys]
    for k in keys[:600]:  # case variants after their lower-case form (the first one counts), close to it
        keys.append(k.capitalize())
        vectors.append(vec[k] + 0.2 * rng.normal(size=dim))
    return np.asarray(vectors, dtype=np.float32), keys


def gensim_kv(vectors: np.ndarray, keys: list[str]) -> KeyedVectors:
    kv = KeyedVectors(vectors.shape[1], dtype=np.float32)
    kv.add_vectors(keys, vectors)
    return kv


@pytest.mark.parametrize("restrict_vocab", [300_000, 2_500])
def test_matches_gensim_on_the_same_vectors(data_dir: Path, restrict_vocab: int) -> None:
    vectors, keys = structured_table(data_dir)
    ours = evaluate_table(vectors, keys, restrict_vocab=restrict_vocab, data_dir=data_dir)
    kv = gensim_kv(vectors, keys)
    for name, fname in PAIR_SETS.items():
        pearson, spearman, oov = kv.evaluate_word_pairs(str(data_dir / fname), restrict_vocab=restrict_vocab)
        r = ours["word_pairs"][name]
        assert r["spearman"] == pytest.approx(spearman.statistic, abs=1e-6)
        assert r["pearson"] == pytest.approx(pearson.statistic, abs=1e-6)
        assert r["oov_ratio"] == pytest.approx(oov)
        assert 0 < r["covered"] < r["pairs"]
    score, sections = kv.evaluate_word_analogies(str(data_dir / ANALOGY_SET), restrict_vocab=restrict_vocab)
    ours_sections = ours["analogies"]["sections"]
    assert [s["section"] for s in ours_sections] == [s["section"] for s in sections[:-1]]
    for o, g in zip(ours_sections, sections[:-1]):
        assert (o["correct"], o["answered"]) == (len(g["correct"]), len(g["correct"]) + len(g["incorrect"]))
    assert ours["analogies"]["total"]["accuracy"] == pytest.approx(score)
    assert 0.05 < score < 0.95  # the test data really exercises both outcomes


def test_evaluate_cli_reads_bundle_or_table_and_never_writes_into_it(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vectors, keys = structured_table(data_dir)
    tables = tmp_path / "tables"
    export_table(tables, "syn", vectors[:100], keys[:100], source={"kind": "test"})
    path = export_table(tables, "syn", vectors, keys, source={"kind": "test"})  # version 2: the newest
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    out = tmp_path / "reports" / "eval.json"
    assert main(["evaluate", str(tables / "syn"), "--out", str(out), "--restrict-vocab", "2500"]) == 0
    printed = capsys.readouterr().out
    assert "wordsim353" in printed and "TOTAL" in printed and "syn v2" in printed
    report = json.loads(out.read_text())
    assert report["table"]["version"] == 2 and report["restrict_vocab"] == 2500
    assert report["analogies"]["total"]["questions"] == 19_544
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before  # bundle untouched
    read_bundle(path)  # checksums still hold
    assert main(["evaluate", str(path), "--no-analogies"]) == 0
    assert "analogies" not in capsys.readouterr().out


def test_evaluate_refuses_a_path_that_is_no_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tmp_path)]) != 0
    assert str(tmp_path) in capsys.readouterr().err


def test_analogies_through_the_bundle_hnsw_index_match_exact_and_gensim(tmp_path: Path, data_dir: Path) -> None:
    """The default for a bundle with an HNSW index: its index, cut to restrict_vocab by an id selector."""
    vectors, keys = structured_table(data_dir)
    restrict_vocab = len(keys) - 400  # some rows (and case variants) fall outside: the selector must hold
    path = export_table(tmp_path / "tables", "syn", vectors, keys, source={"kind": "test"}, factory="HNSW32,Flat")
    bundle = read_bundle(path)
    search = bundle_index_search(bundle, restrict_vocab)
    assert search is not None and search.name == f"hnsw efSearch={ANALOGY_EF_SEARCH}"
    rng = np.random.default_rng(1)
    queries = rng.normal(size=(200, vectors.shape[1])).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    found = search.run(queries, 10)
    assert found.max() < restrict_vocab  # never a row beyond the cut
    rows = prepare_rows(np.asarray(vectors[:restrict_vocab]), "cosine")
    exact = exact_search(rows).run(queries, 10)
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)])
    assert recall >= 0.97

    _, indexed = evaluate_bundle(path, restrict_vocab=restrict_vocab, data_dir=data_dir)
    _, brute = evaluate_bundle(path, restrict_vocab=restrict_vocab, data_dir=data_dir, exact=True)
    assert indexed["analogies"]["search"].startswith("hnsw") and brute["analogies"]["search"] == "exact"
    score, sections = gensim_kv(vectors, keys).evaluate_word_analogies(
        str(data_dir / ANALOGY_SET), restrict_vocab=restrict_vocab)
    assert brute["analogies"]["total"]["correct"] == len(sections[-1]["correct"])
    total = indexed["analogies"]["total"]
    assert total["answered"] == brute["analogies"]["total"]["answered"]
    assert abs(total["accuracy"] - score) <= 0.005  # the tolerance


def test_tables_without_an_hnsw_cosine_index_are_evaluated_exactly(tmp_path: Path, data_dir: Path) -> None:
    vectors, keys = structured_table(data_dir)
    flat = read_bundle(export_table(tmp_path / "t", "flat", vectors, keys, source={"kind": "test"}, factory="Flat"))
    dot = read_bundle(export_table(tmp_path / "t", "dot", vectors, keys, source={"kind": "test"},
                                   metric="dot", factory="HNSW32,Flat"))
    assert bundle_index_search(flat, len(keys)) is None
    assert bundle_index_search(dot, len(keys)) is None  # ranks by raw dot product, not cosine

"""--index-storage flat|fp16|sq8: recall against exact search with the re-rank, bit-exact lookups."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import running_server, seeded_table
from embserve_client import Client
from embserve_format.bundle import INDEX, read_bundle, read_manifest
from embserve_index import (
    FLAT_MAX_ROWS,
    IVFPQ_TARGET_RECALL,
    RERANK_FACTOR,
    STORAGES,
    TARGET_RECALL,
    RawRows,
    build,
    build_index,
    ivfpq_factory,
    prepare_rows,
    recall_at_k,
    tune_ef_search,
)
from embserve_server.tables import load_table
from embserve_trainer import export
from embserve_trainer.cli import main as train_main
from embserve_trainer.export import export_table

N, DIM = 6000, 24
HNSW_STORAGES = ("flat", "fp16", "sq8")  # codes under an HNSW graph; ivfpq has its own test


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tables = tmp_path_factory.mktemp("storage")
    vectors, keys = seeded_table(N, DIM, seed=7)
    return {
        storage: export_table(tables, f"t{storage}", vectors, keys, source={"kind": "test"}, factory=f"HNSW16,{STORAGES[storage]}", seed=1)
        for storage in HNSW_STORAGES
    }


@pytest.mark.parametrize("storage", HNSW_STORAGES)
def test_storage_meets_recall_against_exact_search_with_exact_scores(bundles: dict[str, Path], storage: str) -> None:
    path = bundles[storage]
    info = read_manifest(path)["index"]
    assert info["rerank"] == (1 if storage == "flat" else RERANK_FACTOR)
    assert info["recall_at_10"] >= TARGET_RECALL
    table = load_table(path)
    assert table.index.index_dim == (0 if storage == "flat" else 32)  # SQ codes padded to SIMD width
    b = read_bundle(path)
    unit = prepare_rows(b.vectors, "cosine")
    rng = np.random.default_rng(3)
    rows = rng.choice(N, size=200, replace=False)
    D, I = table.index.search(unit[rows], 10, drop=rows[:, None])
    truth = np.argsort(-(unit[rows] @ unit.T), axis=1)
    exact = np.array([[j for j in t if j != r][:10] for t, r in zip(truth[:, :12], rows)])
    assert recall_at_k(I, exact) >= 0.95
    # Scores are exact cosines against the raw rows, whatever the storage.
    want = np.einsum("qd,qkd->qk", unit[rows], unit[I])
    assert np.allclose(D, want, atol=1e-5)
    # Exact search through the same table agrees with brute force.
    _, Ie = table.index.search(unit[rows], 10, drop=rows[:, None], exact=True)
    assert recall_at_k(Ie, exact) == 1.0


def test_quantized_storage_shrinks_the_index_and_lookups_stay_bit_exact(bundles: dict[str, Path]) -> None:
    size = {s: (p / INDEX).stat().st_size for s, p in bundles.items()}
    assert size["sq8"] < size["fp16"] < size["flat"]
    raw = read_bundle(bundles["sq8"]).vectors
    tables = bundles["sq8"].parent.parent
    with running_server(tables) as server, Client(f"127.0.0.1:{server.port}") as c:
        keys = [f"w{i}" for i in range(0, N, 7)]
        got = c.lookup(keys, table="tsq8")
        assert got.vectors.tobytes() == np.ascontiguousarray(raw[::7]).tobytes()
        near = c.most_similar("w3", topn=5, table="tsq8")
        assert len(near) == 5 and "w3" not in [n.key for n in near]


def test_trainer_cli_records_storage_in_the_manifest(tmp_path: Path) -> None:
    vectors, keys = seeded_table(FLAT_MAX_ROWS + 500, 8, seed=2)
    src = tmp_path / "in.txt"
    src.write_text("".join(f"{k} {' '.join(f'{x:.5f}' for x in v)}\n" for k, v in zip(keys, vectors)))
    assert train_main(["import", str(src), "--format", "glove", "--tables", str(tmp_path / "t"), "--name", "s", "--index-storage", "sq8"]) == 0
    info = read_manifest(tmp_path / "t" / "s" / "1")["index"]
    assert info["factory"] == "HNSW16,SQ8" and info["storage"] == "sq8" and info["rerank"] == RERANK_FACTOR
    assert info["recall_at_10"] >= TARGET_RECALL


def clustered(n: int, dim: int, centres: int, seed: int) -> np.ndarray:
    """Rows around many centres with per-cluster spread: approximate search behaves as on real embeddings."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim)).astype(np.float32)
    spread = rng.uniform(0.2, 0.5, size=(n, 1)).astype(np.float32)
    return (c[rng.integers(0, centres, n)] + spread * rng.normal(size=(n, dim)).astype(np.float32)).astype(np.float32)


def test_ivfpq_tunes_nprobe_re_ranks_exactly_and_serves(tmp_path: Path) -> None:
    n, dim = 12_000, 16
    vectors, keys = clustered(n, dim, 200, seed=5), [f"w{i}" for i in range(n)]
    factory = ivfpq_factory(n, dim)
    assert factory == "OPQ4,IVF512,PQ4"
    path = export_table(tmp_path, "pq", vectors, keys, source={"kind": "test"}, factory=factory, storage="ivfpq")
    info = read_manifest(path)["index"]
    assert info["nprobe"] >= 1 and info["rerank"] == build.PQ_RERANK_FACTOR and info["recall_at_10"] >= IVFPQ_TARGET_RECALL
    assert "ef_search" not in info
    assert (path / INDEX).stat().st_size < 0.5 * vectors.nbytes
    table = load_table(path)
    unit = prepare_rows(vectors, "cosine")
    rows = np.arange(0, n, 61)
    D, I = table.index.search(unit[rows], 10, drop=rows[:, None])
    assert np.allclose(D, np.einsum("qd,qkd->qk", unit[rows], unit[I]), atol=1e-5)  # exact scores
    _, truth = table.index.search(unit[rows], 10, drop=rows[:, None], exact=True)
    assert recall_at_k(I, truth) >= 0.9
    with running_server(tmp_path) as server, Client(f"127.0.0.1:{server.port}") as c:
        assert c.lookup(keys[::97], table="pq").vectors.tobytes() == np.ascontiguousarray(vectors[::97]).tobytes()
        assert [nb.key for nb in c.most_similar("w7", topn=10, table="pq")] == [keys[j] for j in table.index.search(unit[7:8], 10, drop=np.array([[7]]))[1][0]]


def test_pq_tuner_raises_the_rerank_when_nprobe_alone_cannot_reach_the_target() -> None:
    """Coarse PQ codes cap recall whatever nprobe is; the tuner then doubles the exact re-rank."""

    rng = np.random.default_rng(5)
    centres = rng.normal(size=(50, 32)).astype(np.float32)
    rows = prepare_rows(centres[rng.integers(0, 50, 6000)] + 0.3 * rng.normal(size=(6000, 32)).astype(np.float32), "cosine")
    index = build_index(rows, "IVF32,PQ4")  # 8 dims per 1-byte code: rough scores
    fixed = tune_ef_search(index, rows, rerank=1, target=0.95)
    assert fixed["rerank"] == 1 and fixed["recall_at_10"] < 0.95  # the largest nprobe is not enough
    tuned = tune_ef_search(index, rows, rerank=1, target=0.95, max_rerank=64)
    assert tuned["rerank"] > 1 and tuned["recall_at_10"] >= 0.95


def test_batch_re_rank_gathers_candidates_in_bounded_chunks(bundles: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch re-rank gathers candidate rows a few queries at a time (bounded memory), same answer."""
    import embserve_index.search as search

    table = load_table(bundles["sq8"])
    queries = prepare_rows(read_bundle(bundles["sq8"]).vectors[:64], "cosine")
    D, I = table.index.search(queries, 10)

    class Recording:  # the raw rows, noting how many rows each gather takes
        def __init__(self, raw: np.ndarray) -> None:
            self.raw, self.shape, self.gathers = raw, raw.shape, []

        def __getitem__(self, ids: np.ndarray) -> np.ndarray:
            self.gathers.append(np.size(ids))
            return self.raw[ids]

    rec = Recording(table.index.rows.raw)
    monkeypatch.setattr(table.index.rows, "raw", rec)
    fetch = 10 * RERANK_FACTOR
    monkeypatch.setattr(search, "RERANK_CHUNK_BYTES", 3 * fetch * DIM * 4)  # 3 queries' candidates a gather
    Dc, Ic = table.index.search(queries, 10)
    assert max(rec.gathers) == 3 * fetch and sum(rec.gathers) == len(queries) * fetch
    assert (Ic == I).all() and np.array_equal(Dc, D)


# recall@10 measured on the clustered 2M x 300 table, OPQ100,IVF4096,PQ100 (re-rank factor -> nprobe -> recall)
MEASURED = {
    20: {16: 0.8987, 32: 0.9193, 64: 0.9273, 128: 0.9280, 256: 0.9280},
    40: {16: 0.9290, 32: 0.9517, 64: 0.9613, 128: 0.9623, 256: 0.9623},
    80: {16: 0.9430, 32: 0.9667, 64: 0.9777, 128: 0.9790, 256: 0.9790},
    160: {16: 0.9500, 32: 0.9743, 64: 0.9867, 128: 0.9880, 256: 0.9880},
}


def test_ivf_tuner_picks_the_setting_with_the_least_work_not_the_first_re_rank_that_reaches() -> None:
    from embserve_index.build import cheapest_setting

    asked: list[tuple[int, int]] = []

    def recall(nprobe: int, factor: int) -> float:
        asked.append((nprobe, factor))
        return MEASURED[factor][nprobe]

    def work(nprobe: int, factor: int) -> int:  # ivf_work for 2M rows in 4096 lists of 100-byte codes, 300-d rows
        return nprobe * 488 * 100 + factor * 11 * 1200

    # 40x reaches 0.96 first, at nprobe 64 (1.7 ms a query); 80x reaches it at nprobe 32 with less work (1.3 ms).
    assert cheapest_setting(recall, [16, 32, 64, 128, 256], [20, 40, 80, 160], work, 0.96) == (32, 80)
    assert (256, 20) not in asked  # 20x stopped where more lists stopped adding recall
    assert (64, 160) not in asked  # a larger re-rank never needs more lists than a smaller one did
    assert cheapest_setting(recall, [16, 32, 64, 128, 256], [20, 40, 80, 160], work, 0.995) is None


def test_server_runs_numpy_blas_on_one_thread_and_leaves_faiss_threads() -> None:
    """embserve-server's start-up: numpy's pthread BLAS (threads that spin after each re-rank) on one thread."""
    import subprocess
    import sys

    code = (
        "import json, faiss, numpy\n"
        "from threadpoolctl import threadpool_info\n"
        "from embserve_server.cli import limit_blas_threads\n"
        "before = {d['filepath']: d['num_threads'] for d in threadpool_info()}\n"
        "limit_blas_threads()\n"
        "after = {d['filepath']: (d['num_threads'], d.get('threading_layer')) for d in threadpool_info()}\n"
        "print(json.dumps([before, after]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"}).stdout
    before, after = json.loads(out)
    pthreads = [f for f, (_, layer) in after.items() if layer == "pthreads"]
    assert pthreads, "numpy's BLAS was not found"
    assert all(after[f][0] == 1 for f in pthreads)
    assert any(before[f] > 1 for f in pthreads) or (os.cpu_count() or 1) == 1  # it did limit something
    assert all(after[f][0] == before[f] for f in after if f not in pthreads)  # FAISS's OpenMP BLAS untouched


@pytest.mark.parametrize("storage", ["sq8", "ivfpq"])
def test_quantized_storage_builds_without_a_float32_copy_of_the_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, storage: str) -> None:
    """An index that keeps codes only is built and tuned from the raw rows, unit rows a chunk at a time."""
    n, dim = 12_000, 16
    vectors, keys = clustered(n, dim, 200, seed=9), [f"w{i}" for i in range(n)]
    copies: list[int] = []
    real = prepare_rows
    monkeypatch.setattr(export, "prepare_rows", lambda v, metric: copies.append(len(v)) or real(v, metric))
    factory = "HNSW16,SQ8" if storage == "sq8" else ivfpq_factory(n, dim)
    path = export_table(tmp_path, storage, vectors, keys, source={"kind": "test"}, factory=factory, storage=storage)
    assert copies == []  # never a prepared (n, d) copy
    info = read_manifest(path)["index"]
    assert info["recall_at_10"] >= (IVFPQ_TARGET_RECALL if storage == "ivfpq" else TARGET_RECALL)
    export_table(tmp_path, "flat", vectors, keys, source={"kind": "test"}, factory="HNSW16,Flat")
    assert copies == [n]  # float32 storage is built from the prepared rows it keeps


def test_exact_search_over_raw_rows_in_small_steps_agrees_with_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    """RawRows.knn bounds its temporaries by stepping fewer rows for many queries: same answer."""
    import embserve_index.rawrows as rawrows

    vectors = clustered(5000, 16, 40, seed=11)
    vectors[7] = 0.0  # a zero row: cosine 0
    rows = RawRows(vectors, normalized=True)
    unit = prepare_rows(vectors, "cosine")
    queries = unit[::50]
    want = np.argsort(-(queries @ unit.T), axis=1, kind="stable")[:, :10]
    steps: list[int] = []
    raw = rows.raw

    class Recording:  # the raw rows, noting the rows each step reads
        shape = raw.shape

        def __getitem__(self, item: slice) -> np.ndarray:
            steps.append(len(raw[item]))
            return raw[item]

    monkeypatch.setattr(rows, "raw", Recording())
    monkeypatch.setattr(rawrows, "SCORES_PER_STEP", 100 * 1024)  # 100 queries: 1,024 rows a step
    D, I = rows.knn(queries, 10, len(vectors))
    assert max(steps) == 1024 and sum(steps) == len(vectors)
    assert recall_at_k(I, want) == 1.0
    assert np.allclose(D, np.take_along_axis(queries @ unit.T, I, axis=1), atol=1e-5)


def test_gensim_norms_of_a_quantized_table_are_the_re_rank_norms_bit_for_bit(bundles: dict[str, Path]) -> None:
    """One copy of the row norms per table: the gensim RPCs use the ones the re-rank keeps."""
    quantized, flat = load_table(bundles["sq8"]), load_table(bundles["flat"])
    assert quantized.norms is quantized.index.rows.norms
    for table in (quantized, flat):  # gensim's fill_norms: np.linalg.norm over the whole array
        assert np.array_equal(table.norms, np.linalg.norm(np.asarray(table.vectors), axis=1))

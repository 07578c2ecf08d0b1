"""Building FAISS indexes over table rows, offline: prepare, build, tune efSearch, save, load.

The trainer builds and tunes (an HNSW build takes ~70 s for 400k rows: never at serve time);
the server only loads (memory-mapped) and searches (:mod:`embserve_index.search`).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np
from embserve_format.arrays import unit

from embserve_index.rawrows import RawRows
from embserve_index.search import VectorIndex, compact, describe_storage

logger = logging.getLogger(__name__)

# Tables up to this many rows get an exact Flat index: brute force is fast enough and perfect.
FLAT_MAX_ROWS = 50_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
# A sparser graph (fewer links than HNSW_M) is built with a wider beam: GloVe 400k, HNSW16,SQ8,
# recall@10 >= 0.975 needs efSearch 96 (81 us a search) built with 80, efSearch 40-64 (50 us at 40)
# built with 200; the build takes 46 s instead of 18 s, once, offline.
SPARSE_EF_CONSTRUCTION = 200
EF_SEARCH_CANDIDATES = (16, 24, 32, 40, 48, 64, 80, 96, 128, 192, 256, 384, 512)
TARGET_RECALL = 0.975  # a margin over the 0.97 promised (measured on key queries, key left out)
RECALL_SAMPLE = 2000  # rows drawn for tuning; half tunes efSearch, the other half is held out
ADD_CHUNK = 20_000
# --index-storage: how the HNSW graph stores the rows. Quantized storage scores candidates
# approximately, so searches fetch RERANK_FACTOR x k of them and re-score those against the raw rows.
STORAGES = {"flat": "Flat", "fp16": "SQfp16", "sq8": "SQ8", "ivfpq": "OPQ,IVF,PQ"}
# Links per node by storage: with 1-byte codes the graph (2M x 4 bytes a row at level 0) is most of
# the index, so sq8 uses M=16 (GloVe 400k: 0.41x the flat file; HNSW32,SQ8 is 0.68x) and the
# efSearch tuner buys the recall back.
STORAGE_HNSW_M = {"flat": HNSW_M, "fp16": HNSW_M, "sq8": 16}
RERANK_FACTOR = 2
SQ_DIM_MULTIPLE = 16  # see code_dim
# IVF-PQ (storage "ivfpq", meant for tables of ~1M rows and more): OPQ rotation, IVF lists, PQ codes
# of about d/4 bytes a row, trained on a sample; candidates re-ranked against the raw rows.
PQ_RERANK_FACTOR = 10  # PQ scores are rougher than SQ8's: re-score many more candidates (cheap: k x 10 rows)
MAX_PQ_RERANK = 160  # the tuner doubles the re-rank up to this when nprobe alone cannot reach the target
OPQ_ITERATIONS = 10  # faiss' default 50 takes many minutes on millions of 300-d rows for little recall
PQ_TRAIN_SAMPLE = 100_000
NPROBE_CANDIDATES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
PLATEAU = 0.002  # recall gained by the next nprobe below this: more lists will not reach the target
IVFPQ_TARGET_RECALL = 0.96  # a margin over the 0.95 promised: fresh queries scatter around the tuned figure

ProgressFactory = Callable[[int, str], Any]  # (total, description) -> object with update(n)/close()


def prepare_rows(vectors: np.ndarray, metric: str) -> np.ndarray:
    """Rows as the index sees them: a float32 (n, d) copy, unit-normalised for cosine tables."""
    if metric != "cosine":
        return np.array(vectors, dtype=np.float32, order="C", copy=True)
    rows = np.empty(vectors.shape, dtype=np.float32)
    for start in range(0, len(rows), ADD_CHUNK):  # chunked: no full-size temporaries for big tables
        rows[start : start + ADD_CHUNK] = unit(np.asarray(vectors[start : start + ADD_CHUNK], dtype=np.float32))
    return rows



def choose_factory(count: int, storage: str = "flat", dim: int = 0) -> str:
    """Factory string for a table of ``count`` rows: exact Flat when small, else HNSW over ``storage``.

    Raises:
        ValueError: an unknown storage name.
    """
    if storage not in STORAGES:
        raise ValueError(f"index storage {storage!r} is not one of {', '.join(STORAGES)}")
    if count <= FLAT_MAX_ROWS:
        return "Flat"
    return f"HNSW{STORAGE_HNSW_M[storage]},{STORAGES[storage]}" if storage != "ivfpq" else ivfpq_factory(count, dim)


def ivfpq_factory(count: int, dim: int) -> str:
    """``OPQm,IVFn,PQm``: m the largest divisor of ``dim`` up to dim/3 (code bytes a row), n ~4 sqrt(count).

    m bytes a row plus the 8-byte id IVF keeps is at most 0.1x of the 4 x dim bytes of a float32 row
    for 300 dims (PQ100: 0.09x). Three dimensions a code byte, not four: on the clustered 2M x 300
    table PQ75 caps recall@10 at ~0.96 even with 160 x topn candidates re-ranked.
    """
    m = max(d for d in range(1, max(1, dim // 3) + 1) if dim % d == 0)
    nlist = 1 << max(4, int(round(np.log2(4 * np.sqrt(count)))))
    return f"OPQ{m},IVF{nlist},PQ{m}"


def rerank_factor(factory: str) -> int:
    """Candidates per result re-scored exactly: more for PQ codes, some for SQ codes, none for float32."""
    last = factory.split(",")[-1]
    if last.startswith("PQ"):
        return PQ_RERANK_FACTOR
    return RERANK_FACTOR if last in ("SQ8", "SQfp16", "SQ4", "SQ6") else 1



def build_index(
    rows: np.ndarray | RawRows, factory: str, *, progress: ProgressFactory | None = None
) -> faiss.Index:
    """Build an inner-product index over ``rows``: prepared (:func:`prepare_rows`), or
    :class:`RawRows` (unit rows computed a chunk at a time, for storage that keeps no float32 copy)."""
    n, d = rows.shape
    width = code_dim(d, factory)
    index = faiss.index_factory(width, factory, faiss.METRIC_INNER_PRODUCT)
    if isinstance(index, faiss.IndexHNSW):
        sparse = index.hnsw.nb_neighbors(1) < HNSW_M  # type: ignore[attr-defined]  # links per node above level 0 = M; not in the stubs
        index.hnsw.efConstruction = SPARSE_EF_CONSTRUCTION if sparse else HNSW_EF_CONSTRUCTION
    if isinstance(index, faiss.IndexPreTransform):
        for i in range(index.chain.size()):  # type: ignore[attr-defined]  # a SWIG vector
            opq = faiss.downcast_VectorTransform(index.chain.at(i))  # type: ignore[attr-defined]
            if isinstance(opq, faiss.OPQMatrix):
                opq.niter = OPQ_ITERATIONS
    if not index.is_trained:
        # A seeded sample: OPQ and k-means over millions of rows would take far longer for little gain,
        # but k-means wants 39 points per list (faiss warns below that).
        size = max(PQ_TRAIN_SAMPLE, 39 * faiss.extract_index_ivf(index).nlist) if _is_ivf(index) else PQ_TRAIN_SAMPLE
        sample = rows[:n] if n <= size else rows[np.sort(np.random.default_rng(0).choice(n, size, replace=False))]
        logger.info("training %s on %d of %d rows", factory, len(sample), n)
        t0 = time.perf_counter()
        index.train(_widen(sample, width))
        logger.info("trained %s in %.1fs", factory, time.perf_counter() - t0)
    bar = progress(n, f"index {factory}") if progress else None
    for start in range(0, n, ADD_CHUNK):
        chunk = rows[start : start + ADD_CHUNK]
        index.add(_widen(chunk, width))
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return index



def code_dim(d: int, factory: str) -> int:
    """Dimensions the index is built with: scalar-quantizer codes padded to a multiple of 16.

    faiss decodes SQ8/fp16 codes with SIMD only when the dimension is a multiple of 16: GloVe's 50
    dimensions take the scalar path at ~4x the cost (77 vs 18 us a search); zero columns change no
    inner product. VectorIndex pads the queries to match.
    """
    last = factory.split(",")[-1]
    return -(-d // SQ_DIM_MULTIPLE) * SQ_DIM_MULTIPLE if last.startswith("SQ") else d


def _widen(rows: np.ndarray, width: int) -> np.ndarray:
    if rows.shape[1] == width:
        return np.ascontiguousarray(rows, dtype=np.float32)
    out = np.zeros((len(rows), width), dtype=np.float32)
    out[:, : rows.shape[1]] = rows
    return out


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each exact top-k row found in the approximate row."""
    k = exact.shape[1]
    hits = (approx[:, :, None] == exact[:, None, :]) & (exact[:, None, :] >= 0)
    return float(hits.any(axis=1).sum() / max(1, (exact >= 0).sum()) if k else 1.0)



def tune_ef_search(
    index: faiss.Index, rows: np.ndarray | RawRows, *, target: float = TARGET_RECALL, k: int = 10, seed: int = 0, rerank: int = 1,
    max_rerank: int | None = None,
) -> dict[str, Any]:
    """Smallest efSearch (HNSW) or cheapest nprobe and re-rank (IVF) reaching ``target`` recall@k on a
    tuning sample, verified on a held-out one.

    Queries are rows of the table asked the way users ask ("neighbours of this key"): the row
    itself is dropped from both the exact and the approximate answer before comparing.

    Returns the manifest's search defaults: ``ef_search`` or ``nprobe``, ``recall_at_10`` (held-out sample),
    ``recall_sample`` (size), ``target_recall`` and ``rerank``.

    ``max_rerank`` (IVF): re-rank factors from ``rerank`` doubling up to this are tried too, and the
    setting with the least work per query wins (:func:`ivf_work`): with PQ codes recall is capped
    by how many candidates are re-scored, not by nprobe (2M x 300 clustered, PQ100: re-rank 40x
    reaches 0.96 only at nprobe 64, 1.7 ms a query; 80x at nprobe 32, 1.3 ms).
    """
    rng = np.random.default_rng(seed)
    n = rows.shape[0]
    pick = rng.choice(n, size=min(RECALL_SAMPLE, n), replace=False)
    tune, held = pick[: len(pick) // 2], pick[len(pick) // 2 :]
    searchers: dict[int, VectorIndex] = {}
    truths: dict[int, np.ndarray] = {}

    def without_self(result: tuple[np.ndarray, np.ndarray], ids: np.ndarray) -> np.ndarray:
        D, I = result
        return compact(D, I, I == ids[:, None], k)[1]

    ivf = faiss.extract_index_ivf(index) if _is_ivf(index) else None

    def recall(ids: np.ndarray, effort: int, factor: int = rerank) -> float:
        """recall@k of ``ids`` searched the way the server searches: with the re-rank of quantized storage."""
        queries = np.ascontiguousarray(rows[ids])
        if id(ids) not in truths:
            exact = rows.knn(queries, k + 1, n) if isinstance(rows, RawRows) else faiss.knn(queries, rows, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
            truths[id(ids)] = without_self(exact, ids)
        if factor not in searchers:
            searchers[factor] = VectorIndex.from_index(index, rows=rows, rerank=factor)
        searcher = searchers[factor]
        got = searcher._search(queries, k + 1, nprobe=effort) if ivf is not None else searcher._search(queries, k + 1, ef_search=effort)
        return recall_at_k(without_self(got, ids), truths[id(ids)])

    if ivf is None:
        candidates = [c for c in EF_SEARCH_CANDIDATES if c >= k]
        chosen = next((c for c in candidates if recall(tune, c) >= target), candidates[-1])
        chosen, held_recall = _confirm(recall, held, chosen, rerank, candidates, target)
        logger.info("ef_search=%d, re-rank %dx gives recall@%d=%.4f on %d held-out queries", chosen, rerank, k, held_recall, len(held))
        return {"ef_search": chosen, "recall_at_10": round(held_recall, 4), "recall_sample": len(held), "target_recall": target, "rerank": rerank}

    candidates = [c for c in NPROBE_CANDIDATES if c <= ivf.nlist]
    factors = [rerank]
    while max_rerank is not None and factors[-1] * 2 <= max_rerank:
        factors.append(factors[-1] * 2)
    lists = ivf

    def work(nprobe: int, factor: int) -> int:
        return ivf_work(lists, nprobe, factor, k + 1, rows.shape[1])

    best = cheapest_setting(functools.partial(recall, tune), candidates, factors, work, target)
    chosen, factor = best or (candidates[-1], factors[-1])
    chosen, held_recall = _confirm(recall, held, chosen, factor, candidates, target)
    logger.info("nprobe=%d, re-rank %dx gives recall@%d=%.4f on %d held-out queries", chosen, factor, k, held_recall, len(held))
    return {"nprobe": chosen, "recall_at_10": round(held_recall, 4), "recall_sample": len(held), "target_recall": target, "rerank": factor}


def cheapest_setting(
    recall: Callable[[int, int], float], candidates: list[int], factors: list[int], work: Callable[[int, int], int], target: float
) -> tuple[int, int] | None:
    """(nprobe, re-rank) reaching ``target`` with the least ``work``; None when none reaches it.

    Re-rank factors are tried in increasing order, each with the smallest nprobe that reaches the
    target (a larger re-rank never needs more lists); once the work grows, larger factors only add.
    """
    best: tuple[int, int, int] | None = None  # (work, nprobe, re-rank)
    limit = len(candidates)
    for factor in factors:
        reached = _smallest_reaching(recall, factor, candidates[:limit], target)
        if reached is None:
            continue
        cost = work(reached, factor)
        logger.info("nprobe=%d with re-rank %dx reaches recall@10 %.3f on the tuning sample (%d bytes a query)", reached, factor, target, cost)
        if best is not None and cost >= best[0]:
            break
        best = (cost, reached, factor)
        limit = candidates.index(reached) + 1
    return None if best is None else (best[1], best[2])


def _smallest_reaching(recall: Callable[[int, int], float], factor: int, candidates: list[int], target: float) -> int | None:
    """The first candidate whose recall (with re-rank ``factor``) reaches ``target``; None when none
    does or recall stops rising."""
    last = -1.0
    for c in candidates:
        got = recall(c, factor)
        if got >= target:
            return c
        if got - last < PLATEAU:
            return None  # more lists find nothing more: the codes, not the lists, cap recall here
        last = got
    return None


def _confirm(recall: Callable[..., float], held: np.ndarray, chosen: int, factor: int, candidates: list[int], target: float) -> tuple[int, float]:
    """Held-out recall at ``chosen``; while it falls short of ``target``, step up the effort."""
    held_recall = recall(held, chosen, factor)
    for effort in candidates:
        if effort > chosen and held_recall < target:
            chosen, held_recall = effort, recall(held, effort, factor)
    return chosen, held_recall


def ivf_work(ivf: faiss.IndexIVF, nprobe: int, rerank: int, k: int, dim: int) -> int:
    """Bytes one query reads: the codes of ``nprobe`` average lists, plus ``rerank x k`` raw float32 rows.

    Both cost ~0.35 ns a byte on the 2-core box (2M x 300 clustered, PQ100: 36 ns a code scanned,
    0.41 us a candidate re-scored), so the cheapest setting is the one that reads least.
    """
    return int(nprobe * ivf.ntotal / max(1, ivf.nlist) * ivf.code_size + rerank * k * 4 * dim)


def _is_ivf(index: faiss.Index) -> bool:
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:
        return False
    return True



def describe(index: faiss.Index) -> str:
    return describe_storage(index)



def save_index(index: faiss.Index, path: str | os.PathLike[str]) -> None:
    faiss.write_index(index, str(path))



def load_index(path: str | os.PathLike[str], *, mmap: bool = True) -> faiss.Index:
    """Read an index; with ``mmap`` Flat storage is mapped zero-copy and shared between processes."""
    flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mmap else 0
    try:
        return faiss.read_index(str(path), flags)
    except RuntimeError as exc:  # faiss raises RuntimeError for any malformed file
        raise ValueError(f"{path}: not a readable FAISS index ({str(exc).splitlines()[0]})") from exc


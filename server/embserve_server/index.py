"""FAISS indexes over table rows: build, tune, save, load (memory-mapped) and search.

Inside this module everything is FAISS-shaped: queries are (n, d) C-contiguous float32, results
are ``D, I`` arrays of shape (n, k) with ``-1`` ids for "none". Cosine tables are indexed on
unit-normalised rows with inner product, so scores are cosine similarities.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

logger = logging.getLogger(__name__)

# Tables up to this many rows get an exact Flat index: brute force is fast enough and perfect.
FLAT_MAX_ROWS = 50_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
EF_SEARCH_CANDIDATES = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
TARGET_RECALL = 0.975  # a margin over the 0.97 promised (measured on key queries, key left out)
RECALL_SAMPLE = 2000  # rows drawn for tuning; half tunes efSearch, the other half is held out
ADD_CHUNK = 20_000

# OpenMP threads per search: one for small batches (many request threads, each with its own
# OpenMP pool, would pile up and spin), every core for big batches. omp_set_num_threads is per thread in
# libgomp, so it is set on every call, from whichever thread searches.
CORES = os.cpu_count() or 1
PARALLEL_MIN_QUERIES = 32

ProgressFactory = Callable[[int, str], Any]  # (total, description) -> object with update(n)/close()


def prepare_rows(vectors: np.ndarray, metric: str) -> np.ndarray:
    """Rows as the index sees them: a float32 (n, d) copy, unit-normalised for cosine tables."""
    rows = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if metric == "cosine":
        faiss.normalize_L2(rows)  # zero rows stay zero
    return rows


def choose_factory(count: int) -> str:
    return "Flat" if count <= FLAT_MAX_ROWS else f"HNSW{HNSW_M},Flat"


def build_index(
    rows: np.ndarray, factory: str, *, progress: ProgressFactory | None = None
) -> faiss.Index:
    """Build an inner-product index over ``rows`` (already prepared, see :func:`prepare_rows`)."""
    n, d = rows.shape
    index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    if not index.is_trained:
        index.train(rows)
    bar = progress(n, f"index {factory}") if progress else None
    for start in range(0, n, ADD_CHUNK):
        chunk = rows[start : start + ADD_CHUNK]
        index.add(chunk)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return index


def _search_params(index: faiss.Index, ef_search: int = 0, nprobe: int = 0, sel: Any = None) -> Any:
    """Per-call search parameters; a shared index is never mutated from request threads.

    Without a selector the parameter objects are cached: faiss' Python constructor for them costs
    ~30 us, more than an HNSW search on GloVe. They are only read during a search, so threads can
    share them.
    """
    base = index if isinstance(index, (faiss.IndexHNSW, faiss.IndexIVF, faiss.IndexFlat)) else faiss.downcast_index(index)
    if isinstance(base, faiss.IndexHNSW):
        kind, value = "hnsw", ef_search or 64
    elif isinstance(base, faiss.IndexIVF):
        kind, value = "ivf", nprobe or 8
    elif sel is None:
        return None
    else:
        kind, value = "plain", 0
    if sel is None:
        cached = _PARAMS.get((kind, value))
        if cached is not None:
            return cached
    if kind == "hnsw":
        params = faiss.SearchParametersHNSW(efSearch=value)  # type: ignore[attr-defined]  # missing from faiss stubs
    elif kind == "ivf":
        params = faiss.SearchParametersIVF(nprobe=value)  # type: ignore[call-arg]
    else:
        params = faiss.SearchParameters()
    if sel is not None:
        params.sel = sel
    elif len(_PARAMS) < 4096:  # bounded: efSearch/nprobe values come from requests
        _PARAMS[(kind, value)] = params
    return params


_PARAMS: dict[tuple[str, int], Any] = {}


def _selector(limit: int, n: int, exclude: np.ndarray | None) -> tuple[Any, list[Any]]:
    """FAISS id selector for rows [0, limit) minus ``exclude``; also returns what must stay alive."""
    parts: list[Any] = []
    keep: list[Any] = []
    if limit < n:
        parts.append(faiss.IDSelectorRange(0, limit))
    if exclude is not None:
        bits = np.packbits(~exclude, bitorder="little")  # bit i set = row i allowed
        keep.append(bits)
        parts.append(faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits)))
    keep.extend(parts)
    if not parts:
        return None, keep
    if len(parts) == 1:
        return parts[0], keep
    both = faiss.IDSelectorAnd(parts[0], parts[1])
    keep.append(both)
    return both, keep


def compact(D: np.ndarray, I: np.ndarray, bad: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop the ``bad`` entries of each row, keep the rest in order, pad to ``k`` with id -1 / score 0."""
    width = min(k, I.shape[1])
    if bad.any():
        order = np.argsort(bad, axis=1, kind="stable")[:, :width]
        rows = np.arange(len(I))[:, None]
        I, D, bad = I[rows, order], D[rows, order], bad[rows, order]
    else:
        I, D, bad = I[:, :width], D[:, :width], bad[:, :width]
    if width < k:
        pad = ((0, 0), (0, k - width))
        I, D, bad = np.pad(I, pad, constant_values=-1), np.pad(D, pad), np.pad(bad, pad, constant_values=True)
    return np.where(bad, 0.0, D).astype(np.float32, copy=False), np.where(bad, -1, I)


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each exact top-k row found in the approximate row."""
    k = exact.shape[1]
    hits = (approx[:, :, None] == exact[:, None, :]) & (exact[:, None, :] >= 0)
    return float(hits.any(axis=1).sum() / max(1, (exact >= 0).sum()) if k else 1.0)


def tune_ef_search(
    index: faiss.Index, rows: np.ndarray, *, target: float = TARGET_RECALL, k: int = 10, seed: int = 0
) -> dict[str, Any]:
    """Smallest efSearch reaching ``target`` recall@k on a tuning sample, verified on a held-out one.

    Queries are rows of the table asked the way users ask ("neighbours of this key"): the row
    itself is dropped from both the exact and the approximate answer before comparing.

    Returns the manifest's search defaults: ``ef_search``, ``recall_at_10`` (held-out sample),
    ``recall_sample`` (size) and ``target_recall``.
    """
    rng = np.random.default_rng(seed)
    n = rows.shape[0]
    pick = rng.choice(n, size=min(RECALL_SAMPLE, n), replace=False)
    tune, held = pick[: len(pick) // 2], pick[len(pick) // 2 :]
    flat = flat_rows(index)

    def without_self(result: tuple[np.ndarray, np.ndarray], ids: np.ndarray) -> np.ndarray:
        D, I = result
        return compact(D, I, I == ids[:, None], k)[1]

    def recall(ids: np.ndarray, ef: int) -> float:
        queries = np.ascontiguousarray(rows[ids])
        truth = without_self(faiss.knn(queries, flat, k + 1, metric=faiss.METRIC_INNER_PRODUCT), ids)
        got = without_self(index.search(queries, k + 1, params=_search_params(index, ef_search=ef)), ids)
        return recall_at_k(got, truth)

    chosen = EF_SEARCH_CANDIDATES[-1]
    for ef in EF_SEARCH_CANDIDATES:
        if ef >= k and recall(tune, ef) >= target:
            chosen = ef
            break
    held_recall = recall(held, chosen)
    # The held-out sample must confirm it; step up while it falls short.
    for ef in EF_SEARCH_CANDIDATES:
        if ef > chosen and held_recall < target:
            chosen, held_recall = ef, recall(held, ef)
    logger.info("efSearch=%d gives recall@%d=%.4f on %d held-out queries", chosen, k, held_recall, len(held))
    return {"ef_search": chosen, "recall_at_10": round(held_recall, 4), "recall_sample": len(held), "target_recall": target}


def flat_rows(index: faiss.Index) -> np.ndarray:
    """Zero-copy (n, d) view of the rows stored in a Flat or HNSW-Flat index."""
    base = faiss.downcast_index(index)
    storage = faiss.downcast_index(base.storage) if isinstance(base, faiss.IndexHNSW) else base
    if not isinstance(storage, faiss.IndexFlat):
        raise ValueError(f"index {type(base).__name__} has no flat storage to search exactly")
    return faiss.rev_swig_ptr(storage.get_xb(), storage.ntotal * storage.d).reshape(storage.ntotal, storage.d)


def describe(index: faiss.Index) -> str:
    base = faiss.downcast_index(index)
    if isinstance(base, faiss.IndexHNSW):
        return f"HNSW{base.hnsw.nb_neighbors(1)},Flat"  # type: ignore[attr-defined]
    if isinstance(base, faiss.IndexFlat):
        return "Flat"
    return type(base).__name__


def save_index(index: faiss.Index, path: str | os.PathLike[str]) -> None:
    faiss.write_index(index, str(path))


def load_index(path: str | os.PathLike[str], *, mmap: bool = True) -> faiss.Index:
    """Read an index; with ``mmap`` Flat storage is mapped zero-copy and shared between processes."""
    flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mmap else 0
    try:
        return faiss.read_index(str(path), flags)
    except RuntimeError as exc:  # faiss raises RuntimeError for any malformed file
        raise ValueError(f"{path}: not a readable FAISS index ({str(exc).splitlines()[0]})") from exc


@dataclass
class VectorIndex:
    """The search side of one table: an approximate index plus an exact (flat) view of its rows."""

    index: faiss.Index  # downcast to its concrete class once, not per call
    rows: np.ndarray  # (n, d) prepared rows (unit-norm for cosine), zero-copy from the index
    ef_search: int = 64
    nprobe: int = 8
    is_exact: bool = False  # a Flat index: every search is brute force
    owner: Any = None  # the wrapper that owns the C++ index: the downcast one does not keep it alive

    @classmethod
    def from_index(cls, index: faiss.Index, *, ef_search: int = 64, nprobe: int = 8) -> VectorIndex:
        base = faiss.downcast_index(index)
        return cls(
            index=base, rows=flat_rows(base), ef_search=ef_search, nprobe=nprobe, is_exact=isinstance(base, faiss.IndexFlat), owner=index
        )

    @property
    def ntotal(self) -> int:
        return len(self.rows)

    @property
    def d(self) -> int:
        return int(self.rows.shape[1])

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        exact: bool = False,
        ef_search: int = 0,
        nprobe: int = 0,
        restrict: int = 0,
        exclude: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows by inner product for each query.

        Args:
            queries: (nq, d) C-contiguous float32.
            k: neighbours per query (may exceed the row count; extra slots get id -1).
            exact: brute force over the flat rows instead of the approximate index.
            ef_search / nprobe: per-call effort, 0 = this index's default.
            restrict: only rows 0..restrict-1 (the most frequent keys); 0 = all rows.
            exclude: (ntotal,) bool mask of rows never to return (e.g. special tokens).

        Returns:
            ``D`` (nq, k) float32 scores and ``I`` (nq, k) int64 row ids, -1 for "none".
        """
        if len(queries) >= PARALLEL_MIN_QUERIES and CORES > 1 and not threading.current_thread().name.startswith(_PARALLEL_THREAD):
            # Big batches use every core, always from the same thread: one OpenMP pool, kept warm,
            # instead of one per request thread spinning against the others.
            return _parallel().submit(self.search, queries, k, exact=exact, ef_search=ef_search, nprobe=nprobe, restrict=restrict, exclude=exclude).result()
        n = self.ntotal
        limit = n if restrict <= 0 else min(restrict, n)
        faiss.omp_set_num_threads(CORES if len(queries) >= PARALLEL_MIN_QUERIES else 1)
        if exact or self.is_exact:
            # faiss.knn takes no selector: fetch enough extra rows to cover the excluded ones.
            extra = int(exclude[:limit].sum()) if exclude is not None else 0
            kk = min(k + extra, limit)
            D, I = faiss.knn(queries, self.rows[:limit], kk, metric=faiss.METRIC_INNER_PRODUCT)
            bad = (I < 0) | (exclude[np.maximum(I, 0)] if exclude is not None else False)
            return compact(D, I, bad, k)
        sel, keep_alive = _selector(limit, n, exclude)
        params = _search_params(self.index, ef_search or max(self.ef_search, k), nprobe or self.nprobe, sel)
        D, I = self.index.search(queries, k, params=params)
        del keep_alive  # the selector's bitmap had to outlive the search
        return D, I

    def warm_up(self) -> float:
        """Touch every page of the rows and run a few searches; returns seconds spent."""
        t0 = time.perf_counter()
        if self.ntotal:
            float(np.add.reduce(self.rows[:, 0]))  # strided walk faults in every page of the mapping
            probe = np.ascontiguousarray(self.rows[: min(8, self.ntotal)])
            self.search(probe, 10)
            self.search(probe, 10, exact=True)
        return time.perf_counter() - t0


_PARALLEL_THREAD = "faiss-parallel"
_parallel_executor: futures.ThreadPoolExecutor | None = None
_parallel_lock = threading.Lock()


def _parallel() -> futures.ThreadPoolExecutor:
    """The one thread that runs multi-threaded searches; created on first use (after any fork)."""
    global _parallel_executor
    with _parallel_lock:
        if _parallel_executor is None:
            _parallel_executor = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=_PARALLEL_THREAD)
        return _parallel_executor

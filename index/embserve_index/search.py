"""Searching a loaded FAISS index: per-call parameters, id selectors, exclusion and over-fetch.

Inside this module everything is FAISS-shaped: queries are (n, d) C-contiguous float32, results
are ``D, I`` arrays of shape (n, k) with ``-1`` ids for "none". Cosine tables are indexed on
unit-normalised rows with inner product, so scores are cosine similarities.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

# OpenMP threads per search: one for small batches (many request threads, each with its own
# OpenMP pool, would pile up and spin), every core for big batches. omp_set_num_threads is per thread in
# libgomp, so it is set on every call, from whichever thread searches.
CORES = os.cpu_count() or 1
PARALLEL_MIN_QUERIES = 32
# Search effort when neither the bundle nor the call sets one.
DEFAULT_EF_SEARCH = 64
DEFAULT_NPROBE = 8


def search_params(index: faiss.Index, ef_search: int = 0, nprobe: int = 0, sel: Any = None) -> Any:
    """Per-call search parameters; a shared index is never mutated from request threads.

    Without a selector the parameter objects are cached: faiss' Python constructor for them costs
    ~30 us, more than an HNSW search on GloVe. They are only read during a search, so threads can
    share them.
    """
    base = index if isinstance(index, (faiss.IndexHNSW, faiss.IndexIVF, faiss.IndexFlat)) else faiss.downcast_index(index)
    if isinstance(base, faiss.IndexHNSW):
        kind, value = "hnsw", ef_search or DEFAULT_EF_SEARCH
    elif isinstance(base, faiss.IndexIVF):
        kind, value = "ivf", nprobe or DEFAULT_NPROBE
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


def flat_rows(index: faiss.Index) -> np.ndarray:
    """Zero-copy (n, d) view of the rows stored in a Flat or HNSW-Flat index."""
    base = faiss.downcast_index(index)
    storage = faiss.downcast_index(base.storage) if isinstance(base, faiss.IndexHNSW) else base
    if not isinstance(storage, faiss.IndexFlat):
        raise ValueError(f"index {type(base).__name__} has no flat storage to search exactly")
    return faiss.rev_swig_ptr(storage.get_xb(), storage.ntotal * storage.d).reshape(storage.ntotal, storage.d)


@dataclass
class VectorIndex:
    """The search side of one table: an approximate index plus an exact (flat) view of its rows.

    The one owner of over-fetching and exclusion: callers say which rows a query must not return
    (``exclude`` for all queries, ``drop`` per query, ``min_score``) and get ``k`` clean slots back.
    """

    index: faiss.Index  # downcast to its concrete class once, not per call
    rows: np.ndarray  # (n, d) prepared rows (unit-norm for cosine), zero-copy from the index
    ef_search: int = DEFAULT_EF_SEARCH
    nprobe: int = DEFAULT_NPROBE
    is_exact: bool = False  # a Flat index: every search is brute force
    owner: Any = None  # the wrapper that owns the C++ index: the downcast one does not keep it alive

    @classmethod
    def from_index(cls, index: faiss.Index, *, ef_search: int = 0, nprobe: int = 0) -> VectorIndex:
        base = faiss.downcast_index(index)
        return cls(
            index=base,
            rows=flat_rows(base),
            ef_search=ef_search or DEFAULT_EF_SEARCH,
            nprobe=nprobe or DEFAULT_NPROBE,
            is_exact=isinstance(base, faiss.IndexFlat),
            owner=index,
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
        drop: np.ndarray | None = None,
        min_score: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows by inner product for each query.

        Args:
            queries: (nq, d) C-contiguous float32.
            k: neighbours per query (may exceed the row count; extra slots get id -1).
            exact: brute force over the flat rows instead of the approximate index.
            ef_search / nprobe: per-call effort, 0 = this index's default.
            restrict: only rows 0..restrict-1 (the most frequent keys); 0 = all rows.
            exclude: (ntotal,) bool mask of rows never to return (e.g. special tokens).
            drop: (nq, w) int64, per query the rows to leave out of its answer (its own keys),
                -1 for none; the search fetches ``w`` more rows so that ``k`` remain.
            min_score: leave out rows scoring below it.

        Returns:
            ``D`` (nq, k) float32 scores and ``I`` (nq, k) int64 row ids, -1 / 0.0 for "none".
        """
        width = 0 if drop is None else drop.shape[1]
        D, I = self._search(queries, k + width, exact=exact, ef_search=ef_search, nprobe=nprobe, restrict=restrict, exclude=exclude)
        bad = I < 0
        if width:
            bad |= (I[:, :, None] == drop[:, None, :]).any(axis=2)  # type: ignore[index]
        if min_score is not None:
            bad |= D < min_score
        if exclude is not None and (exact or self.is_exact):
            bad |= exclude[np.maximum(I, 0)]  # brute force takes no selector: filtered here
        return compact(D, I, bad, k)

    def nearest_to_row(self, row: int, k: int, ef_search: int = 0) -> tuple[list[int], list[float]]:
        """``search(rows[row:row+1], k, drop=[[row]], ef_search=ef_search)`` as plain lists.

        The commonest query (``most_similar(key)``) without the batch bookkeeping: in a busy
        server each numpy call costs microseconds, more than an HNSW search over GloVe.
        tests/test_fast_paths.py shows both give the same answer.
        """
        D, I = self._search(self.rows[row : row + 1], k + 1, ef_search=ef_search)
        ids: list[int] = []
        scores: list[float] = []
        for i, d in zip(I[0].tolist(), D[0].tolist()):
            if i >= 0 and i != row and len(ids) < k:
                ids.append(i)
                scores.append(d)
        pad = k - len(ids)
        return ids + [-1] * pad, scores + [0.0] * pad

    def _search(
        self, queries: np.ndarray, k: int, *, exact: bool = False, ef_search: int = 0, nprobe: int = 0, restrict: int = 0, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw FAISS answer, ``k`` slots per query; with brute force, ``exclude`` is only over-fetched for."""
        if len(queries) >= PARALLEL_MIN_QUERIES and CORES > 1 and not threading.current_thread().name.startswith(_PARALLEL_THREAD):
            # Big batches use every core, always from the same thread: one OpenMP pool, kept warm,
            # instead of one per request thread spinning against the others.
            return _parallel().submit(self._search, queries, k, exact=exact, ef_search=ef_search, nprobe=nprobe, restrict=restrict, exclude=exclude).result()
        n = self.ntotal
        limit = n if restrict <= 0 else min(restrict, n)
        faiss.omp_set_num_threads(CORES if len(queries) >= PARALLEL_MIN_QUERIES else 1)
        if exact or self.is_exact:
            # faiss.knn takes no selector: fetch enough extra rows to cover the excluded ones.
            extra = int(exclude[:limit].sum()) if exclude is not None else 0
            return faiss.knn(queries, self.rows[:limit], min(k + extra, limit), metric=faiss.METRIC_INNER_PRODUCT)
        sel, keep_alive = _selector(limit, n, exclude)
        params = search_params(self.index, ef_search or max(self.ef_search, k), nprobe or self.nprobe, sel)
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

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

from embserve_index.rawrows import RawRows

# OpenMP threads per search: one for small batches (many request threads, each with its own
# OpenMP pool, would pile up and spin), every core for big batches. omp_set_num_threads is per thread in
# libgomp, so it is set on every call, from whichever thread searches.
CORES = os.cpu_count() or 1
PARALLEL_MIN_QUERIES = 32
# Search effort when neither the bundle nor the call sets one.
DEFAULT_EF_SEARCH = 64
DEFAULT_NPROBE = 8
RERANK_CHUNK_BYTES = 16 << 20  # candidate rows gathered at once by a batch re-rank


def search_params(index: faiss.Index, ef_search: int = 0, nprobe: int = 0, sel: Any = None) -> Any:
    """Per-call search parameters; a shared index is never mutated from request threads.

    Without a selector the parameter objects are cached: faiss' Python constructor for them costs
    ~30 us, more than an HNSW search on GloVe. They are only read during a search, so threads can
    share them.
    """
    base = index if isinstance(index, (faiss.IndexHNSW, faiss.IndexIVF, faiss.IndexFlat)) else faiss.downcast_index(index)
    if isinstance(base, faiss.IndexPreTransform):  # OPQ in front of an IVF index: the parameters go inside
        inner = search_params(faiss.downcast_index(base.index), ef_search, nprobe, sel)
        if inner is None:
            return None
        cache = ("pre", id(inner))
        outer = _PARAMS.get(cache) if sel is None else None  # type: ignore[call-overload]
        if outer is None:
            outer = faiss.SearchParametersPreTransform()
            outer.index_params = inner
            outer.keep = inner  # type: ignore[attr-defined]  # the wrapper does not own the inner object
            if sel is None:
                _PARAMS[cache] = outer  # type: ignore[index]
        return outer
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


def describe_storage(index: faiss.Index) -> str:
    """Factory-style name of an index: "Flat", "HNSW32,Flat", "HNSW32,SQ8", "HNSW32,SQfp16"..."""
    base = faiss.downcast_index(index)
    if isinstance(base, faiss.IndexHNSW):
        return f"HNSW{base.hnsw.nb_neighbors(1)},{describe_storage(base.storage)}"  # type: ignore[attr-defined]
    if isinstance(base, faiss.IndexFlat):
        return "Flat"
    if isinstance(base, faiss.IndexPreTransform):
        chain = [_describe_transform(faiss.downcast_VectorTransform(base.chain.at(i))) for i in range(base.chain.size())]  # type: ignore[attr-defined]  # a SWIG vector, not a list
        return ",".join([*chain, describe_storage(base.index)])
    if isinstance(base, faiss.IndexIVFPQ):
        return f"IVF{base.nlist},PQ{base.pq.M}"
    if isinstance(base, faiss.IndexScalarQuantizer):
        names = {faiss.ScalarQuantizer.QT_8bit: "SQ8", faiss.ScalarQuantizer.QT_fp16: "SQfp16"}
        return names.get(base.sq.qtype, f"SQ(qtype={base.sq.qtype})")
    return type(base).__name__


def _describe_transform(t: Any) -> str:
    return f"OPQ{t.M}" if isinstance(t, faiss.OPQMatrix) else type(t).__name__


def flat_rows(index: faiss.Index) -> np.ndarray:
    """Zero-copy (n, d) view of the rows stored in a Flat or HNSW-Flat index."""
    base = faiss.downcast_index(index)
    storage = faiss.downcast_index(base.storage) if isinstance(base, faiss.IndexHNSW) else base
    if not isinstance(storage, faiss.IndexFlat):
        raise ValueError(f"index {type(base).__name__} has no flat storage to search exactly")
    return faiss.rev_swig_ptr(storage.get_xb(), storage.ntotal * storage.d).reshape(storage.ntotal, storage.d)


def has_flat_storage(index: faiss.Index) -> bool:
    """Whether the index stores float32 rows (Flat, HNSW-Flat) rather than quantized codes."""
    try:
        flat_rows(index)
    except ValueError:
        return False
    return True


@dataclass
class VectorIndex:
    """The search side of one table: an approximate index plus an exact (flat) view of its rows.

    The one owner of over-fetching and exclusion: callers say which rows a query must not return
    (``exclude`` for all queries, ``drop`` per query, ``min_score``) and get ``k`` clean slots back.
    """

    index: faiss.Index | None  # downcast to its concrete class once, not per call; None: brute force only
    # (n, d) prepared rows (unit-norm for cosine): zero-copy from a flat index, else RawRows
    rows: Any
    ef_search: int = DEFAULT_EF_SEARCH
    nprobe: int = DEFAULT_NPROBE
    is_exact: bool = False  # a Flat index: every search is brute force
    owner: Any = None  # the wrapper that owns the C++ index: the downcast one does not keep it alive
    rerank: int = 1  # > 1: fetch rerank x k candidates, re-score them exactly against ``rows``
    index_dim: int = 0  # > row dim: the index holds zero-padded rows (SIMD-sized codes), queries are padded

    @classmethod
    def from_index(
        cls, index: faiss.Index, *, ef_search: int = 0, nprobe: int = 0, rows: Any = None, raw: np.ndarray | None = None,
        normalized: bool = True, rerank: int = 1,
    ) -> VectorIndex:
        """Wrap a FAISS index for searching.

        Args:
            index: the loaded or built index.
            ef_search / nprobe: default search effort (0: the library default).
            rows: the prepared rows (what the index was built on); default: the index's own flat
                storage, or ``raw`` through :class:`RawRows` when its storage is quantized.
            raw / normalized: the raw rows and whether the index holds them unit-normalised.
            rerank: candidates fetched per result slot and re-scored exactly (quantized storage).

        Raises:
            ValueError: the storage is quantized and neither ``rows`` nor ``raw`` is given.
        """
        base = faiss.downcast_index(index)
        if rows is None:
            if has_flat_storage(base):
                rows = flat_rows(base)
            elif raw is not None:
                rows = RawRows(raw, normalized)
            else:
                raise ValueError(f"index {describe_storage(base)} stores quantized codes: pass the raw rows to re-rank against")
        dim = int(rows.shape[1])
        if base.d < dim:
            raise ValueError(f"index has {base.d} dimensions, the rows {dim}")
        return cls(
            index=base,
            rows=rows,
            ef_search=ef_search or DEFAULT_EF_SEARCH,
            nprobe=nprobe or DEFAULT_NPROBE,
            is_exact=isinstance(base, faiss.IndexFlat),
            owner=index,
            rerank=max(1, int(rerank)),
            index_dim=int(base.d) if base.d > dim else 0,
        )

    @classmethod
    def brute_force(cls, rows: np.ndarray) -> VectorIndex:
        """Exact inner-product search over ``rows`` ((n, d) C-contiguous float32), no FAISS index."""
        return cls(index=None, rows=rows, is_exact=True)

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
        tests/pure/test_fast_paths.py shows both give the same answer.
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
        if exact or self.is_exact or self.index is None:
            # faiss.knn takes no selector: fetch enough extra rows to cover the excluded ones.
            extra = int(exclude[:limit].sum()) if exclude is not None else 0
            if isinstance(self.rows, RawRows):
                return self.rows.knn(queries, min(k + extra, limit), limit)
            return faiss.knn(queries, self.rows[:limit], min(k + extra, limit), metric=faiss.METRIC_INNER_PRODUCT)
        sel, keep_alive = _selector(limit, n, exclude)
        fetch = k * self.rerank
        params = search_params(self.index, ef_search or max(self.ef_search, fetch), nprobe or self.nprobe, sel)
        asked = queries
        if self.index_dim:
            asked = np.zeros((len(queries), self.index_dim), dtype=np.float32)
            asked[:, : queries.shape[1]] = queries
        D, I = self.index.search(asked, fetch, params=params)
        del keep_alive  # the selector's bitmap had to outlive the search
        if self.rerank > 1:
            D, I = self._rerank(queries, I, k)
        return D, I

    def _rerank(self, queries: np.ndarray, I: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of the candidates ``I`` (quantized storage scores approximately); best ``k`` kept.

        Scored against the raw rows and divided by their norms (cosine): the query is unit-norm
        already, so that is the cosine, without building unit copies of the candidate rows.
        """
        rows = self.rows
        raw, norms = (rows.raw, rows.norms) if isinstance(rows, RawRows) else (rows, None)
        if len(queries) == 1:  # most_similar(key): a few small numpy calls, not the batch machinery
            ids = I[0]
            if ids.min() < 0:
                ids = ids[ids >= 0]
            scores = np.asarray(raw[ids], dtype=np.float32) @ queries[0]
            if norms is not None:
                scores = np.divide(scores, norms[ids])
                scores[~np.isfinite(scores)] = 0.0  # a zero row: cosine 0, as unit() makes it
            top = np.argsort(-scores, kind="stable")[:k]
            if len(top) == k:
                return scores[top][None, :], ids[top][None, :]
            pad = k - len(top)
            return np.concatenate([scores[top], np.zeros(pad, np.float32)])[None, :], np.concatenate([ids[top], np.full(pad, -1)])[None, :]
        valid = I >= 0
        safe = np.where(valid, I, 0)
        scores = np.empty(I.shape, dtype=np.float32)
        # Gathered candidate rows in bounded chunks of queries: 256 queries re-ranking 1,760
        # candidates of 300 dims would otherwise be a 540 MB temporary.
        step = max(1, RERANK_CHUNK_BYTES // max(1, I.shape[1] * raw.shape[1] * 4))
        for a in range(0, len(I), step):
            scores[a : a + step] = np.einsum("qkd,qd->qk", np.asarray(raw[safe[a : a + step]], dtype=np.float32), queries[a : a + step])
        if norms is not None:
            n = norms[safe]
            scores = np.divide(scores, n, out=np.zeros_like(scores), where=n > 0)
        scores[~valid] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        D, I = np.take_along_axis(scores, order, axis=1), np.take_along_axis(I, order, axis=1)
        gone = ~np.take_along_axis(valid, order, axis=1)
        return np.where(gone, 0.0, D).astype(np.float32), np.where(gone, -1, I)

    def warm_up(self) -> float:
        """Touch every page of the rows and run a few searches; returns seconds spent."""
        t0 = time.perf_counter()
        if self.ntotal:
            source = self.rows.raw if isinstance(self.rows, RawRows) else self.rows
            float(np.add.reduce(source[:, 0]))  # strided walk faults in every page of the mapping
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

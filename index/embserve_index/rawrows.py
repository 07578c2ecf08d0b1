"""Rows as an index sees them, computed from a bundle's raw rows: for quantized index storage.

An index over SQ8/fp16/PQ codes has no float32 rows to re-rank against or to search exactly; the
bundle's vectors.npy has them (memory-mapped), and cosine tables need only their norms beside.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EXACT_CHUNK = 65_536  # rows per matmul of a brute-force search over raw rows (bounded temporaries)
SCORES_PER_STEP = 1 << 22  # query x row scores per step of a brute-force search


def row_norms(raw: np.ndarray) -> np.ndarray:
    """(n,) float32 L2 norms of the rows, as ``np.linalg.norm(raw, axis=1)`` (gensim's ``fill_norms``)
    gives them, computed in chunks: no (n, d) temporary (2.4 GB for 2M x 300)."""
    norms = np.empty(len(raw), dtype=np.float32)
    for a in range(0, len(raw), EXACT_CHUNK):
        norms[a : a + EXACT_CHUNK] = np.linalg.norm(np.asarray(raw[a : a + EXACT_CHUNK], dtype=np.float32), axis=-1)
    return norms


class RawRows:
    """The rows as the index sees them, computed from the raw rows on access: no second float32 copy.

    For an index whose storage is quantized (SQfp16, SQ8): the re-rank and exact searches read
    the bundle's raw rows (memory-mapped) and, for cosine tables, divide by norms kept here
    (4 bytes a row), the same division :func:`embserve_format.arrays.unit` does.
    Indexable like the (n, d) array it stands for: ``rows[i]``, ``rows[a:b]``, ``rows[ids]``.
    """

    def __init__(self, raw: np.ndarray, normalized: bool) -> None:
        self.raw = raw
        self.shape = raw.shape
        self.dtype = np.dtype(np.float32)
        self.norms: np.ndarray | None = row_norms(raw) if normalized else None

    def __len__(self) -> int:
        return int(self.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held beyond the raw rows (the norms)."""
        return 0 if self.norms is None else int(self.norms.nbytes)

    def __getitem__(self, item: Any) -> np.ndarray:
        rows = np.asarray(self.raw[item], dtype=np.float32)
        if self.norms is None:
            return np.array(rows, copy=True)
        norms = self.norms[item][..., None]
        return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)

    def take(self, ids: np.ndarray, axis: int = 0) -> np.ndarray:
        return self[np.asarray(ids, dtype=np.int64)]

    def knn(self, queries: np.ndarray, k: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` by inner product with rows [0, limit), in chunks: ``D, I`` like faiss.knn."""
        k = min(k, limit)
        nq = len(queries)
        best_d = np.empty((nq, 0), dtype=np.float32)
        best_i = np.empty((nq, 0), dtype=np.int64)
        # Rows per step: EXACT_CHUNK, fewer for many queries so that the (nq, rows) scores and their
        # partition stay near 64 MiB (1,000 tuning queries x 65,536 rows were ~1 GB of temporaries).
        step = max(1024, min(EXACT_CHUNK, SCORES_PER_STEP // max(1, nq)))
        for a in range(0, limit, step):
            b = min(limit, a + step)
            scores = queries @ np.asarray(self.raw[a:b], dtype=np.float32).T  # (nq, b - a)
            if self.norms is not None:
                n = self.norms[a:b]
                scores = np.divide(scores, n, out=scores, where=n > 0)  # a zero row's dot is 0 already
            if scores.shape[1] > k:
                part = np.argpartition(scores, scores.shape[1] - k, axis=1)[:, -k:]
                scores = np.take_along_axis(scores, part, axis=1)
                ids = part + a
            else:
                ids = np.broadcast_to(np.arange(a, b), scores.shape)
            best_d, best_i = np.concatenate([best_d, scores], axis=1), np.concatenate([best_i, ids], axis=1)
            if best_d.shape[1] > k:
                keep = np.argpartition(-best_d, k - 1, axis=1)[:, :k]
                best_d, best_i = np.take_along_axis(best_d, keep, axis=1), np.take_along_axis(best_i, keep, axis=1)
        order = np.argsort(-best_d, axis=1, kind="stable")
        return np.take_along_axis(best_d, order, axis=1).astype(np.float32), np.take_along_axis(best_i, order, axis=1)

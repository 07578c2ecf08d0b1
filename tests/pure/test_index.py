"""VectorIndex: exact and approximate search with restriction and exclusion masks."""

from __future__ import annotations

import numpy as np
import pytest
from embserve_index import VectorIndex, build_index, compact, prepare_rows


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    rng = np.random.default_rng(4)
    return prepare_rows(rng.normal(size=(3000, 12)).astype(np.float32), "cosine")


@pytest.mark.parametrize("factory", ["Flat", "HNSW16,Flat"])
def test_exclusion_never_returns_masked_rows_and_fills_topn(rows: np.ndarray, factory: str) -> None:
    idx = VectorIndex.from_index(build_index(rows, factory), ef_search=64)
    exclude = np.ones(len(rows), dtype=bool)
    exclude[::10] = False  # only every tenth row may be returned
    for exact in (False, True):
        D, I = idx.search(rows[:5], 10, exact=exact, exclude=exclude)
        assert I.shape == (5, 10) and (I >= 0).all()
        assert (I % 10 == 0).all()
        # the exact answer over the allowed rows, by brute force
        allowed = np.flatnonzero(~exclude)
        truth = allowed[np.argsort(-(rows[:5] @ rows[allowed].T), axis=1)[:, :10]]
        if exact or factory == "Flat":
            assert np.array_equal(I, truth)
        else:
            assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, truth)]) >= 0.9


def test_restrict_and_exclude_together(rows: np.ndarray) -> None:
    idx = VectorIndex.from_index(build_index(rows, "HNSW16,Flat"))
    exclude = np.zeros(len(rows), dtype=bool)
    exclude[:50] = True
    _, I = idx.search(rows[100:103], 10, restrict=500, exclude=exclude)
    valid = I[I >= 0]
    assert valid.size and ((valid >= 50) & (valid < 500)).all()


def test_compact_pads_with_none() -> None:
    D = np.array([[0.9, 0.8, 0.7]], np.float32)
    I = np.array([[4, 5, 6]])
    D2, I2 = compact(D, I, np.array([[False, True, False]]), 4)
    assert I2.tolist() == [[4, 6, -1, -1]] and D2.tolist()[0][:2] == pytest.approx([0.9, 0.7])

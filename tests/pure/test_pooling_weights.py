"""Per-row pooling weights written by the trainer: SIF from counts, Zipf from row order, off on request;
with them the common component (SIF's second step) and its removal by ``pool``.

Oracles are the formulas written out here (a / (a + p), p = count / total or (1/rank) / H_n, a = 1e-4;
the component as numpy's SVD of the sqrt(p)-scaled rows), not the module's helpers; lookups must keep
the raw rows bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from embserve_format.bundle import read_bundle
from embserve_format.text import pool
from embserve_trainer.cli import main as train_main
from embserve_trainer.export import export_table
from embserve_trainer.pooling import SIF_A, ZIPF_A, pooling_weights


def _weights(bundle: Path) -> np.ndarray | None:
    weights = read_bundle(bundle).weights
    assert (weights is None) == (not (bundle / "weights.npy").exists())
    return weights


def _pooling(bundle: Path) -> dict:
    return read_bundle(bundle).pooling


def _table(n: int = 50, dim: int = 4) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, dim)).astype(np.float32), [f"w{i}" for i in range(n)]


def test_counts_give_sif_weights_and_rows_stay_raw(tmp_path: Path) -> None:
    vectors, keys = _table()
    counts = np.arange(len(keys), 0, -1, dtype=np.int64) * 7
    path = export_table(tmp_path, "t", vectors, keys, source={"kind": "test"}, counts=counts)
    p = counts / counts.sum()
    np.testing.assert_allclose(_weights(path), 1e-4 / (1e-4 + p), rtol=1e-6)
    assert _pooling(path)["weights"] == "sif" and _pooling(path)["a"] == SIF_A
    bundle = read_bundle(path)
    assert bundle.vectors.tobytes() == vectors.tobytes()  # lookups: the raw rows, bit for bit


def test_frequency_ordered_rows_give_zipf_weights(tmp_path: Path) -> None:
    vectors, keys = _table()
    path = export_table(tmp_path, "t", vectors, keys, source={"kind": "test"}, extras={"frequency_ordered": True})
    ranks = np.arange(1, len(keys) + 1)
    p = (1 / ranks) / (1 / ranks).sum()
    w = _weights(path)
    np.testing.assert_allclose(w, ZIPF_A / (ZIPF_A + p), rtol=1e-6)
    assert w.dtype == np.float32 and np.all(np.diff(w) > 0)  # the most frequent rows weigh least
    assert _pooling(path)["weights"] == "zipf"


def test_unknown_order_and_none_give_a_plain_mean(tmp_path: Path) -> None:
    vectors, keys = _table()
    plain = export_table(tmp_path, "a", vectors, keys, source={"kind": "test"})
    off = export_table(tmp_path, "b", vectors, keys, source={"kind": "test"}, counts=np.ones(len(keys), np.int64), pooling="none")
    for path in (plain, off):
        assert _weights(path) is None and _pooling(path) == {"weights": "uniform"}


def test_modes_that_lack_their_input_are_refused() -> None:
    with pytest.raises(ValueError, match="needs corpus counts"):
        pooling_weights("sif", count=3)
    with pytest.raises(ValueError, match="frequency order"):
        pooling_weights("zipf", count=3)
    with pytest.raises(ValueError, match="unknown pooling"):
        pooling_weights("idf", count=3)


def _glove_file(path: Path, n: int = 30, dim: int = 3) -> np.ndarray:
    rows = np.random.default_rng(2).normal(size=(n, dim)).astype(np.float32)
    path.write_text("".join(f"w{i} " + " ".join(repr(float(x)) for x in r) + "\n" for i, r in enumerate(rows)))
    return rows


def test_glove_import_is_zipf_weighted_by_default_and_off_with_pooling_none(tmp_path: Path) -> None:
    src = tmp_path / "vectors.txt"
    rows = _glove_file(src)
    tables = tmp_path / "tables"
    assert train_main(["import", str(src), "--format", "glove", "--tables", str(tables), "--name", "g", "--no-progress"]) == 0
    assert train_main(["import", str(src), "--format", "glove", "--tables", str(tables), "--name", "g",
                       "--no-progress", "--pooling", "none"]) == 0
    weighted, plain = tables / "g" / "1", tables / "g" / "2"
    ranks = np.arange(1, len(rows) + 1)
    np.testing.assert_allclose(_weights(weighted), ZIPF_A / (ZIPF_A + (1 / ranks) / (1 / ranks).sum()), rtol=1e-6)
    assert _weights(plain) is None and _pooling(plain)["weights"] == "uniform"
    assert read_bundle(weighted).vectors.tobytes() == read_bundle(plain).vectors.tobytes()


def _oracle_component(vectors: np.ndarray, p: np.ndarray) -> np.ndarray:
    """First right singular vector of the rows scaled by sqrt(p), sign: largest entry positive."""
    _, _, vt = np.linalg.svd(np.sqrt(p)[:, None] * vectors.astype(np.float64), full_matrices=False)
    u = vt[0]
    return u if u[np.argmax(np.abs(u))] > 0 else -u


def test_weighted_tables_carry_the_common_component_of_their_probabilities(tmp_path: Path) -> None:
    vectors, keys = _table(dim=6)
    vectors[:, 0] += 3.0  # a shared direction, as real tables have
    counts = np.arange(len(keys), 0, -1, dtype=np.int64) ** 2
    sif_path = export_table(tmp_path, "s", vectors, keys, source={"kind": "test"}, counts=counts)
    zipf_path = export_table(tmp_path, "z", vectors, keys, source={"kind": "test"}, extras={"frequency_ordered": True})
    ranks = np.arange(1, len(keys) + 1)
    for path, p in ((sif_path, counts / counts.sum()), (zipf_path, (1 / ranks) / (1 / ranks).sum())):
        got = read_bundle(path).component
        assert got is not None and got.shape == (1, 6) and got.dtype == np.float32
        np.testing.assert_allclose(got[0], _oracle_component(vectors, p), atol=1e-5)
        assert _pooling(path)["common_component"]["file"] == "component.npy"
    assert not np.allclose(read_bundle(sif_path).component, read_bundle(zipf_path).component, atol=1e-3)  # p matters
    plain = export_table(tmp_path, "p", vectors, keys, source={"kind": "test"}, counts=counts, pooling="none")
    assert read_bundle(plain).component is None and not (plain / "component.npy").exists()


def test_pool_removes_the_common_component_before_cutting_and_normalising() -> None:
    rng = np.random.default_rng(7)
    rows = rng.normal(size=(5, 4)).astype(np.float32) + np.array([4, 0, 0, 0], np.float32)
    w = rng.uniform(0.1, 1.0, size=5).astype(np.float32)
    u = np.array([[0.8, 0.0, 0.6, 0.0]], np.float32)
    lengths = np.array([3, 0, 2])
    got = pool(rows, lengths, weights=w, normalize=False, component=u)
    for i, (a, b) in enumerate(((0, 3), (3, 3), (3, 5))):
        mean = (rows[a:b] * w[a:b, None]).sum(axis=0) / w[a:b].sum() if b > a else np.zeros(4)
        np.testing.assert_allclose(got[i], mean - (mean @ u[0]) * u[0], atol=1e-6)
    np.testing.assert_allclose(got @ u.T, 0, atol=1e-6)  # nothing left along the component
    plain = pool(rows, lengths, weights=w, normalize=False)
    assert not np.allclose(got, plain, atol=1e-2)
    short = pool(rows, lengths, weights=w, dimensions=2, component=u)
    cut = got[:, :2] / np.maximum(np.linalg.norm(got[:, :2], axis=1, keepdims=True), 1e-30)
    np.testing.assert_allclose(short, cut, atol=1e-6)  # removed over all 4 columns, then cut, then unit length

"""Bundle format 1: round trip, atomic publication, and a clear refusal for every inconsistency."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from embserve_format import bundle as b
from embserve_format import bundle_writer as w


def write(tmp_path: Path, n: int = 50, **kw: object) -> Path:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(n, 8)).astype(np.float32)
    keys = [f"k{i}" for i in range(n)]
    return w.write_bundle(tmp_path, "t", vectors, keys, w.BundleSpec(counts=np.arange(n, 0, -1)), **kw)  # type: ignore[arg-type]


def test_round_trip_is_exact_and_read_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    keys = [f"k{i}" for i in range(49)] + ["ünï\u2028code"]  # \u2028 must not split lines
    path = w.write_bundle(tmp_path, "t", vectors, keys, w.BundleSpec(extras={"x": 1}))
    got = b.read_bundle(path)
    assert np.array_equal(got.vectors, vectors)
    assert got.keys == keys
    assert not got.vectors.flags.writeable
    assert (got.name, got.version, got.count, got.vector_size, got.metric) == ("t", 1, 50, 8, "cosine")
    assert got.extras == {"x": 1}


def test_versions_increase_and_are_immutable(tmp_path: Path) -> None:
    assert write(tmp_path).name == "1"
    assert write(tmp_path).name == "2"
    assert b.list_versions(tmp_path, "t") == [1, 2]
    with pytest.raises(ValueError, match="already exists"):
        write(tmp_path, version=2)


def test_failed_write_leaves_nothing_visible(tmp_path: Path) -> None:
    def boom(path: Path) -> None:
        path.write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        w.write_bundle(tmp_path, "t", np.ones((3, 2), np.float32), ["a", "b", "c"], w.BundleSpec(files={"extra.bin": boom}))
    assert b.list_versions(tmp_path, "t") == []
    assert list((tmp_path / "t").iterdir()) == []  # the hidden temp dir is gone too


def test_hidden_directories_are_ignored(tmp_path: Path) -> None:
    write(tmp_path)
    (tmp_path / "t" / ".tmp-2-abc").mkdir()
    assert b.list_versions(tmp_path, "t") == [1]


@pytest.mark.parametrize(
    "keys, message",
    [(["a", "a"], "duplicate key 'a'"), (["a", "b\nc"], "without newlines"), (["a", ""], "non-empty"), (["a"], "got 1 keys for 2")],
)
def test_writer_rejects_bad_keys(tmp_path: Path, keys: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        w.write_bundle(tmp_path, "t", np.ones((2, 2), np.float32), keys)


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "", "x" * 65, "a..b"])
def test_invalid_table_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="invalid table name"):
        w.write_bundle(tmp_path, name, np.ones((1, 2), np.float32), ["a"])


def test_writer_rejects_nan(tmp_path: Path) -> None:
    v = np.ones((3, 2), np.float32)
    v[1, 1] = np.nan
    with pytest.raises(ValueError, match="row 1 contains NaN"):
        w.write_bundle(tmp_path, "t", v, ["a", "b", "c"])


def _rewrite_manifest(path: Path, **changes: object) -> None:
    m = json.loads((path / b.MANIFEST).read_text())
    m.update(changes)
    (path / b.MANIFEST).write_text(json.dumps(m))


def test_checksum_mismatch_is_data_loss(tmp_path: Path) -> None:
    path = write(tmp_path)
    with open(path / b.KEYS, "r+b") as f:
        f.write(b"X")
    with pytest.raises(b.ChecksumError, match="keys.txt: sha256"):
        b.read_bundle(path)


def test_truncated_vectors(tmp_path: Path) -> None:
    path = write(tmp_path)
    data = (path / b.VECTORS).read_bytes()
    (path / b.VECTORS).write_bytes(data[: len(data) // 2])
    with pytest.raises(b.BundleError, match="vectors.npy"):
        b.read_bundle(path, verify_checksums=False)


def test_key_count_mismatch(tmp_path: Path) -> None:
    path = write(tmp_path)
    (path / b.KEYS).write_text("\n".join(f"k{i}" for i in range(49)) + "\n")
    with pytest.raises(b.BundleError, match="has 49 keys, manifest says count=50"):
        b.read_bundle(path, verify_checksums=False)


def test_shape_mismatch_with_manifest(tmp_path: Path) -> None:
    path = write(tmp_path)
    _rewrite_manifest(path, vector_size=9)
    with pytest.raises(b.BundleError, match=r"manifest says float32 \(50, 9\)"):
        b.read_bundle(path, verify_checksums=False)


def test_rows_in_fortran_order_are_refused(tmp_path: Path) -> None:
    """A row must be one run of bytes (the one-row Lookup answer copies it as such)."""
    path = write(tmp_path)
    rows = np.load(path / b.VECTORS)
    np.save(path / b.VECTORS, np.asfortranarray(rows))
    assert np.array_equal(np.load(path / b.VECTORS), rows)  # the same values, only the layout differs
    with pytest.raises(b.BundleError, match="Fortran order"):
        b.read_bundle(path, verify_checksums=False)


@pytest.mark.parametrize(
    "changes, message",
    [({"format": "other/2"}, "format is 'other/2'"), ({"dtype": "float16"}, "dtype"), ({"metric": "hamming"}, "metric"), ({"count": -1}, "count must be")],
)
def test_manifest_field_errors(tmp_path: Path, changes: dict[str, object], message: str) -> None:
    path = write(tmp_path)
    _rewrite_manifest(path, **changes)
    with pytest.raises(b.BundleError, match=message):
        b.read_bundle(path, verify_checksums=False)


def test_missing_listed_file_and_bad_json(tmp_path: Path) -> None:
    path = write(tmp_path)
    (path / b.COUNTS).unlink()
    with pytest.raises(b.BundleError, match="counts.npy: listed in the manifest but missing"):
        b.read_bundle(path)
    (path / b.MANIFEST).write_text("{not json")
    with pytest.raises(b.BundleError, match="not valid JSON"):
        b.read_bundle(path)


def test_pickled_arrays_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path)
    np.save(path / b.VECTORS, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(b.BundleError, match="not a readable .npy"):
        b.read_bundle(path, verify_checksums=False)


def test_non_finite_vectors_are_refused_on_load(tmp_path: Path) -> None:
    path = write(tmp_path)
    v = np.load(path / b.VECTORS)
    v[7, 3] = np.inf
    np.save(path / b.VECTORS, v)
    with pytest.raises(b.BundleError, match="row 7 contains NaN or Inf"):
        b.read_bundle(path, verify_checksums=False)


def test_pooling_weights_round_trip_and_never_touch_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(20, 4)).astype(np.float32)
    weights = rng.uniform(0.1, 1.0, size=20)
    path = w.write_bundle(tmp_path, "t", vectors, [f"k{i}" for i in range(20)], w.BundleSpec(weights=weights, pooling={"weights": "sif", "a": 1e-3}))
    got = b.read_bundle(path)
    assert got.weights is not None and got.weights.dtype == np.float32
    assert np.array_equal(got.weights, weights.astype(np.float32))
    assert got.pooling == {"weights": "sif", "a": 1e-3}
    assert np.array_equal(got.vectors, vectors)  # weights are for pooling only
    assert b.WEIGHTS in b.read_manifest(path)["files"]  # checksummed like every file
    assert b.read_bundle(write(tmp_path)).weights is None  # optional


@pytest.mark.parametrize(
    ("weights", "message"),
    [(np.full(20, -1.0), "must be finite and >= 0"), (np.full(20, np.nan), "must be finite and >= 0"), (np.ones(19), r"expected float32 \(20,\)")],
)
def test_bad_pooling_weights_are_refused_by_writer_and_reader(tmp_path: Path, weights: np.ndarray, message: str) -> None:
    refused_by_writer_and_reader(tmp_path, "weights", weights, np.ones(20), b.WEIGHTS, message)


def refused_by_writer_and_reader(tmp_path: Path, field: str, bad: np.ndarray, good: np.ndarray, name: str, message: str) -> None:
    """The writer refuses ``BundleSpec(field=bad)`` (nothing published); the same array planted as
    ``name`` in a good bundle (checksum updated) is refused on load, both with ``message``."""
    vectors = np.ones((20, 4), np.float32)
    keys = [f"k{i}" for i in range(20)]
    with pytest.raises(ValueError, match=message):
        w.write_bundle(tmp_path, "t", vectors, keys, w.BundleSpec(**{field: bad}))
    assert b.list_versions(tmp_path, "t") == []
    path = w.write_bundle(tmp_path, "t", vectors, keys, w.BundleSpec(**{field: good}))
    np.save(path / name, bad.astype(np.float32), allow_pickle=False)
    _rewrite_manifest(path, files={**b.read_manifest(path)["files"], name: b.sha256_file(path / name)})
    with pytest.raises(b.BundleError, match=message):
        b.read_bundle(path)


def test_common_component_round_trips_and_never_touches_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(20, 4)).astype(np.float32)
    u = np.array([[0.6, 0.8, 0.0, 0.0]], np.float32)
    path = w.write_bundle(tmp_path, "t", vectors, [f"k{i}" for i in range(20)], w.BundleSpec(weights=np.ones(20), component=u))
    got = b.read_bundle(path)
    assert got.component is not None and np.array_equal(got.component, u)
    assert np.array_equal(got.vectors, vectors)
    assert b.COMPONENT in b.read_manifest(path)["files"]  # checksummed like every file
    assert b.read_bundle(write(tmp_path)).component is None  # optional


@pytest.mark.parametrize(
    ("component", "message"),
    [(np.array([[1.0, 0, 0, 0], [1.0, 0, 0, 0]]), "orthonormal"), (np.array([[2.0, 0, 0, 0]]), "orthonormal"),
     (np.array([[np.nan, 0, 0, 0]]), "NaN or Inf"), (np.ones((1, 3)), r"expected float32 \(k, 4\)"),
     (np.ones(4) / 2, r"expected float32 \(k, 4\)")],
)
def test_bad_common_component_is_refused_by_writer_and_reader(tmp_path: Path, component: np.ndarray, message: str) -> None:
    refused_by_writer_and_reader(tmp_path, "component", component, np.eye(1, 4), b.COMPONENT, message)


def test_keys_idx_indexes_exactly_the_keys_txt_written(tmp_path: Path) -> None:
    """One serialiser of keys.txt: the writer's keys.idx verifies against the keys.txt beside it."""
    keys = ["a", "ünï\u2028code", "b\x1cc", "z" * 300]
    path = w.write_bundle(tmp_path, "t", np.ones((4, 2), np.float32), keys)
    got = b.read_bundle(path, key_index=True)
    assert got.key_index is not None and [got.key_index.get(k) for k in keys] == [0, 1, 2, 3]
    assert b.KEY_INDEX in b.read_manifest(path)["files"]


def test_a_bundle_written_before_the_format_core_still_loads(tmp_path: Path) -> None:
    """On-disk format 1 is unchanged: a bundle laid out by hand as the first writers wrote it
    (no keys.idx, no weights, no pooling entry) loads, and gets a key index built at load."""
    import hashlib

    path = tmp_path / "old" / "1"
    path.mkdir(parents=True)
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(path / "vectors.npy", vectors, allow_pickle=False)
    (path / "keys.txt").write_bytes(b"cat\ndog\nfish\n")
    files = {f: hashlib.sha256((path / f).read_bytes()).hexdigest() for f in ("vectors.npy", "keys.txt")}
    manifest = {"format": "embserve-bundle/1", "name": "old", "version": 1, "vector_size": 4, "count": 3, "dtype": "float32",
                "metric": "cosine", "created_at": "2026-11-01T00:00:00+00:00", "source": {}, "index": None, "files": files}
    (path / "manifest.json").write_text(json.dumps(manifest))
    got = b.read_bundle(path, key_index=True)
    assert list(got.keys) == ["cat", "dog", "fish"] and got.weights is None and got.pooling == {}
    assert got.key_index is not None and got.key_index.get("fish") == 2
    assert np.array_equal(got.vectors, vectors)


def test_keys_idx_size_is_what_the_capacity_model_budgets(tmp_path: Path) -> None:
    """bench/capacity.py budgets keys from keyfile.file_bytes: the file the writer makes has that size."""
    from embserve_format import keyfile

    keys = [f"key{i}" for i in range(1000)]
    path = w.write_bundle(tmp_path, "t", np.ones((1000, 2), np.float32), keys)
    assert (path / b.KEY_INDEX).stat().st_size == keyfile.file_bytes(1000, (path / b.KEYS).stat().st_size)

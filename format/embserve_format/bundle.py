"""Table bundle format 1: writer, reader and validator (numpy + json only).

A bundle is one immutable version of one table::

    <tables>/<name>/<version>/
        manifest.json   format, name, version, vector_size, count, dtype, metric, created_at,
                        source, index, files {file name: sha256}, extras
        vectors.npy     float32 (count, vector_size), raw vectors, row i = id i
        keys.txt        UTF-8, one key per line, line i = id i
        counts.npy      optional int64 (count,) corpus frequencies
        index.faiss     optional prebuilt FAISS index whose ids are the rows
        keys.idx        compact key index over keys.txt (:mod:`embserve_format.keyindex`; written by
                        every writer, built at load for older bundles without it)
        weights.npy     optional float32 (count,) per-row pooling weights (text -> one vector);
                        never applied to lookups; the manifest's "pooling" entry says what they are
        component.npy   optional float32 (k, vector_size) orthonormal rows: the common component
                        whose projection pooling removes from each text vector (SIF's second step)
        eval.json       optional quality report
        ...             other optional files listed in the manifest (tokenizer.json, ngrams.npy)

Bundles are written into a hidden sibling directory, fsynced and renamed into place, so a
crash never leaves a half-written version visible; readers ignore hidden directories.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embserve_format import keyfile, keyindex

logger = logging.getLogger(__name__)

FORMAT = "embserve-bundle/1"
METRICS = ("cosine", "dot")
MANIFEST = "manifest.json"
VECTORS = "vectors.npy"
KEYS = "keys.txt"
COUNTS = "counts.npy"
INDEX = "index.faiss"
EVAL = "eval.json"
TOKENIZER = "tokenizer.json"  # optional: a language model's tokenizer (token tables)
NGRAMS = "ngrams.npy"  # optional: fastText n-gram buckets (missing-key policy "subword")
KEY_INDEX = "keys.idx"  # compact key -> row index over keys.txt (built at load when absent)
WEIGHTS = "weights.npy"  # optional: per-row pooling weights, float32 (count,), finite, >= 0
COMPONENT = "component.npy"  # optional: common component(s) pooling removes, float32 (k, vector_size), orthonormal rows
COMPONENT_TOLERANCE = 1e-4  # |U U^T - I| allowed: float32 rows of unit length, mutually orthogonal
REQUIRED_FILES = (VECTORS, KEYS)

# Table names become directory names: keep them to a safe, portable alphabet (no "..", no "/").
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_REQUIRED_FIELDS = ("format", "name", "version", "vector_size", "count", "dtype", "metric", "files")
_HASH_CHUNK = 1 << 16  # bytes hashed at a time (sha256_file)



class BundleError(ValueError):
    """A bundle is malformed or inconsistent; the message names the file and the problem."""


class ChecksumError(BundleError):
    """A bundle file does not match the sha256 recorded in its manifest (data loss)."""


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid table name, else raise ``ValueError``."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise ValueError(
            f"invalid table name {name!r}: use 1-64 characters from A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit"
        )
    return name


def validate_version(version: int) -> int:
    """Return ``version`` if it is a positive integer, else raise ``ValueError``."""
    if isinstance(version, bool) or not isinstance(version, int) or version <= 0:
        raise ValueError(f"invalid table version {version!r}: must be a positive integer")
    return version


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks (files can be GBs) into one small buffer.

    The buffer stays under glibc's mmap threshold (128 KiB): a 4 MiB ``read()`` per chunk was
    mapped and unmapped, which raised that threshold to 4 MiB, after which a table load's later
    temporaries of a few MB (the key index check) stayed on the heap (measured: +5 MB resident).
    Reading into one 64 KiB buffer is also ~2x faster here.
    """
    h = hashlib.sha256()
    buf = bytearray(_HASH_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def valid_key(key: object) -> bool:
    """The ONE key rule: a non-empty string without line breaks (keys.txt holds one key per line).

    Importers drop or rename keys that break it, the writer refuses them, and the server refuses
    them in requests (they could never be in a table).
    """
    return isinstance(key, str) and bool(key) and "\n" not in key and "\r" not in key


# ---------------------------------------------------------------------------------------------
# Discovery


def list_tables(tables_dir: str | os.PathLike[str]) -> list[str]:
    """Names of the table directories under ``tables_dir`` (hidden and invalid names ignored)."""
    root = Path(tables_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _NAME_RE.match(p.name))


def list_versions(tables_dir: str | os.PathLike[str], name: str) -> list[int]:
    """Visible version numbers of table ``name``, ascending. Hidden (in-progress) dirs are ignored."""
    table_dir = Path(tables_dir) / validate_name(name)
    if not table_dir.is_dir():
        return []
    versions = []
    for p in table_dir.iterdir():
        if p.is_dir() and p.name.isdigit() and int(p.name) > 0:
            versions.append(int(p.name))
    return sorted(versions)


def bundle_path(tables_dir: str | os.PathLike[str], name: str, version: int) -> Path:
    return Path(tables_dir) / validate_name(name) / str(validate_version(version))


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class Bundle:
    """One loaded bundle. ``vectors`` is read-only (memory-mapped by default)."""

    path: Path
    manifest: dict[str, Any]
    vectors: np.ndarray  # (count, vector_size) float32
    keys: Sequence[str]  # count keys, keys[i] names row i (a list, or the key index's id -> key view)
    counts: np.ndarray | None = None  # (count,) int64
    checksum: str = ""  # sha256 of manifest.json
    key_index: keyindex.KeyIndex | None = None  # with read_bundle(key_index=True)
    weights: np.ndarray | None = None  # (count,) float32 pooling weights (weights.npy), or None
    component: np.ndarray | None = None  # (k, vector_size) float32 common component pooling removes (component.npy)

    @property
    def pooling(self) -> dict[str, Any]:
        """The manifest's "pooling" entry: what ``weights`` are (e.g. {"weights": "sif", "a": 0.001})."""
        return dict(self.manifest.get("pooling") or {})

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> int:
        return int(self.manifest["version"])

    @property
    def vector_size(self) -> int:
        return int(self.manifest["vector_size"])

    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    @property
    def metric(self) -> str:
        return str(self.manifest["metric"])

    @property
    def index_info(self) -> dict[str, Any]:
        return dict(self.manifest.get("index") or {})

    @property
    def extras(self) -> dict[str, Any]:
        return dict(self.manifest.get("extras") or {})

    def file(self, name: str) -> Path | None:
        """Path of an optional bundle file listed in the manifest, or None."""
        return self.path / name if name in self.manifest["files"] else None


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``manifest.json`` of the bundle directory ``path``.

    Raises:
        BundleError: missing file, bad JSON, wrong format tag or missing/invalid fields.
    """
    mpath = Path(path) / MANIFEST
    try:
        raw = mpath.read_bytes()
    except OSError as exc:
        raise BundleError(f"{mpath}: cannot read manifest ({exc.strerror or exc})") from exc
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{mpath}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath}: expected a JSON object, got {type(manifest).__name__}")
    missing = [f for f in _REQUIRED_FIELDS if f not in manifest]
    if missing:
        raise BundleError(f"{mpath}: missing field(s) {', '.join(missing)}")
    if manifest["format"] != FORMAT:
        raise BundleError(f"{mpath}: format is {manifest['format']!r}, this reader needs {FORMAT!r}")
    if manifest["dtype"] != "float32":
        raise BundleError(f"{mpath}: dtype is {manifest['dtype']!r}, must be 'float32'")
    if manifest["metric"] not in METRICS:
        raise BundleError(f"{mpath}: metric {manifest['metric']!r} is not one of {METRICS}")
    for f in ("vector_size", "count", "version"):
        v = manifest[f]
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise BundleError(f"{mpath}: {f} must be a positive integer, got {v!r}")
    files = manifest["files"]
    if not isinstance(files, dict) or any(f not in files for f in REQUIRED_FILES):
        raise BundleError(f"{mpath}: 'files' must list {', '.join(REQUIRED_FILES)} with sha256 sums")
    for fname in files:
        if not isinstance(fname, str) or "/" in fname or fname.startswith("."):
            raise BundleError(f"{mpath}: invalid file name {fname!r} in 'files'")
    return manifest


def read_keys(path: Path, count: int) -> list[str]:
    """Read ``keys.txt``: exactly ``count`` unique UTF-8 lines."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise BundleError(f"{path}: cannot read keys ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise BundleError(f"{path}: not valid UTF-8 at byte {exc.start}") from exc
    # split("\n"), not splitlines(): keys may legitimately contain \x1c, \u2028 and friends.
    keys = text.split("\n")
    if keys and keys[-1] == "":
        keys.pop()
    if len(keys) != count:
        raise BundleError(f"{path}: has {len(keys)} keys, manifest says count={count}")
    if (dup := first_duplicate(keys)) is not None:
        raise BundleError(f"{path}: duplicate key {dup[1]!r} at line {dup[0] + 1}")
    return keys


def first_duplicate(keys: Sequence[str]) -> tuple[int, str] | None:
    """The first ``(row, key)`` whose key appeared on an earlier row, or None: the ONE duplicate check."""
    if len(set(keys)) == len(keys):
        return None
    seen: set[str] = set()
    for i, k in enumerate(keys):
        if k in seen:
            return i, k
        seen.add(k)
    return None  # unreachable: the set was shorter than the list


def read_bundle(
    path: str | os.PathLike[str],
    *,
    verify_checksums: bool = True,
    mmap: bool = True,
    key_index: bool = False,
    like: Bundle | None = None,
) -> Bundle:
    """Load and validate the bundle directory ``path``.

    Args:
        path: a ``<tables>/<name>/<version>`` directory.
        verify_checksums: compare every listed file with its sha256 in the manifest.
        mmap: memory-map ``vectors.npy`` (read-only) instead of reading it into memory.
        key_index: map the keys through the compact key index (``keys.idx``, built in memory
            when the bundle has none) instead of reading a list of str; ``keys`` is then its
            id -> key view. What a server does: no Python object per key.
        like: a bundle read before with ``key_index``: when its keys.txt has the same sha256,
            its key index is shared instead of mapping another (a training run's snapshots).

    Returns:
        The validated :class:`Bundle`.

    Raises:
        BundleError: any inconsistency (shapes, dtype, key count, missing files).
        ChecksumError: a file whose sha256 differs from the manifest.
    """
    path = Path(path)
    manifest = read_manifest(path)
    if path.name.isdigit() and int(path.name) != manifest["version"]:
        raise BundleError(f"{path}: directory says version {path.name}, manifest says {manifest['version']}")
    for fname, digest in manifest["files"].items():
        fpath = path / fname
        if not fpath.is_file():
            raise BundleError(f"{fpath}: listed in the manifest but missing")
        if verify_checksums:
            try:
                actual = sha256_file(fpath)
            except OSError as exc:
                raise BundleError(f"{fpath}: cannot read ({exc.strerror or exc})") from exc
            if actual != digest:
                raise ChecksumError(f"{fpath}: sha256 {actual[:12]}… does not match manifest {str(digest)[:12]}…")
    count, dim = manifest["count"], manifest["vector_size"]
    vectors = _load_array(path / VECTORS, mmap)
    if vectors.dtype != np.float32 or vectors.shape != (count, dim):
        raise BundleError(
            f"{path / VECTORS}: is {vectors.dtype} {vectors.shape}, manifest says float32 ({count}, {dim})"
        )
    if not vectors.flags.c_contiguous:  # each row one run of bytes: what a lookup reads (and np.save of a C array writes)
        raise BundleError(f"{path / VECTORS}: rows are stored in Fortran order; save the array in C order (np.ascontiguousarray)")
    check_finite(vectors, str(path / VECTORS))
    index = None
    if key_index:
        index = _key_index(path, manifest, like, verify_checksums)
        keys: Sequence[str] = index.keys
    else:
        keys = read_keys(path / KEYS, count)
    counts = None
    if COUNTS in manifest["files"]:
        counts = _load_array(path / COUNTS, False)
        if counts.dtype != np.int64 or counts.shape != (count,):
            raise BundleError(f"{path / COUNTS}: is {counts.dtype} {counts.shape}, expected int64 ({count},)")
    weights = None
    if WEIGHTS in manifest["files"]:
        weights = _load_array(path / WEIGHTS, False)
        check_weights(weights, count, str(path / WEIGHTS))
    component = None
    if COMPONENT in manifest["files"]:
        component = _load_array(path / COMPONENT, False)
        check_component(component, dim, str(path / COMPONENT))
    checksum = hashlib.sha256((path / MANIFEST).read_bytes()).hexdigest()
    return Bundle(path=path, manifest=manifest, vectors=vectors, keys=keys, counts=counts, checksum=checksum, key_index=index, weights=weights,
                  component=component)


def _key_index(path: Path, manifest: dict[str, Any], like: Bundle | None, verified: bool) -> keyindex.KeyIndex:
    """The bundle's key index: shared with ``like`` (same keys.txt), mapped from keys.idx, or built."""
    files = manifest["files"]
    if like is not None and like.key_index is not None and verified and all(like.manifest["files"].get(f) == files.get(f) for f in (KEYS, KEY_INDEX)):
        return like.key_index  # the same sha256s: the same keys (and the same index), kept once
    stored = path / KEY_INDEX if KEY_INDEX in files else None
    try:
        index = keyfile.load(path / KEYS, stored)
    except keyindex.KeyIndexError as exc:
        if stored is not None:
            # Name what is wrong with keys.txt itself (a line count, a duplicate), when it is.
            _check_key_count(path, manifest, _built_key_index(path))
        raise BundleError(str(exc)) from exc
    _check_key_count(path, manifest, index)
    return index


def _built_key_index(path: Path) -> keyindex.KeyIndex:
    try:
        return keyfile.load(path / KEYS, None)
    except keyindex.KeyIndexError as exc:
        raise BundleError(str(exc)) from exc


def _check_key_count(path: Path, manifest: dict[str, Any], index: keyindex.KeyIndex) -> None:
    if index.count != manifest["count"]:
        raise BundleError(f"{path / KEYS}: has {index.count} keys, manifest says count={manifest['count']}")


def check_finite(vectors: np.ndarray, where: str, chunk: int = 1 << 16) -> None:
    """Refuse NaN/Inf rows (the ONE scan, for readers and writers); in chunks of ``chunk`` values, so
    no (count, dim) temporary doubles the peak memory.

    Raises:
        BundleError: naming ``where`` and the first bad row.
    """
    row = first_nonfinite_row(vectors, chunk)
    if row is not None:
        raise BundleError(f"{where}: row {row} contains NaN or Inf")


def first_nonfinite_row(vectors: np.ndarray, chunk: int = 1 << 16) -> int | None:
    """The first row holding NaN or Inf, or None; scanned in chunks of about ``chunk`` values.

    The chunk counts values, not rows: its boolean temporary stays under glibc's mmap threshold
    (128 KiB), so it is reused from the heap; a temporary of megabytes (65,536 rows x 256 dims:
    16 MB) would be mapped, and its release raises that threshold to its size, after which the
    load's later temporaries of a few MB stay on the heap for good (measured: +6 MB resident).
    """
    step = max(1, chunk // max(1, vectors.shape[1] if vectors.ndim > 1 else 1))
    for start in range(0, len(vectors), step):
        ok = np.isfinite(vectors[start : start + step]).all(axis=1)
        if not ok.all():
            return start + int(np.argmin(ok))
    return None


def check_weights(weights: np.ndarray, count: int, where: str) -> None:
    """Pooling weights must be float32 (count,), finite and >= 0.

    Raises:
        BundleError: naming ``where`` and what was wrong.
    """
    if weights.dtype != np.float32 or weights.shape != (count,):
        raise BundleError(f"{where}: is {weights.dtype} {weights.shape}, expected float32 ({count},)")
    bad = ~np.isfinite(weights) | (weights < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise BundleError(f"{where}: weight {i} is {weights[i]!r}; pooling weights must be finite and >= 0")


def check_component(component: np.ndarray, dim: int, where: str) -> None:
    """A common component must be float32 (k, dim), k >= 1, with orthonormal rows.

    Raises:
        BundleError: naming ``where`` and what was wrong.
    """
    if component.dtype != np.float32 or component.ndim != 2 or component.shape[0] < 1 or component.shape[1] != dim:
        raise BundleError(f"{where}: is {component.dtype} {component.shape}, expected float32 (k, {dim}) with k >= 1")
    if not np.isfinite(component).all():
        raise BundleError(f"{where}: contains NaN or Inf")
    gram = component.astype(np.float64) @ component.T.astype(np.float64)
    error = float(np.abs(gram - np.eye(len(component))).max())
    if error > COMPONENT_TOLERANCE:
        raise BundleError(f"{where}: rows must be orthonormal (unit length, mutually orthogonal); "
                          f"U U^T differs from the identity by {error:.3g}")


def _load_array(path: Path, mmap: bool) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        # A truncated .npy makes np.load raise ValueError ("cannot reshape"/"mmap length") or EOFError.
        raise BundleError(f"{path}: not a readable .npy array ({exc})") from exc
    if not isinstance(arr, np.ndarray):
        raise BundleError(f"{path}: expected a single array")
    return arr

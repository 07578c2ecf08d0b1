"""Table bundle format 1: writer, reader and validator (numpy + json only).

A bundle is one immutable version of one table::

    <tables>/<name>/<version>/
        manifest.json   format, name, version, vector_size, count, dtype, metric, created_at,
                        source, index, files {file name: sha256}, extras
        vectors.npy     float32 (count, vector_size), raw vectors, row i = id i
        keys.txt        UTF-8, one key per line, line i = id i
        counts.npy      optional int64 (count,) corpus frequencies
        index.faiss     optional prebuilt FAISS index whose ids are the rows
        eval.json       optional quality report
        ...             other optional files listed in the manifest (tokenizer.json, ngrams.npy)

Bundles are written into a hidden sibling directory, fsynced and renamed into place, so a
crash never leaves a half-written version visible; readers ignore hidden directories.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
REQUIRED_FILES = (VECTORS, KEYS)

# Table names become directory names: keep them to a safe, portable alphabet (no "..", no "/").
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_REQUIRED_FIELDS = ("format", "name", "version", "vector_size", "count", "dtype", "metric", "files")
_HASH_CHUNK = 1 << 22

FileContent = bytes | str | Callable[[Path], None]


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
    """Hex sha256 of a file's bytes, read in chunks (files can be GBs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
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
    keys: list[str]  # count keys, keys[i] names row i
    counts: np.ndarray | None = None  # (count,) int64
    checksum: str = ""  # sha256 of manifest.json

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
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        dup = next(k for k in keys if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise BundleError(f"{path}: duplicate key {dup!r}")
    return keys


def read_bundle(
    path: str | os.PathLike[str], *, verify_checksums: bool = True, mmap: bool = True
) -> Bundle:
    """Load and validate the bundle directory ``path``.

    Args:
        path: a ``<tables>/<name>/<version>`` directory.
        verify_checksums: compare every listed file with its sha256 in the manifest.
        mmap: memory-map ``vectors.npy`` (read-only) instead of reading it into memory.

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
    _check_finite(path / VECTORS, vectors)
    keys = read_keys(path / KEYS, count)
    counts = None
    if COUNTS in manifest["files"]:
        counts = _load_array(path / COUNTS, False)
        if counts.dtype != np.int64 or counts.shape != (count,):
            raise BundleError(f"{path / COUNTS}: is {counts.dtype} {counts.shape}, expected int64 ({count},)")
    checksum = hashlib.sha256((path / MANIFEST).read_bytes()).hexdigest()
    return Bundle(path=path, manifest=manifest, vectors=vectors, keys=keys, counts=counts, checksum=checksum)


def _check_finite(path: Path, vectors: np.ndarray, chunk: int = 1 << 16) -> None:
    """Refuse NaN/Inf rows; in chunks, so no (count, dim) temporary doubles the peak memory."""
    for start in range(0, len(vectors), chunk):
        ok = np.isfinite(vectors[start : start + chunk]).all(axis=1)
        if not ok.all():
            raise BundleError(f"{path}: row {start + int(np.argmin(ok))} contains NaN or Inf")


def _load_array(path: Path, mmap: bool) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        # A truncated .npy makes np.load raise ValueError ("cannot reshape"/"mmap length") or EOFError.
        raise BundleError(f"{path}: not a readable .npy array ({exc})") from exc
    if not isinstance(arr, np.ndarray):
        raise BundleError(f"{path}: expected a single array")
    return arr


# ---------------------------------------------------------------------------------------------
# Writing


@dataclass
class BundleSpec:
    """Everything :func:`write_bundle` needs besides vectors and keys."""

    metric: str = "cosine"
    counts: np.ndarray | None = None
    source: dict[str, Any] = field(default_factory=dict)
    index: dict[str, Any] | None = None  # manifest "index" entry (factory string, search defaults)
    extras: dict[str, Any] = field(default_factory=dict)
    # Extra files: bytes/str content, or a callable that writes the file at the given path.
    files: Mapping[str, FileContent] = field(default_factory=dict)


def next_version(tables_dir: str | os.PathLike[str], name: str) -> int:
    versions = list_versions(tables_dir, name)
    return (versions[-1] + 1) if versions else 1


def write_bundle(
    tables_dir: str | os.PathLike[str],
    name: str,
    vectors: np.ndarray,
    keys: Iterable[str],
    spec: BundleSpec | None = None,
    *,
    version: int | None = None,
) -> Path:
    """Write a new bundle atomically and return its final directory.

    Args:
        tables_dir: root directory holding one sub-directory per table.
        name: table name (validated, becomes a directory name).
        vectors: (count, vector_size) array, converted to C-contiguous float32.
        keys: count unique keys without newlines; keys[i] names row i.
        spec: metric, counts, source, index metadata, extras and extra files.
        version: explicit version; default is one above the newest existing version.

    Returns:
        Path of the published ``<tables_dir>/<name>/<version>`` directory.

    Raises:
        ValueError: invalid name/version/metric, shape mismatch, bad keys, version already exists.
    """
    spec = spec or BundleSpec()
    validate_name(name)
    if spec.metric not in METRICS:
        raise ValueError(f"metric {spec.metric!r} is not one of {METRICS}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise ValueError(f"vectors must be a non-empty 2-D array, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        bad = int(np.argwhere(~np.isfinite(vectors))[0][0])
        raise ValueError(f"vectors row {bad} contains NaN or Inf")
    keys = list(keys)
    _check_keys(keys, vectors.shape[0])
    counts = None
    if spec.counts is not None:
        counts = np.ascontiguousarray(spec.counts, dtype=np.int64)
        if counts.shape != (vectors.shape[0],):
            raise ValueError(f"counts has shape {counts.shape}, expected ({vectors.shape[0]},)")
    reserved = {MANIFEST, VECTORS, KEYS, COUNTS}
    for fname in spec.files:
        if fname in reserved or "/" in fname or fname.startswith("."):
            raise ValueError(f"extra file name {fname!r} is reserved or invalid")

    table_dir = Path(tables_dir) / name
    table_dir.mkdir(parents=True, exist_ok=True)
    version = validate_version(version) if version is not None else next_version(tables_dir, name)
    final = table_dir / str(version)
    if final.exists():
        raise ValueError(f"{final} already exists: versions are immutable, pick a new version")

    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=table_dir))
    try:
        np.save(tmp / VECTORS, vectors, allow_pickle=False)
        (tmp / KEYS).write_bytes(("\n".join(keys) + "\n").encode("utf-8"))
        if counts is not None:
            np.save(tmp / COUNTS, counts, allow_pickle=False)
        for fname, content in spec.files.items():
            target = tmp / fname
            if callable(content):
                content(target)
            elif isinstance(content, str):
                target.write_bytes(content.encode("utf-8"))
            else:
                target.write_bytes(content)
        file_names = sorted(p.name for p in tmp.iterdir())
        manifest = {
            "format": FORMAT,
            "name": name,
            "version": version,
            "vector_size": int(vectors.shape[1]),
            "count": int(vectors.shape[0]),
            "dtype": "float32",
            "metric": spec.metric,
            "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "source": spec.source,
            "index": spec.index,
            "extras": spec.extras,
            "files": {f: sha256_file(tmp / f) for f in file_names},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        for f in tmp.iterdir():
            _fsync(f)
        _fsync(tmp)
        os.rename(tmp, final)  # atomic publish; fails if a concurrent writer took the version
        _fsync(table_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote bundle %s (%d x %d)", final, vectors.shape[0], vectors.shape[1])
    return final


def _check_keys(keys: list[str], count: int) -> None:
    if len(keys) != count:
        raise ValueError(f"got {len(keys)} keys for {count} vectors")
    seen: set[str] = set()
    for i, k in enumerate(keys):
        if not valid_key(k):
            raise ValueError(f"key {i} ({k!r}) must be a non-empty string without newlines")
        if k in seen:
            raise ValueError(f"duplicate key {k!r} at row {i}")
        seen.add(k)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

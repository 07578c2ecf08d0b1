"""Writing table bundles (format 1, see :mod:`embserve_format.bundle`): atomically, and never twice.

A bundle is built in a hidden sibling directory (readers ignore hidden directories), every file and
the directory fsynced, then renamed into place by :func:`publish`, which takes the next free version:
a writer that loses the race to a version (another import, a training run, a snapshot) moves on to
the next one, so concurrent writers all publish and a crash never leaves half a version visible.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from embserve_format import keyfile
from embserve_format.bundle import (
    COMPONENT,
    COUNTS,
    FORMAT,
    KEY_INDEX,
    KEYS,
    MANIFEST,
    METRICS,
    VECTORS,
    WEIGHTS,
    check_component,
    check_finite,
    check_weights,
    first_duplicate,
    list_versions,
    sha256_file,
    valid_key,
    validate_name,
    validate_version,
)

logger = logging.getLogger(__name__)

# Writers that lose the race to a version move on to the next one; this bounds how often.
PUBLISH_ATTEMPTS = 64

FileContent = bytes | str | Callable[[Path], None]  # a file's bytes, text, or a function that writes it



@dataclass
class BundleSpec:
    """Everything :func:`write_bundle` needs besides vectors and keys."""

    metric: str = "cosine"
    counts: np.ndarray | None = None
    source: dict[str, Any] = field(default_factory=dict)
    index: dict[str, Any] | None = None  # manifest "index" entry (factory string, search defaults)
    extras: dict[str, Any] = field(default_factory=dict)
    weights: np.ndarray | None = None  # (count,) per-row pooling weights -> weights.npy
    pooling: dict[str, Any] | None = None  # manifest "pooling": what the weights are
    component: np.ndarray | None = None  # (k, vector_size) orthonormal common component -> component.npy
    key_index: bool = True  # write keys.idx (servers map it instead of building one at load)
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
        spec: metric, counts, pooling weights, source, index metadata, extras and extra files.
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
    check_finite(vectors, "vectors")
    keys = list(keys)
    _check_keys(keys, vectors.shape[0])
    counts = None
    if spec.counts is not None:
        counts = np.ascontiguousarray(spec.counts, dtype=np.int64)
        if counts.shape != (vectors.shape[0],):
            raise ValueError(f"counts has shape {counts.shape}, expected ({vectors.shape[0]},)")
    weights = None
    if spec.weights is not None:
        weights = np.ascontiguousarray(spec.weights, dtype=np.float32)
        check_weights(weights, vectors.shape[0], "weights")
    component = None
    if spec.component is not None:
        component = np.ascontiguousarray(spec.component, dtype=np.float32)
        check_component(component, vectors.shape[1], "component")
    reserved = {MANIFEST, VECTORS, KEYS, COUNTS, WEIGHTS, COMPONENT} | ({KEY_INDEX} if spec.key_index else set())
    for fname in spec.files:
        if fname in reserved or "/" in fname or fname.startswith("."):
            raise ValueError(f"extra file name {fname!r} is reserved or invalid")

    table_dir = Path(tables_dir) / name
    table_dir.mkdir(parents=True, exist_ok=True)
    if version is not None:
        validate_version(version)
        if (table_dir / str(version)).exists():
            raise ValueError(f"{table_dir / str(version)} already exists: versions are immutable, pick a new version")

    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=table_dir))
    try:
        np.save(tmp / VECTORS, vectors, allow_pickle=False)
        keys_bytes = ("\n".join(keys) + "\n").encode("utf-8")  # the ONE serialiser of keys.txt
        (tmp / KEYS).write_bytes(keys_bytes)
        if spec.key_index:
            keyfile.write(keyfile.build(keys_bytes), tmp / KEY_INDEX)  # indexes exactly those bytes
        if counts is not None:
            np.save(tmp / COUNTS, counts, allow_pickle=False)
        if weights is not None:
            np.save(tmp / WEIGHTS, weights, allow_pickle=False)
        if component is not None:
            np.save(tmp / COMPONENT, component, allow_pickle=False)
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
            "vector_size": int(vectors.shape[1]),
            "count": int(vectors.shape[0]),
            "dtype": "float32",
            "metric": spec.metric,
            "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "source": spec.source,
            "index": spec.index,
            "extras": spec.extras,
            **({"pooling": spec.pooling} if spec.pooling is not None else {}),
            "files": {f: sha256_file(tmp / f) for f in file_names},
        }
        for f in tmp.iterdir():
            _fsync(f)
        final = publish(tmp, manifest, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote bundle %s (%d x %d)", final, vectors.shape[0], vectors.shape[1])
    return final


def publish(tmp: Path, manifest: dict[str, Any], version: int | None = None) -> Path:
    """Publish the finished hidden bundle directory ``tmp`` as the next version of its table.

    The one way a version becomes visible (imports, training runs and their snapshots all go
    through :func:`write_bundle`, which calls this). ``rename`` of a directory onto an existing,
    non-empty version fails instead of replacing it, so two writers can never both get version N:
    the loser rewrites the manifest with the next free version and tries again.

    Args:
        tmp: hidden sibling of the versions, every file written and fsynced, no manifest yet.
        manifest: the manifest without "version" (it is set to the version taken).
        version: an explicit version (no retry: an error if taken), or None for the next free one.

    Returns:
        The published ``<table>/<version>`` directory.

    Raises:
        ValueError: the explicit version exists, or PUBLISH_ATTEMPTS versions were taken in a row.
    """
    table_dir = tmp.parent
    for _ in range(PUBLISH_ATTEMPTS if version is None else 1):
        taken = version if version is not None else next_version(table_dir.parent, table_dir.name)
        manifest = {**manifest, "version": taken}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _fsync(tmp / MANIFEST)
        _fsync(tmp)
        final = table_dir / str(taken)
        try:
            os.rename(tmp, final)  # atomic; ENOTEMPTY/EEXIST when another writer took the version
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            if version is not None:
                raise ValueError(f"{final} already exists: versions are immutable, pick a new version") from None
            logger.info("version %s of %s was taken by another writer; trying the next one", taken, table_dir.name)
            continue
        _fsync(table_dir)
        return final
    raise ValueError(
        f"{table_dir}: {PUBLISH_ATTEMPTS} versions in a row were taken by concurrent writers; nothing published"
    )


def _check_keys(keys: list[str], count: int) -> None:
    if len(keys) != count:
        raise ValueError(f"got {len(keys)} keys for {count} vectors")
    for i, k in enumerate(keys):
        if not valid_key(k):
            raise ValueError(f"key {i} ({k!r}) must be a non-empty string without newlines")
    if (dup := first_duplicate(keys)) is not None:
        raise ValueError(f"duplicate key {dup[1]!r} at row {dup[0]}")


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Replace the file ``path`` with what ``write`` writes, never half-written: a hidden temp file
    beside it, fsynced, renamed over ``path``, then the directory fsynced (labels, checkpoints).

    Raises:
        OSError: the directory cannot be written; whatever ``write`` raises (the temp file is removed).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

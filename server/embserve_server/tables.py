"""Loading table bundles into searchable :class:`Table` objects, and the registry that serves them.

This is the ONLY server module that reads bundles or builds indexes. A loaded :class:`Table` is
immutable: a reload builds a new one next to it and swaps the registry's mapping in one
assignment, so in-flight calls finish on the version they started with.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
from embserve_client import bundle as bfmt

from embserve_server import index as vindex
from embserve_server.errors import TableUnavailableError, UnknownTableError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Table:
    """One loaded, validated, warmed table version."""

    bundle: bfmt.Bundle
    index: vindex.VectorIndex
    key_to_id: dict[str, int]
    keys: np.ndarray  # (count,) object array of str, for vectorised id -> key
    load_seconds: float
    extras: dict[str, Any] = field(default_factory=dict)  # loaded optional parts (subwords, tokenizer)
    # The raw rows as a plain ndarray over the same mapping: np.memmap's Python-level __getitem__
    # and __array_finalize__ would run on every lookup.
    raw: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.float32))

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def version(self) -> int:
        return self.bundle.version

    @property
    def vectors(self) -> np.ndarray:
        """Raw rows, (count, dim) float32, read-only and memory-mapped."""
        return self.raw

    @property
    def count(self) -> int:
        return self.bundle.count

    @property
    def dim(self) -> int:
        return self.bundle.vector_size

    @property
    def metric(self) -> str:
        return self.bundle.metric

    @property
    def nbytes(self) -> int:
        """Bytes of the bundle files this table maps or reads (vectors, index, keys...)."""
        return sum(p.stat().st_size for p in self.bundle.path.iterdir() if p.is_file())

    def ids_for(self, keys: Sequence[str]) -> np.ndarray:
        """Row ids of ``keys`` as int64, -1 for keys not in the table (no per-key bytecode)."""
        return np.fromiter(map(self.key_to_id.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))

    def row_bytes(self, i: int) -> bytes:
        """Raw row ``i`` as little-endian float32 bytes straight from the mapping (no numpy call).

        The bundle reader only accepts native float32, and bundles are little-endian (``<f4``).
        """
        size = self.dim * 4
        return self._raw_bytes[i * size : (i + 1) * size].tobytes()

    @functools.cached_property
    def _raw_bytes(self) -> memoryview:
        return memoryview(self.raw).cast("B")  # type: ignore[arg-type]  # ndarray is a buffer

    def index_rows(self, ids: np.ndarray) -> np.ndarray:
        """Rows as the index sees them (unit-norm for cosine tables) for valid ``ids``."""
        return self.index.rows[ids]


def load_table(path: Path, *, mmap: bool = True, verify_checksums: bool = True) -> Table:
    """Read, validate and warm one bundle directory.

    Raises:
        BundleError / ChecksumError: the bundle is malformed or corrupt.
        ValueError: the index does not match the vectors.
    """
    t0 = time.perf_counter()
    b = bfmt.read_bundle(path, verify_checksums=verify_checksums, mmap=mmap)
    info = b.index_info
    index_path = b.file(bfmt.INDEX)
    if index_path is not None:
        faiss_index = vindex.load_index(index_path, mmap=mmap)
    else:
        # Bundles should ship their index (building HNSW for 400k rows takes ~70 s); build Flat here.
        logger.warning("%s has no index.faiss: building an exact Flat index at load time", path)
        faiss_index = vindex.build_index(vindex.prepare_rows(b.vectors, b.metric), "Flat")
    idx = vindex.VectorIndex.from_index(
        faiss_index, ef_search=int(info.get("ef_search") or 64), nprobe=int(info.get("nprobe") or 8)
    )
    if idx.ntotal != b.count or idx.d != b.vector_size:
        raise bfmt.BundleError(
            f"{path}: index holds {idx.ntotal} x {idx.d} rows, vectors.npy is {b.count} x {b.vector_size}"
        )
    _check_index_rows(path, b, idx)
    keys = b.keys
    table = Table(
        bundle=b,
        index=idx,
        key_to_id=dict(zip(keys, range(len(keys)))),
        keys=np.array(keys, dtype=object),
        load_seconds=0.0,
        extras=_load_extras(b),
        raw=np.asarray(b.vectors),
    )
    idx.warm_up()
    seconds = time.perf_counter() - t0
    object.__setattr__(table, "load_seconds", seconds)
    logger.info("loaded table %s version %d (%d x %d, %s) in %.2fs", b.name, b.version, b.count, b.vector_size, vindex.describe(faiss_index), seconds)
    return table


def _check_index_rows(path: Path, b: bfmt.Bundle, idx: vindex.VectorIndex) -> None:
    """Spot-check that the index rows are the bundle's vectors (catches a swapped index file)."""
    probe = np.unique(np.linspace(0, b.count - 1, num=min(b.count, 16)).astype(np.int64))
    expected = vindex.prepare_rows(b.vectors[probe], b.metric)
    if not np.allclose(idx.rows[probe], expected, atol=1e-5):
        raise bfmt.BundleError(f"{path}: index.faiss rows do not match vectors.npy (index from another table?)")


# Loaders for optional bundle parts, registered by feature modules: name -> loader(bundle) -> object.
EXTRA_LOADERS: dict[str, Callable[[bfmt.Bundle], Any]] = {}


def _load_extras(b: bfmt.Bundle) -> dict[str, Any]:
    out = {}
    for name, loader in EXTRA_LOADERS.items():
        value = loader(b)
        if value is not None:
            out[name] = value
    return out


@dataclass(frozen=True)
class ReloadOutcome:
    table: str
    outcome: str  # "loaded", "unchanged", "refused"
    version: int
    message: str = ""


class TableRegistry:
    """The tables being served: newest valid version of each table under ``tables_dir``.

    Args:
        tables_dir: root holding ``<name>/<version>/`` bundles.
        default_table: table used when a request names none (default: the only/first table).
        mmap: memory-map vectors and flat index storage.
        verify_checksums: check every file's sha256 before serving it.
        pinned: serve exactly this version of these tables.
        on_change: called with (Table | None, ReloadOutcome) after every load attempt (metrics).
    """

    def __init__(
        self,
        tables_dir: str | Path,
        *,
        default_table: str | None = None,
        mmap: bool = True,
        verify_checksums: bool = True,
        pinned: dict[str, int] | None = None,
        on_change: Callable[[Table | None, ReloadOutcome], None] | None = None,
    ) -> None:
        self.tables_dir = Path(tables_dir)
        self._default = default_table
        self._mmap = mmap
        self._verify = verify_checksums
        self._pinned = dict(pinned or {})
        self.on_change = on_change  # settable: a forked worker points it at its own metrics
        self._tables: dict[str, Table] = {}  # replaced whole on every change, never mutated
        self._refused: dict[tuple[str, int], float] = {}  # (name, version) -> manifest mtime refused
        self._lock = threading.Lock()  # serialises reloads, never held by readers

    # -- reading side (request threads) --------------------------------------------------------

    def get(self, name: str = "") -> Table:
        """The serving version of table ``name`` ("" = default table).

        Raises:
            UnknownTableError: no such table.
            TableUnavailableError: nothing is loaded yet.
        """
        tables = self._tables
        if not name:
            if not tables:
                raise TableUnavailableError("no table is loaded yet")
            name = self.default_name(tables)
        table = tables.get(name)
        if table is None:
            raise UnknownTableError(name, sorted(tables))
        return table

    def default_name(self, tables: dict[str, Table] | None = None) -> str:
        tables = self._tables if tables is None else tables
        if self._default and self._default in tables:
            return self._default
        return sorted(tables)[0] if tables else ""

    def all(self) -> list[Table]:
        return [t for _, t in sorted(self._tables.items())]

    def __len__(self) -> int:
        return len(self._tables)

    # -- loading side (start-up, poller, admin RPC) ---------------------------------------------

    def reload(self, only: str | None = None) -> list[ReloadOutcome]:
        """Scan the tables directory and load every newer valid version (``only``: one table).

        A version that fails validation is refused and logged, the serving version stays, and the
        refused version is not retried until its manifest changes.
        """
        with self._lock:
            # Served tables too: a table directory that vanished must be noticed (and kept), not skipped.
            names = sorted({*bfmt.list_tables(self.tables_dir), *self._tables}) if only is None else [bfmt.validate_name(only)]
            outcomes = []
            new_tables = dict(self._tables)
            for name in names:
                found, table = self._reload_one(name, new_tables.get(name))
                if table is not None:
                    new_tables[name] = table
                for outcome in found:
                    if self.on_change:
                        self.on_change(table if outcome.outcome == "loaded" else None, outcome)
                outcomes.extend(found)
            self._tables = new_tables  # one assignment: readers see the old or the new mapping
            return outcomes

    def _reload_one(self, name: str, current: Table | None) -> tuple[list[ReloadOutcome], Table | None]:
        try:
            versions = bfmt.list_versions(self.tables_dir, name)
        except OSError as exc:
            logger.error("table %s: cannot list versions (%s); keeping what is served", name, exc)
            return [], None
        if name in self._pinned:
            versions = [v for v in versions if v == self._pinned[name]]
        outcomes: list[ReloadOutcome] = []
        if current is not None and current.version not in versions and self._refused.get((name, current.version)) != _VANISHED:
            self._refused[(name, current.version)] = _VANISHED  # log and count it once
            logger.error("table %s version %d vanished from %s; still serving the loaded copy", name, current.version, self.tables_dir)
            outcomes.append(ReloadOutcome(name, "refused", current.version, "bundle directory vanished; still serving the loaded copy"))
        # Newest first, down to (not past) the version being served.
        for version in reversed(versions):
            if current is not None and version <= current.version:
                if version == current.version and not outcomes:
                    outcomes.append(ReloadOutcome(name, "unchanged", version))
                break
            path = bfmt.bundle_path(self.tables_dir, name, version)
            stamp = _mtime(path / bfmt.MANIFEST)
            if self._refused.get((name, version)) == stamp:
                continue  # refused before and unchanged since: do not log and count it again
            try:
                table = load_table(path, mmap=self._mmap, verify_checksums=self._verify)
            except (bfmt.BundleError, ValueError, OSError, RuntimeError, MemoryError) as exc:
                self._refused[(name, version)] = stamp
                logger.error("refused table %s version %d: %s", name, version, exc)
                outcomes.append(ReloadOutcome(name, "refused", version, str(exc)))
                continue  # an older version may still be newer than the one being served
            outcomes.append(ReloadOutcome(name, "loaded", version))
            return outcomes, table
        return outcomes, None


_VANISHED = -2.0  # marks a served version whose directory disappeared (real mtimes are >= 0, missing -1)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0

"""Loading table bundles into searchable :class:`Table` objects, and the registry that serves them.

The tables layer is the only part of the server that reads bundle files: this module reads the
bundle and its index, and calls the loaders of the optional parts it declares in
:data:`EXTRA_LOADERS` (:mod:`subword`, :mod:`tokenizer_table`, :mod:`embed`). A loaded :class:`Table` is
immutable: a reload builds a new one next to it and swaps the registry's mapping in one
assignment, so in-flight calls finish on the version they started with.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from embserve_format.bundle import (
    INDEX,
    KEY_INDEX,
    KEYS,
    MANIFEST,
    VECTORS,
    Bundle,
    BundleError,
    bundle_path,
    list_tables,
    list_versions,
    read_bundle,
    validate_name,
)
from embserve_format.keyindex import KeyIndex, KeyList
from embserve_index import RawRows, VectorIndex, build_index, describe, load_index, prepare_rows, row_norms

from embserve_server import embed, subword, tokenizer_table
from embserve_server.errors import TableUnavailableError, UnknownTableError, UnknownVersionError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Table:
    """One loaded, validated, warmed table version, under gensim ``KeyedVectors``' names.

    ``vectors`` are the raw rows, ``key_to_index`` / ``index_to_key`` map keys and rows, ``norms``
    are the rows' lengths; the rows as the index sees them (unit-norm for cosine tables) are
    ``index.rows``. Arrays derived from the table on first use (norms, unit rows, case-folded
    vocabularies) are kept on it by :meth:`derived` and counted in :attr:`memory_parts`.
    """

    bundle: Bundle
    index: VectorIndex
    # The raw rows as a plain ndarray over the mapped vectors.npy, (count, dim) float32, read-only:
    # np.memmap's Python-level __getitem__ and __array_finalize__ would run on every lookup.
    vectors: np.ndarray
    key_to_index: KeyIndex  # key -> row like a dict (get, [], in), memory-mapped: no object per key
    index_to_key: KeyList  # row -> key: [i] a str, [int array] an object array of that shape
    load_seconds: float
    extras: dict[str, Any] = field(default_factory=dict)  # loaded optional parts (subwords, tokenizer)
    # name -> (value, bytes, memory part): what derived() built, replaced whole, never mutated
    _derived: dict[str, tuple[Any, int, str]] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def version(self) -> int:
        return self.bundle.version

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
    def norms(self) -> np.ndarray:
        """(count,) float32 L2 norms of the raw rows, as gensim's ``fill_norms`` computes them."""
        rows = self.index.rows
        if isinstance(rows, RawRows) and rows.norms is not None:
            return rows.norms  # a quantized cosine index keeps them for its re-rank: the same numbers
        return self.derived("norms", "rows", lambda: row_norms(self.vectors))  # type: ignore[no-any-return]

    def derived(self, name: str, part: str, build: Callable[[], Any]) -> Any:
        """``build()`` once per table version, kept here and counted in memory part ``part``.

        Concurrent first calls may both build (harmless: the same value, one kept).
        """
        entry = self._derived.get(name)
        if entry is None:
            value = build()
            entry = (value, _nbytes(value), part)
            object.__setattr__(self, "_derived", {**self._derived, name: entry})
        return entry[0]

    @property
    def nbytes(self) -> int:
        """Bytes of the bundle files this table maps or reads (vectors, index, keys...) and what it derived."""
        return sum(self.memory_parts.values())

    @property
    def memory_parts(self) -> dict[str, int]:
        """Bytes by part (:data:`MEMORY_PARTS`): the files mapped or read, or what load built instead,
        plus the arrays derived since (:meth:`derived`).

        A version that shares its key index with an older one still counts it: it is what the
        version would hold alone.
        """
        parts = dict(self._file_parts)
        for _, size, part in self._derived.values():
            parts[part] += size
        return parts

    @functools.cached_property
    def _file_parts(self) -> dict[str, int]:
        b = self.bundle
        files = {name: _size(b.path / name) for name in b.manifest["files"]}
        keys = files.pop(KEYS, 0)
        keys += files.pop(KEY_INDEX, self.key_to_index.nbytes)
        index = files.pop(INDEX, 0) or int(self.index.rows.nbytes)  # none shipped: the Flat built at load
        if isinstance(self.index.rows, RawRows):
            index += self.index.rows.nbytes  # the norms kept for the re-rank
        return {"rows": files.pop(VECTORS, 0), "index": index, "keys": keys, "extras": sum(files.values())}

    def ids_for(self, keys: Sequence[str]) -> np.ndarray:
        """Row ids of ``keys`` as int64, -1 for keys not in the table (no per-key bytecode)."""
        return self.key_to_index.ids_for(keys)


def _nbytes(value: Any) -> int:
    """Bytes held by a derived value: an array's buffer, or a dict's table and its objects."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sys.getsizeof(value) + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in value.items())
    return sys.getsizeof(value)


def load_table(path: Path, *, mmap: bool = True, verify_checksums: bool = True, like: Table | None = None) -> Table:
    """Read, validate and warm one bundle directory.

    ``like``: a loaded version of the same table; when both have the same keys.txt (a training
    run's snapshots do), the new version shares its key index instead of building another.

    Raises:
        BundleError / ChecksumError: the bundle is malformed or corrupt.
        ValueError: the index does not match the vectors.
    """
    t0 = time.perf_counter()
    b = read_bundle(path, verify_checksums=verify_checksums, mmap=mmap, key_index=True, like=like.bundle if like else None)
    keys = b.key_index
    if keys is None:  # read_bundle(key_index=True) always sets it; a guard for type checkers and refactors
        raise BundleError(f"{path}: no key index was loaded")
    info = b.index_info
    index_path = b.file(INDEX)
    if index_path is not None:
        faiss_index = load_index(index_path, mmap=mmap)
    else:
        # Bundles should ship their index (building HNSW for 400k rows takes ~70 s); build Flat here.
        logger.warning("%s has no index.faiss: building an exact Flat index at load time", path)
        faiss_index = build_index(prepare_rows(b.vectors, b.metric), "Flat")
    raw = np.asarray(b.vectors)  # a plain ndarray over the mapping (np.memmap's __getitem__ runs Python)
    # Quantized storage (--index-storage fp16/sq8): re-rank against the raw rows, the mapped vectors.npy.
    idx = VectorIndex.from_index(
        faiss_index, ef_search=int(info.get("ef_search") or 0), nprobe=int(info.get("nprobe") or 0),
        raw=raw, normalized=b.metric == "cosine", rerank=int(info.get("rerank") or 1),
    )
    if idx.ntotal != b.count or idx.d != b.vector_size:
        raise BundleError(
            f"{path}: index holds {idx.ntotal} x {idx.d} rows, vectors.npy is {b.count} x {b.vector_size}"
        )
    _check_index_rows(path, b, idx)
    table = Table(
        bundle=b,
        index=idx,
        vectors=raw,
        key_to_index=keys,
        index_to_key=keys.keys,
        load_seconds=0.0,
        extras=_load_extras(b),
    )
    idx.warm_up()
    seconds = time.perf_counter() - t0
    object.__setattr__(table, "load_seconds", seconds)
    logger.info("loaded table %s version %d (%d x %d, %s) in %.2fs", b.name, b.version, b.count, b.vector_size, describe(faiss_index), seconds)
    return table


def _check_index_rows(path: Path, b: Bundle, idx: VectorIndex) -> None:
    """Spot-check that the index rows are the bundle's vectors (catches a swapped index file)."""
    probe = np.unique(np.linspace(0, b.count - 1, num=min(b.count, 16)).astype(np.int64))
    expected = prepare_rows(b.vectors[probe], b.metric)
    if isinstance(idx.rows, RawRows) and idx.index is not None:  # quantized storage: its decoded codes, to the codes' precision
        try:
            stored = np.stack([idx.index.reconstruct(int(i))[: b.vector_size] for i in probe])  # codes may be zero-padded
        except RuntimeError:
            return  # IVF lists keep no id -> code map (it would cost 8 bytes a row): only shapes were checked
        close = np.allclose(stored, expected, atol=0.05 * max(1.0, float(np.abs(expected).max())))
    else:
        close = np.allclose(idx.rows[probe], expected, atol=1e-5)
    if not close:
        raise BundleError(f"{path}: index.faiss rows do not match vectors.npy (index from another table?)")


MEMORY_PARTS = ("rows", "index", "keys", "extras")  # Table.memory_parts keys, the metric's "part" label


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # a served version whose directory vanished: its mapped pages live on


# The optional bundle parts a table may carry: Table.extras name -> loader(bundle) -> object or None.
EXTRA_LOADERS: dict[str, Callable[[Bundle], Any]] = {
    subword.EXTRA: subword.load,  # fastText n-gram buckets (missing-key policy "subword")
    tokenizer_table.EXTRA: tokenizer_table.load,  # a language model's tokenizer (token tables)
    embed.EXTRA: embed.load,  # the word tokenizer a word table records (Embed's text -> tokens)
}


def _load_extras(b: Bundle) -> dict[str, Any]:
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
    """The tables being served: the newest ``keep_versions`` valid versions of each table under ``tables_dir``.

    Requests name a version or get the newest (the *serving* version). Keeping several lets a
    training run's snapshots, an A/B pair or a rollout be read version by version; every version
    is memory-mapped, so one more costs its key index and little else.

    Args:
        tables_dir: root holding ``<name>/<version>/`` bundles.
        default_table: table used when a request names none (default: the only/first table).
        mmap: memory-map vectors and flat index storage.
        verify_checksums: check every file's sha256 before serving it.
        pinned: serve exactly this version of these tables.
        keep_versions: how many of the newest valid versions of each table stay loaded (>= 1).
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
        keep_versions: int = 1,
        on_change: Callable[[Table | None, ReloadOutcome], None] | None = None,
    ) -> None:
        if keep_versions < 1:
            raise ValueError(f"keep_versions: {keep_versions} must be at least 1")
        self.tables_dir = Path(tables_dir)
        self._default = default_table
        self._mmap = mmap
        self._verify = verify_checksums
        self._pinned = dict(pinned or {})
        self.keep_versions = keep_versions
        self.on_change = on_change  # settable: a forked worker points it at its own metrics
        # Both replaced whole on every change, never mutated: readers need no lock.
        self._tables: dict[str, Table] = {}  # name -> serving (newest loaded) version
        self._versions: dict[str, dict[int, Table]] = {}  # name -> version -> loaded table
        self._refused: dict[tuple[str, int], float] = {}  # (name, version) -> manifest mtime refused
        self._lock = threading.Lock()  # serialises reloads, never held by readers

    # -- reading side (request threads) --------------------------------------------------------

    def get(self, name: str = "", version: int = 0) -> Table:
        """Table ``name`` ("" = default table) at ``version`` (0 = the serving, newest one).

        Raises:
            UnknownTableError: no such table.
            UnknownVersionError: that version is not loaded.
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
        if version and version != table.version:
            loaded = self._versions.get(name, {})
            if version not in loaded:
                raise UnknownVersionError(name, version, sorted(loaded))
            return loaded[version]
        return table

    def versions(self, name: str) -> list[Table]:
        """The loaded versions of table ``name``, oldest first (empty if none)."""
        return [t for _, t in sorted(self._versions.get(name, {}).items())]

    def default_name(self, tables: dict[str, Table] | None = None) -> str:
        tables = self._tables if tables is None else tables
        if self._default and self._default in tables:
            return self._default
        return sorted(tables)[0] if tables else ""

    def all(self) -> list[Table]:
        """The serving version of every table, by name."""
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
            names = sorted({*list_tables(self.tables_dir), *self._tables}) if only is None else [validate_name(only)]
            outcomes = []
            new_versions = dict(self._versions)
            for name in names:
                found, loaded = self._reload_one(name, new_versions.get(name, {}))
                new_versions[name] = loaded
                serving = loaded[max(loaded)] if loaded else None
                for outcome in found:
                    if self.on_change:
                        self.on_change(serving if outcome.outcome == "loaded" else None, outcome)
                outcomes.extend(found)
            new_versions = {name: loaded for name, loaded in new_versions.items() if loaded}
            # Readers see the old or the new mappings; versions first, so a serving table is always listed.
            self._versions = new_versions
            self._tables = {name: loaded[max(loaded)] for name, loaded in new_versions.items()}
            return outcomes

    def _reload_one(self, name: str, loaded: dict[int, Table]) -> tuple[list[ReloadOutcome], dict[int, Table]]:
        """Outcomes, and the versions of ``name`` to keep loaded (the newest ``keep_versions`` valid ones)."""
        try:
            versions = list_versions(self.tables_dir, name)
        except OSError as exc:
            logger.error("table %s: cannot list versions (%s); keeping what is served", name, exc)
            return [], loaded
        if name in self._pinned:
            versions = [v for v in versions if v == self._pinned[name]]
        outcomes: list[ReloadOutcome] = []
        current = max(loaded) if loaded else None
        vanished = current if current is not None and current not in versions else None
        if vanished is not None and self._refused.get((name, vanished)) != _VANISHED:
            self._refused[(name, vanished)] = _VANISHED  # log and count it once
            logger.error("table %s version %d vanished from %s; still serving the loaded copy", name, vanished, self.tables_dir)
            outcomes.append(ReloadOutcome(name, "refused", vanished, "bundle directory vanished; still serving the loaded copy"))
        keep: dict[int, Table] = {}
        # Newest first, until keep_versions are loaded (with one version kept: down to the serving one).
        for version in reversed(versions):
            if len(keep) >= self.keep_versions or (self.keep_versions == 1 and current is not None and version < current):
                break
            if version in loaded:
                keep[version] = loaded[version]
                continue
            path = bundle_path(self.tables_dir, name, version)
            stamp = _mtime(path / MANIFEST)
            if self._refused.get((name, version)) == stamp:
                continue  # refused before and unchanged since: do not log and count it again
            try:
                like = next(iter(keep.values()), None) or (loaded[current] if current is not None else None)  # shares a same-vocabulary key index
                keep[version] = load_table(path, mmap=self._mmap, verify_checksums=self._verify, like=like)
            except (BundleError, ValueError, OSError, RuntimeError, MemoryError) as exc:
                self._refused[(name, version)] = stamp
                logger.error("refused table %s version %d: %s", name, version, exc)
                outcomes.append(ReloadOutcome(name, "refused", version, str(exc)))
                continue  # an older version may still be newer than the one being served
            outcomes.append(ReloadOutcome(name, "loaded", version))
        if vanished is not None:
            keep[vanished] = loaded[vanished]  # the mapped pages outlive the files
            keep = dict(sorted(keep.items())[-self.keep_versions :])  # unless newer versions replace it
        if current is not None and current in keep and not outcomes:
            outcomes.append(ReloadOutcome(name, "unchanged", current))
        # A version older than everything kept never becomes the serving one.
        return outcomes, keep


_VANISHED = -2.0  # marks a served version whose directory disappeared (real mtimes are >= 0, missing -1)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0

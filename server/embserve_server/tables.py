"""Loading table bundles into searchable :class:`Table` objects (the registry that serves them: registry.py).

The tables layer is the only part of the server that reads bundle files: this module reads the
bundle and its index, and calls the loaders of the optional parts it declares in
:data:`EXTRA_LOADERS` (:mod:`subword`, :mod:`tokenizer_table`, :mod:`embed`). A loaded :class:`Table` is
immutable: a reload builds a new one next to it and the registry (:mod:`embserve_server.registry`)
swaps its mapping in one assignment, so in-flight calls finish on the version they started with.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from embserve_format.bundle import INDEX, Bundle, BundleError, read_bundle
from embserve_format.keyindex import KeyIndex, KeyList
from embserve_index import RawRows, VectorIndex, build_index, describe, load_index, prepare_rows, row_norms

from embserve_server import embed, memory, subword, tokenizer_table

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
        """Bytes by part (:data:`memory.MEMORY_PARTS`): the files mapped or read, or what load built instead,
        plus the arrays derived since (:meth:`derived`).

        A version that shares its key index with an older one still counts it: it is what the
        version would hold alone. The same rule estimates a version before it loads (memory.py).
        """
        parts = dict(self._file_parts)
        for _, size, part in self._derived.values():
            parts[part] += size
        return parts

    @functools.cached_property
    def _file_parts(self) -> dict[str, int]:
        b, rows = self.bundle, self.index.rows
        norms = rows.nbytes if isinstance(rows, RawRows) else 0  # the norms kept for the re-rank
        return memory.memory_parts(
            memory.file_sizes(b.path, b.manifest), built_index=int(rows.nbytes), built_keys=self.key_to_index.nbytes, norms=norms,
            count=b.count,
        )

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

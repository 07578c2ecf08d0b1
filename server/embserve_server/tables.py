"""Loading table bundles into searchable :class:`Table` objects (the registry that serves them: registry.py).

The tables layer is the only part of the server that reads bundle files: this module reads the
bundle and its index, and calls the loaders of the optional parts it declares in
:data:`EXTRA_LOADERS` (:mod:`subword`, :mod:`tokenizer_table`). A loaded :class:`Table` is
immutable: a reload builds a new one next to it and the registry (:mod:`embserve_server.registry`)
swaps its mapping in one assignment, so in-flight calls finish on the version they started with.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import embserve_index as vindex
import numpy as np
from embserve_format import bundle as bfmt
from embserve_format.keyindex import KeyIndex, KeyList

from embserve_server import memory, subword, tokenizer_table

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Table:
    """One loaded, validated, warmed table version."""

    bundle: bfmt.Bundle
    index: vindex.VectorIndex
    key_to_id: KeyIndex  # key -> row like a dict (get, [], in), memory-mapped: no object per key
    keys: KeyList  # row -> key: keys[i] a str, keys[int array] an object array of that shape
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
        return sum(self.memory_parts.values())

    @functools.cached_property
    def memory_parts(self) -> dict[str, int]:
        """Bytes by part (:data:`memory.MEMORY_PARTS`): the files mapped or read, or what load built instead.

        A version that shares its key index with an older one still counts it: it is what the
        version would hold alone. The same rule estimates a version before it loads (memory.py).
        """
        b = self.bundle
        norms = self.index.rows.nbytes if isinstance(self.index.rows, vindex.RawRows) else 0  # kept for the re-rank
        return memory.memory_parts(
            memory.file_sizes(b.path, b.manifest), built_index=int(self.index.rows.nbytes), built_keys=self.key_to_id.nbytes, norms=norms
        )

    def ids_for(self, keys: Sequence[str]) -> np.ndarray:
        """Row ids of ``keys`` as int64, -1 for keys not in the table (no per-key bytecode)."""
        return self.key_to_id.ids_for(keys)

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


def load_table(path: Path, *, mmap: bool = True, verify_checksums: bool = True, like: Table | None = None) -> Table:
    """Read, validate and warm one bundle directory.

    ``like``: a loaded version of the same table; when both have the same keys.txt (a training
    run's snapshots do), the new version shares its key index instead of building another.

    Raises:
        BundleError / ChecksumError: the bundle is malformed or corrupt.
        ValueError: the index does not match the vectors.
    """
    t0 = time.perf_counter()
    b = bfmt.read_bundle(path, verify_checksums=verify_checksums, mmap=mmap, key_index=True, like=like.bundle if like else None)
    keys = b.key_index
    if keys is None:  # read_bundle(key_index=True) always sets it; a guard for type checkers and refactors
        raise bfmt.BundleError(f"{path}: no key index was loaded")
    info = b.index_info
    index_path = b.file(bfmt.INDEX)
    if index_path is not None:
        faiss_index = vindex.load_index(index_path, mmap=mmap)
    else:
        # Bundles should ship their index (building HNSW for 400k rows takes ~70 s); build Flat here.
        logger.warning("%s has no index.faiss: building an exact Flat index at load time", path)
        faiss_index = vindex.build_index(vindex.prepare_rows(b.vectors, b.metric), "Flat")
    raw = np.asarray(b.vectors)  # a plain ndarray over the mapping (np.memmap's __getitem__ runs Python)
    # Quantized storage (--index-storage fp16/sq8): re-rank against the raw rows, the mapped vectors.npy.
    idx = vindex.VectorIndex.from_index(
        faiss_index, ef_search=int(info.get("ef_search") or 0), nprobe=int(info.get("nprobe") or 0),
        raw=raw, normalized=b.metric == "cosine", rerank=int(info.get("rerank") or 1),
    )
    if idx.ntotal != b.count or idx.d != b.vector_size:
        raise bfmt.BundleError(
            f"{path}: index holds {idx.ntotal} x {idx.d} rows, vectors.npy is {b.count} x {b.vector_size}"
        )
    _check_index_rows(path, b, idx)
    table = Table(
        bundle=b,
        index=idx,
        key_to_id=keys,
        keys=keys.keys,
        load_seconds=0.0,
        extras=_load_extras(b),
        raw=raw,
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
    if isinstance(idx.rows, vindex.RawRows) and idx.index is not None:  # quantized storage: its decoded codes, to the codes' precision
        try:
            stored = np.stack([idx.index.reconstruct(int(i))[: b.vector_size] for i in probe])  # codes may be zero-padded
        except RuntimeError:
            return  # IVF lists keep no id -> code map (it would cost 8 bytes a row): only shapes were checked
        close = np.allclose(stored, expected, atol=0.05 * max(1.0, float(np.abs(expected).max())))
    else:
        close = np.allclose(idx.rows[probe], expected, atol=1e-5)
    if not close:
        raise bfmt.BundleError(f"{path}: index.faiss rows do not match vectors.npy (index from another table?)")


# The optional bundle parts a table may carry: Table.extras name -> loader(bundle) -> object or None.
EXTRA_LOADERS: dict[str, Callable[[bfmt.Bundle], Any]] = {
    subword.EXTRA: subword.load,  # fastText n-gram buckets (missing-key policy "subword")
    tokenizer_table.EXTRA: tokenizer_table.load,  # a language model's tokenizer (token tables)
}


def _load_extras(b: bfmt.Bundle) -> dict[str, Any]:
    out = {}
    for name, loader in EXTRA_LOADERS.items():
        value = loader(b)
        if value is not None:
            out[name] = value
    return out

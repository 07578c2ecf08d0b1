"""Export a table as a bundle: prepare rows, build and tune the FAISS index, write atomically."""

from __future__ import annotations

import logging
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from embserve_format.bundle import INDEX
from embserve_format.bundle_writer import BundleSpec, FileContent, write_bundle
from embserve_index import (
    IVFPQ_TARGET_RECALL,
    MAX_PQ_RERANK,
    PQ_RERANK_FACTOR,
    TARGET_RECALL,
    RawRows,
    VectorIndex,
    build_index,
    choose_factory,
    prepare_rows,
    rerank_factor,
    save_index,
    tune_ef_search,
)

from embserve_trainer.pooling import Pooling, pooling_weights
from embserve_trainer.progress import index_progress

logger = logging.getLogger(__name__)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a table, recorded in the manifest for reproduction."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("numpy", "faiss-cpu", "gensim", "torch", "embserve-trainer"):  # torch: only with the [lm] extra
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def export_table(
    tables_dir: str | Path,
    name: str,
    vectors: np.ndarray,
    keys: list[str],
    *,
    source: dict[str, Any],
    metric: str = "cosine",
    counts: np.ndarray | None = None,
    factory: str | None = None,
    extras: dict[str, Any] | None = None,
    files: Mapping[str, FileContent] | None = None,
    seed: int = 0,
    version: int | None = None,
    storage: str = "flat",
    pooling: str | Pooling = "auto",
) -> Path:
    """Build the index for ``vectors`` and publish a new bundle version of table ``name``.

    Args:
        tables_dir: tables root directory.
        name: table name.
        vectors: (count, vector_size) raw vectors; row i belongs to keys[i].
        keys: unique keys.
        source: provenance for the manifest (kind, parameters, seed, input sha256...).
        metric: "cosine" (default) or "dot".
        counts: optional corpus frequencies, one per row.
        factory: FAISS factory string; default Flat for small tables, HNSW for large ones.
        extras: additional manifest entries (tokenizer flags, subword settings...).
        files: additional bundle files (eval.json, tokenizer.json, ngrams.npy...).
        seed: seed of the recall-tuning sample.
        version: explicit version (default: next one).
        storage: how an HNSW index stores the rows: "flat" (float32), "fp16" or "sq8" (FAISS
            scalar quantizer), or "ivfpq" (OPQ + IVF + PQ codes, for ~1M rows and more; nprobe
            tuned to recall@10 >= 0.96, a margin over 0.95). Quantized storages re-rank candidates against the raw
            rows. Ignored when ``factory`` is given.
        pooling: per-row pooling weights (``weights.npy``, with SIF/Zipf the common component
            ``component.npy``, and the manifest's ``pooling`` entry): a mode of
            :func:`embserve_trainer.pooling.pooling_weights` ("auto": SIF from ``counts``, Zipf when
            ``extras["frequency_ordered"]``, else none), or a ready :class:`Pooling`.

    Returns:
        The published bundle directory.
    """
    if not isinstance(pooling, Pooling):
        pooling = pooling_weights(pooling, count=len(vectors), counts=counts,
                                  frequency_ordered=bool((extras or {}).get("frequency_ordered")), vectors=vectors)
    factory = factory or choose_factory(len(vectors), storage, dim=vectors.shape[1])
    # Quantized storage keeps no float32 copy in the index: build and tune from the raw rows,
    # normalised a chunk at a time, instead of a prepared copy (2.4 GB for 2M x 300).
    rows = RawRows(vectors, metric == "cosine") if rerank_factor(factory) > 1 else prepare_rows(vectors, metric)
    index = build_index(rows, factory, progress=index_progress)
    rerank = rerank_factor(factory)
    info: dict[str, Any] = {"factory": factory, "faiss_metric": "inner_product", "normalized": metric == "cosine", "storage": storage if factory != "Flat" else "flat"}
    if not VectorIndex.from_index(index, rows=rows).is_exact:
        target = IVFPQ_TARGET_RECALL if "IVF" in factory else TARGET_RECALL
        max_rerank = MAX_PQ_RERANK if rerank >= PQ_RERANK_FACTOR else None
        info.update(tune_ef_search(index, rows, seed=seed, rerank=rerank, target=target, max_rerank=max_rerank))
    del rows  # the prepared copy: only the index and the raw vectors are written
    source = {**source, "libraries": library_versions()}
    spec = BundleSpec(
        metric=metric,
        counts=counts,
        source=source,
        index=info,
        extras=dict(extras or {}),
        files={INDEX: lambda p: save_index(index, p), **(files or {})},
        weights=pooling.weights,
        pooling=pooling.info,
        component=pooling.component,
    )
    path = write_bundle(tables_dir, name, vectors, keys, spec, version=version)
    logger.info("published %s (index %s)", path, factory)
    return path

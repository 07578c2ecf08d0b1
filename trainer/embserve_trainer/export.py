"""Export a table as a bundle: prepare rows, build and tune the FAISS index, write atomically."""

from __future__ import annotations

import logging
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import embserve_index as vindex
import numpy as np
from embserve_client.bundle import INDEX, BundleSpec, FileContent, write_bundle

from embserve_trainer.progress import index_progress

logger = logging.getLogger(__name__)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a table, recorded in the manifest for reproduction."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("numpy", "faiss-cpu", "gensim", "embserve-trainer"):
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

    Returns:
        The published bundle directory.
    """
    rows = vindex.prepare_rows(vectors, metric)
    factory = factory or vindex.choose_factory(len(rows))
    index = vindex.build_index(rows, factory, progress=index_progress)
    info: dict[str, Any] = {"factory": factory, "faiss_metric": "inner_product", "normalized": metric == "cosine"}
    if not vindex.VectorIndex.from_index(index).is_exact:
        info.update(vindex.tune_ef_search(index, rows, seed=seed))
    source = {**source, "libraries": library_versions()}
    spec = BundleSpec(
        metric=metric,
        counts=counts,
        source=source,
        index=info,
        extras=dict(extras or {}),
        files={INDEX: lambda p: vindex.save_index(index, p), **(files or {})},
    )
    path = write_bundle(tables_dir, name, vectors, keys, spec, version=version)
    logger.info("published %s (index %s)", path, factory)
    return path

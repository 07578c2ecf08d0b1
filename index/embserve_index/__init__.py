"""embserve index: FAISS indexes over table rows, shared by the trainer (build) and the server (search).

Its own distribution so that the trainer builds and tunes indexes without installing the server's
gRPC and Prometheus stack. Everything here is FAISS-shaped: (n, d) C-contiguous float32 queries,
``D, I`` results with ``-1`` for "none"; cosine tables are indexed on unit-normalised rows.
"""

from embserve_index.build import (
    FLAT_MAX_ROWS,
    IVFPQ_TARGET_RECALL,
    MAX_PQ_RERANK,
    PQ_RERANK_FACTOR,
    RERANK_FACTOR,
    STORAGES,
    TARGET_RECALL,
    build_index,
    choose_factory,
    describe,
    ivfpq_factory,
    load_index,
    prepare_rows,
    recall_at_k,
    rerank_factor,
    save_index,
    tune_ef_search,
)
from embserve_index.rawrows import row_norms
from embserve_index.search import (
    CORES,
    DEFAULT_EF_SEARCH,
    DEFAULT_NPROBE,
    RawRows,
    VectorIndex,
    compact,
    flat_rows,
    has_flat_storage,
    search_params,
)

__version__ = "0.1.0"

__all__ = [
    "CORES",
    "DEFAULT_EF_SEARCH",
    "DEFAULT_NPROBE",
    "FLAT_MAX_ROWS",
    "IVFPQ_TARGET_RECALL",
    "MAX_PQ_RERANK",
    "PQ_RERANK_FACTOR",
    "RERANK_FACTOR",
    "STORAGES",
    "TARGET_RECALL",
    "RawRows",
    "row_norms",
    "VectorIndex",
    "__version__",
    "build_index",
    "choose_factory",
    "compact",
    "describe",
    "flat_rows",
    "has_flat_storage",
    "ivfpq_factory",
    "load_index",
    "prepare_rows",
    "recall_at_k",
    "rerank_factor",
    "save_index",
    "search_params",
    "tune_ef_search",
]

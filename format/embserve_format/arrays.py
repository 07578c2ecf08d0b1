"""How rows travel and compare: packed little-endian dtypes and the one unit-normalisation."""

from __future__ import annotations

import numpy as np

LE_F32 = np.dtype("<f4")  # vectors and scores: little-endian float32, C order
LE_I64 = np.dtype("<i8")  # row ids: little-endian int64, -1 for "none"


def unit(rows: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), same dtype; the ONE normalisation rule.

    Cosine tables are indexed on these rows, queries are built from them and maps are laid out
    on them, so a score computed anywhere is the same cosine.
    """
    rows = np.asarray(rows)
    # np.linalg.norm(rows, axis=-1) of real rows, to the bit, without its argument handling (which
    # costs more than the arithmetic for the one row of an Embed or a query).
    norms = np.sqrt(np.add.reduce(rows * rows, axis=-1, keepdims=True))
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)

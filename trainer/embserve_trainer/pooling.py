"""Per-row pooling weights: how much each token's row counts when a text's rows are averaged.

A plain mean over a word table is dominated by "the", "of", "a"; smooth inverse frequency (SIF,
Arora et al. 2017) weighs each row by ``a / (a + p(w))``, ``p(w)`` the token's corpus
probability. Tables trained here know their counts (``counts.npy``): ``p = count / total``. Tables
imported in frequency order (GloVe, word2vec, fastText files list the most frequent word first)
only know ranks: Zipf's law gives ``p(rank) = (1 / rank) / H_n`` (ranks from 1, ``H_n`` the
harmonic number), as model2vec estimates it. Weights go to ``weights.npy`` and describe themselves
in the manifest's ``pooling`` entry; lookups never see them (rows stay raw, bit for bit).

    weights, info = pooling_weights("auto", count=len(keys), counts=counts, frequency_ordered=True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SIF_A = 1e-3  # SIF's a: weights fall below 1/2 for tokens more frequent than 1 in 1,000
POOLING = ("auto", "sif", "zipf", "none")  # --pooling choices; "none": a plain (uniform) mean


@dataclass(frozen=True)
class Pooling:
    """Pooling weights for a bundle: ``weights`` (count,) float32 or None, and its manifest entry."""

    weights: np.ndarray | None
    info: dict[str, Any]


def sif(probabilities: np.ndarray, a: float = SIF_A) -> np.ndarray:
    """``a / (a + p)`` per row, float32 in (0, 1]."""
    if not a > 0:
        raise ValueError(f"SIF coefficient a must be > 0, got {a}")
    p = np.asarray(probabilities, dtype=np.float64)
    return (a / (a + p)).astype(np.float32)


def zipf_probabilities(count: int) -> np.ndarray:
    """Zipf's law for ``count`` rows in frequency order: ``p(rank) ∝ 1 / rank``, ranks from 1, summing to 1."""
    inv_rank = 1.0 / np.arange(1, count + 1, dtype=np.float64)
    return inv_rank / inv_rank.sum()


def count_probabilities(counts: np.ndarray) -> np.ndarray:
    """Corpus probabilities from per-row counts (rows never seen: probability 0, weight 1)."""
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or (c < 0).any():
        raise ValueError(f"counts must be a 1-D array of non-negative numbers, got shape {c.shape}")
    total = c.sum()
    if total <= 0:
        raise ValueError("counts are all zero: no frequencies to weigh by (use --pooling zipf or none)")
    return c / total


def pooling_weights(
    mode: str, *, count: int, counts: np.ndarray | None = None, frequency_ordered: bool = False, a: float = SIF_A
) -> Pooling:
    """The weights ``mode`` asks for.

    Args:
        mode: "auto" (SIF from counts when known, else Zipf when the rows are in frequency order,
            else none), "sif" (needs counts), "zipf" (needs frequency order), "none" (uniform mean).
        count: number of rows.
        counts: per-row corpus frequencies, if known.
        frequency_ordered: rows are sorted most frequent first.
        a: SIF coefficient.

    Returns:
        A :class:`Pooling`; ``weights`` is None for a uniform mean.

    Raises:
        ValueError: unknown mode, or a mode whose input this table lacks (the message says which).
    """
    if mode not in POOLING:
        raise ValueError(f"unknown pooling {mode!r}: use one of {', '.join(POOLING)}")
    if mode == "auto":
        mode = "sif" if counts is not None else "zipf" if frequency_ordered else "none"
    if mode == "none":
        return Pooling(None, {"weights": "uniform"})
    if mode == "sif":
        if counts is None:
            raise ValueError("--pooling sif needs corpus counts (a trained table); use zipf for a frequency-ordered import")
        if len(counts) != count:
            raise ValueError(f"counts has {len(counts)} entries for {count} rows")
        return Pooling(sif(count_probabilities(counts), a), {"weights": "sif", "a": a, "probabilities": "counts"})
    if not frequency_ordered:
        raise ValueError("--pooling zipf needs rows in frequency order (GloVe, word2vec, fastText files, trained tables); "
                         "this table's order is unknown: use --pooling none")
    return Pooling(sif(zipf_probabilities(count), a), {"weights": "zipf", "a": a, "probabilities": "1/rank, rank = row + 1"})

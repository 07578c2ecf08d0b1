"""Per-row pooling weights: how much each token's row counts when a text's rows are averaged.

A plain mean over a word table is dominated by "the", "of", "a"; smooth inverse frequency (SIF,
Arora et al. 2017) weighs each row by ``a / (a + p(w))``, ``p(w)`` the token's corpus
probability. Tables trained here know their counts (``counts.npy``): ``p = count / total``. Tables
imported in frequency order (GloVe, word2vec, fastText files list the most frequent word first)
only know ranks: Zipf's law gives ``p(rank) = (1 / rank) / H_n`` (ranks from 1, ``H_n`` the
harmonic number), as model2vec estimates it. Weights go to ``weights.npy`` and describe themselves
in the manifest's ``pooling`` entry; lookups never see them (rows stay raw, bit for bit).

SIF's second step removes the *common component*: the direction every text vector shares (the
topic of "any text at all"), which otherwise dominates their cosines. Arora et al. take the first
principal direction of a corpus's weighted text vectors (:func:`corpus_component`: what
``distill --common-component CORPUS`` stores); a word table's default needs no corpus: the first
principal direction of its rows under the token distribution ``p`` (:func:`common_component`, the
top eigenvector of ``sum_w p(w) row_w row_w^T``), from the same probabilities as the weights. It
goes to ``component.npy``; pooling subtracts each text vector's projection on it before normalising.

    pooled = pooling_weights("auto", count=len(keys), counts=counts, frequency_ordered=True, vectors=rows)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from embserve_format.bundle import COMPONENT
from embserve_format.text import pool

# SIF's a, for probabilities from counts and from Zipf ranks alike: weights fall below 1/2 for tokens
# more frequent than 1 in 10,000. model2vec's default for its rank weights; on a held-out split of the
# GCIDE reverse dictionary (bench/bench_pooling.py, docs/text-embeddings-quality.md) it beat 1e-3 for
# the count-weighted gcide table (dev MRR 0.093 vs 0.087) and the rank-weighted GloVe (0.025 vs 0.012).
SIF_A = 1e-4
ZIPF_A = SIF_A  # kept as a name: the coefficient over Zipf-rank probabilities
POOLING = ("auto", "sif", "zipf", "none")  # --pooling choices; "none": a plain (uniform) mean


@dataclass(frozen=True)
class Pooling:
    """Pooling for a bundle: ``weights`` (count,) float32 or None, the common ``component`` (k, d)
    float32 orthonormal rows or None, and its manifest entry."""

    weights: np.ndarray | None
    info: dict[str, Any]
    component: np.ndarray | None = None


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


def common_component(vectors: np.ndarray, probabilities: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """The first principal direction of the rows under the token distribution: the unit top
    eigenvector of ``sum_i p_i row_i row_i^T`` (uncentred, like Arora et al.'s), as (1, d) float32.

    Its sign is fixed (largest absolute entry positive) so the same table always gives the same file.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    d = vectors.shape[1]
    moment = np.zeros((d, d))
    for start in range(0, len(vectors), chunk):  # (chunk, d) at a time: no (count, d) float64 copy
        rows = np.asarray(vectors[start : start + chunk], dtype=np.float64)
        moment += (rows * p[start : start + chunk, None]).T @ rows
    _, eigvecs = np.linalg.eigh(moment)
    return _fixed_sign(eigvecs[:, -1])


def corpus_component(vectors: np.ndarray, texts: Iterable[Sequence[int]], weights: np.ndarray | None = None) -> np.ndarray:
    """Arora et al.'s common component: the first principal direction (uncentred) of the pooled,
    unit-length vectors of a corpus's texts (``texts``: each text's row ids), as (1, d) float32.

    Raises:
        ValueError: no text with a known token.
    """
    ids = [np.asarray(t, dtype=np.int64) for t in texts]
    ids = [t for t in ids if len(t)]
    if not ids:
        raise ValueError("the common-component corpus has no text with a token of this table")
    flat = np.concatenate(ids)
    pooled = pool(np.asarray(vectors[flat], dtype=np.float32), np.array([len(t) for t in ids]),
                  weights=None if weights is None else weights[flat])
    _, _, vt = np.linalg.svd(pooled.astype(np.float64), full_matrices=False)
    return _fixed_sign(vt[0])


def _fixed_sign(u: np.ndarray) -> np.ndarray:
    """``u`` as unit (1, d) float32 with its largest absolute entry positive: one file per table."""
    u = u if u[np.argmax(np.abs(u))] > 0 else -u
    return (u / np.linalg.norm(u)).astype(np.float32)[None, :]


def pooling_weights(
    mode: str, *, count: int, counts: np.ndarray | None = None, frequency_ordered: bool = False, a: float | None = None,
    vectors: np.ndarray | None = None,
) -> Pooling:
    """The weights ``mode`` asks for, and with ``vectors`` the common component to remove.

    Args:
        mode: "auto" (SIF from counts when known, else Zipf when the rows are in frequency order,
            else none), "sif" (needs counts), "zipf" (needs frequency order), "none" (uniform mean).
        count: number of rows.
        counts: per-row corpus frequencies, if known.
        frequency_ordered: rows are sorted most frequent first.
        a: SIF coefficient (default: :data:`SIF_A`).
        vectors: the (count, d) rows; given, SIF and Zipf pooling also carry the common component
            (:func:`common_component` under the same probabilities as the weights).

    Returns:
        A :class:`Pooling`; ``weights`` is None for a uniform mean (which has no component either).

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
        probabilities = count_probabilities(counts)
        info: dict[str, Any] = {"weights": "sif", "a": SIF_A if a is None else a, "probabilities": "counts"}
    else:
        if not frequency_ordered:
            raise ValueError("--pooling zipf needs rows in frequency order (GloVe, word2vec, fastText files, trained tables); "
                             "this table's order is unknown: use --pooling none")
        probabilities = zipf_probabilities(count)
        info = {"weights": "zipf", "a": ZIPF_A if a is None else a, "probabilities": "1/rank, rank = row + 1"}
    component = None
    if vectors is not None:
        if len(vectors) != count:
            raise ValueError(f"vectors has {len(vectors)} rows for {count} rows of weights")
        component = common_component(vectors, probabilities)
        info["common_component"] = COMPONENT_INFO
    return Pooling(sif(probabilities, info["a"]), info, component)


# The manifest's description of component.npy, for a reader who meets it.
COMPONENT_INFO = {"file": COMPONENT, "removed": "after the weighted mean, before normalising",
                  "from": "top eigenvector of sum p(w) row_w row_w^T, p as for the weights"}


def with_corpus_component(pooling: Pooling, vectors: np.ndarray, texts: Iterable[Sequence[int]], about: dict[str, Any]) -> Pooling:
    """``pooling`` plus the :func:`corpus_component` of ``texts`` (row ids), described by ``about``
    (the corpus, its sha256, how many texts) in the manifest entry."""
    component = corpus_component(vectors, texts, pooling.weights)
    info = {**pooling.info, "common_component": {**COMPONENT_INFO, "from": "first principal direction of the "
                                                 "pooled unit vectors of a corpus's texts (Arora et al.)", **about}}
    return replace(pooling, component=component, info=info)

"""gensim's KeyedVectors queries that would cost a round trip per item on the client, over one :class:`Table`.

``list_keys`` (index_to_key), ``most_similar_cosmul``, ``rank_by_centrality`` (doesnt_match) and
``closer_than`` (rank). Each mirrors gensim 4's arithmetic on the RAW rows — the same numpy calls in
the same order and dtype (float32) — so that scores match gensim's and strict comparisons
(``closer_than``) tie-break the same way. The batched evaluations live in :mod:`gensim_eval`.
Inputs are validated here, raising ``ValueError`` / :class:`LimitExceededError` that names the field.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embserve_server.config import Limits
from embserve_server.errors import MissingKeyError
from embserve_server.query import DEFAULT_TOPN
from embserve_server.tables import Table
from embserve_server.validate import check_keys, check_limit, check_vectors

COSMUL_EPSILON = 0.000001  # gensim's guard against a zero denominator in 3CosMul

def row_of(table: Table, field: str, key: str, limits: Limits) -> int:
    """Row id of ``key``.

    Raises:
        ValueError: empty or over-long key. MissingKeyError: not in the table.
    """
    check_keys(field, [key], limits)
    row = table.key_to_index.get(key)
    if row is None:
        raise MissingKeyError(key, table.name)
    return row


def list_keys(table: Table, offset: int, limit: int, limits: Limits) -> list[str]:
    """Keys of rows ``offset .. offset+limit-1`` (``limit`` 0: as many as ``limits.max_keys``).

    Raises:
        ValueError / LimitExceededError: negative offset or limit, offset past the end, over the limit.
    """
    if offset < 0 or offset > table.count:
        raise ValueError(f"offset: {offset} is out of range [0, {table.count}]")
    if limit < 0:
        raise ValueError(f"limit: {limit} must not be negative (0 = the server's maximum)")
    check_limit("limit", limit, limits.max_keys)
    limit = limit or limits.max_keys
    return table.index_to_key[offset : offset + limit].tolist()  # type: ignore[no-any-return]


def most_similar_cosmul(
    table: Table,
    positive: Sequence[str],
    negative: Sequence[str],
    positive_vectors: np.ndarray,
    negative_vectors: np.ndarray,
    topn: int,
    limits: Limits,
) -> tuple[np.ndarray, np.ndarray]:
    """gensim's ``most_similar_cosmul``: rows by prod((1 + cos(row, p)) / 2) / (prod((1 + cos(row, n)) / 2) + 1e-6).

    Key terms are the keys' unit rows, vector terms are used as given (as gensim does); the query keys
    are left out of the results. Brute force over every row (gensim's ``restrict_vocab`` is not used
    by gensim either).

    Returns:
        (ids int64, scores float32), at most ``topn`` (0: 10), best first.

    Raises:
        ValueError / LimitExceededError: bad topn, no positive term, bad vectors, too many terms.
        MissingKeyError: a key that is not in the table (positives first, like gensim).
    """
    topn = topn or DEFAULT_TOPN
    if topn < 0:
        raise ValueError(f"topn: {topn} must be positive")
    check_limit("topn", topn, limits.max_topn)
    dim = table.dim
    pos_vec = check_vectors("positive_vectors", positive_vectors, dim)
    neg_vec = check_vectors("negative_vectors", negative_vectors, dim)
    check_limit("terms", len(positive) + len(negative) + len(pos_vec) + len(neg_vec), limits.max_terms)
    vectors, norms = table.vectors, table.norms
    pos_rows = [row_of(table, "positive", k, limits) for k in positive]
    neg_rows = [row_of(table, "negative", k, limits) for k in negative]
    if not pos_rows and not len(pos_vec):
        raise ValueError("cannot compute similarity with no input")

    def shifted(term: np.ndarray) -> np.ndarray:
        # (1 + cos) / 2 per row, computed as gensim does: dot with raw rows, then divide by the norms.
        with np.errstate(divide="ignore", invalid="ignore"):
            return (1 + np.dot(vectors, term) / norms) / 2  # type: ignore[no-any-return]

    pos = [shifted(vectors[r] / norms[r]) for r in pos_rows] + [shifted(v) for v in pos_vec]
    neg = [shifted(vectors[r] / norms[r]) for r in neg_rows] + [shifted(v) for v in neg_vec]
    with np.errstate(divide="ignore", invalid="ignore"):
        dists = np.prod(pos, axis=0) / (np.prod(neg, axis=0) + COSMUL_EPSILON)
    skip = set(pos_rows) | set(neg_rows)
    k = min(topn + len(skip), len(dists))
    part = np.argpartition(-dists, k - 1)[:k] if k < len(dists) else np.arange(len(dists))
    best = part[np.argsort(-dists[part], kind="stable")]
    best = np.array([i for i in best.tolist() if i not in skip][:topn], dtype=np.int64)
    return best, dists[best].astype(np.float32)


def rank_by_centrality(table: Table, keys: Sequence[str], use_norm: bool, limits: Limits) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of each known key's vector to the unit centroid of them all (gensim's ``rank_by_centrality``).

    Unknown keys are ignored, as gensim does (the caller warns).

    Returns:
        (found (len(keys),) bool, scores float32 for the found keys in request order).

    Raises:
        ValueError / LimitExceededError: no key, an empty or over-long key, too many keys.
    """
    if not len(keys):
        raise ValueError("keys: the request holds no key")
    check_limit("keys", len(keys), limits.max_keys)
    check_keys("keys", keys, limits)
    ids = table.ids_for(keys)
    found = ids >= 0
    used = ids[found]
    if not len(used):
        return found, np.empty(0, np.float32)
    vectors = np.asarray(table.vectors[used], dtype=np.float32)
    if use_norm:
        vectors = vectors / table.norms[used][:, None]
    # gensim's get_mean_vector over the rows: a running float32 sum, divided by the count, then unit length.
    mean: np.ndarray = np.zeros(table.dim, np.float32)
    weight = np.float32(1.0)
    for row in vectors:
        mean += weight * row
    mean = mean / len(vectors)
    length = np.linalg.norm(mean)
    if length > 0:
        mean = (mean * (1.0 / length)).astype(np.float32)
    return found, np.dot(vectors, mean).astype(np.float32)


def closer_than(table: Table, key1: str, key2: str, limits: Limits) -> np.ndarray:
    """Rows whose cosine distance to ``key1`` is below ``key2``'s, ``key1`` itself left out (row order).

    The distances are gensim's ``1 - dot(rows, v) / (|v| * |rows|)`` on the raw rows, so the strict
    comparison treats near-ties exactly as gensim does.

    Raises:
        ValueError: empty or over-long key. MissingKeyError: ``key1`` (first) or ``key2`` unknown.
    """
    r1 = row_of(table, "key1", key1, limits)
    r2 = row_of(table, "key2", key2, limits)
    vectors = table.vectors
    v = vectors[r1]
    with np.errstate(divide="ignore", invalid="ignore"):
        distances = 1 - np.dot(vectors, v) / (np.linalg.norm(v) * table.norms)
    closer = np.flatnonzero(distances < distances[r2])
    return closer[closer != r1].astype(np.int64)

"""Analogy questions answered as gensim's ``evaluate_word_analogies`` answers them, in one batch.

The one implementation behind the trainer's evaluator (``embserve-train evaluate``) and the
server's ``EvaluateWordAnalogies`` RPC (``RemoteKeyedVectors.evaluate_word_analogies``):

- only the first ``restrict`` rows count; with ``case_insensitive`` every key is upper-cased and a
  word stands for the first (most frequent) row of its upper-cased form;
- a:b :: c:? is 3CosAdd: the rows nearest to unit((b^ + c^ - a^) / 3) over unit rows, the three
  question rows left out, and the answer is the first of the top 5 whose canonical row is not a
  question word.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from embserve_format.arrays import unit

from embserve_index.search import VectorIndex

ANALOGY_TOPN = 5  # gensim asks most_similar for 5 answers and takes the first acceptable one
ANALOGY_EF_SEARCH = 128  # HNSW effort for analogy questions (off-manifold queries need more than key queries)


def vocabulary(keys: Sequence[str], n: int, case_insensitive: bool) -> dict[str, int]:
    """Test word -> row over the first ``n`` keys; upper-cased keys map to their first row."""
    first = list(keys[:n])
    if not case_insensitive:
        return dict(zip(first, range(len(first))))
    out: dict[str, int] = {}
    for i, k in enumerate(first):
        out.setdefault(k.upper(), i)
    return out


def answer(
    index: VectorIndex,
    quads: np.ndarray,
    keys: Sequence[str] | np.ndarray,
    vocab: dict[str, int],
    *,
    case_insensitive: bool,
    restrict: int,
    exact: bool,
    ef_search: int = ANALOGY_EF_SEARCH,
) -> np.ndarray:
    """Which questions are answered correctly.

    Args:
        index: searches unit rows by inner product (``index.rows`` are those unit rows).
        quads: (nq, 4) int64 rows of a, b, c and the expected word, all within ``vocab``.
        keys: the table's keys (row i = keys[i]); vocab: from :func:`vocabulary`.
        restrict: only rows below it answer; exact: brute force instead of the approximate index.

    Returns:
        (nq,) bool.
    """
    if not len(quads):
        return np.zeros(0, dtype=bool)
    rows = index.rows
    # gensim: the mean of the weighted unit rows (b, c positive, a negative), then unit length.
    query = np.ascontiguousarray(unit((rows[quads[:, 1]] + rows[quads[:, 2]] - rows[quads[:, 0]]) / np.float32(3)), dtype=np.float32)
    drop = np.ascontiguousarray(quads[:, :3])  # gensim leaves the question rows out of most_similar's answer
    top = index.search(query, ANALOGY_TOPN, exact=exact, ef_search=ef_search, restrict=restrict, drop=drop)[1]
    # A key's canonical row: the row its (upper-cased) form maps to, so case variants count as one word.
    canon = (lambda i: vocab[str(keys[i]).upper()]) if case_insensitive else (lambda i: i)
    correct = np.zeros(len(quads), dtype=bool)
    for qi, (a, b, c, expected) in enumerate(quads.tolist()):
        predicted = -1
        for j in top[qi].tolist():
            if j < 0:
                break
            predicted = canon(j)
            if predicted not in (a, b, c):
                break
        correct[qi] = predicted == expected
    return correct

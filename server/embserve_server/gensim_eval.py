"""Batched word-pair and analogy evaluation over one :class:`Table`, with gensim 4's semantics.

gensim's ``evaluate_word_pairs`` / ``evaluate_word_analogies`` ask one ``similarity`` or
``most_similar`` per line; here the client sends the parsed lines and one call answers them all:

- only the first ``restrict_vocab`` rows count (gensim's default 300,000); with ``case_insensitive``
  words arrive upper-cased and a word stands for the FIRST row whose upper-cased key it is;
- a pair's score is the cosine of its two rows;
- an analogy a:b :: c:? is answered by 3CosAdd: the rows nearest to unit(b^ + c^ - a^) among the
  restricted rows, the three question rows left out, the first of the top 5 whose canonical row is
  not a question row (gensim's ``most_similar(positive=[b, c], negative=[a], topn=5)`` loop).

All questions go to the table's :class:`VectorIndex` as one (n, d) batch: brute force by default
(gensim's answers), or the approximate index at ``ef_search`` when asked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from embserve_format.arrays import unit
from embserve_format.limits import RESTRICT_VOCAB
from embserve_index import analogies
from embserve_index.analogies import ANALOGY_EF_SEARCH
from embserve_index.search import VectorIndex

from embserve_server.config import Limits
from embserve_server.tables import Table
from embserve_server.validate import check_keys, check_limit, check_pairs


def _restriction(table: Table, restrict_vocab: int) -> int:
    if restrict_vocab < 0:
        raise ValueError(f"restrict_vocab: {restrict_vocab} must be positive (0 = gensim's default {RESTRICT_VOCAB})")
    return min(restrict_vocab or RESTRICT_VOCAB, table.count)


def vocabulary(table: Table, n: int, case_insensitive: bool) -> dict[str, int]:
    """Word -> row over the first ``n`` keys; upper-cased keys map to their first row (kept on the table)."""

    build = lambda: analogies.vocabulary(table.index_to_key[:n].tolist(), n, case_insensitive)  # noqa: E731
    return table.derived(f"vocabulary {n} case_insensitive={case_insensitive}", "keys", build)  # type: ignore[no-any-return]


def unit_rows(table: Table) -> np.ndarray:
    """Unit-length rows (cosine tables: the index's own rows; others normalised once, kept on the table)."""
    if table.metric == "cosine":
        return table.index.rows
    return table.derived("unit rows", "rows", lambda: np.ascontiguousarray(unit(np.asarray(table.vectors, np.float32))))  # type: ignore[no-any-return]


def _rows(vocab: dict[str, int], words: Sequence[str]) -> np.ndarray:
    return np.fromiter((vocab.get(w, -1) for w in words), dtype=np.int64, count=len(words))


def word_pairs(
    table: Table, a: Sequence[str], b: Sequence[str], restrict_vocab: int, case_insensitive: bool, limits: Limits
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity of each pair whose two words are in the restricted vocabulary.

    Returns:
        (found (n,) bool, scores (n,) float32, 0 where not found).

    Raises:
        ValueError / LimitExceededError: lists of different lengths, no pair, too many, a bad key.
    """
    check_pairs(a, b, limits)
    vocab = vocabulary(table, _restriction(table, restrict_vocab), case_insensitive)
    ia, ib = _rows(vocab, a), _rows(vocab, b)
    found = (ia >= 0) & (ib >= 0)
    rows = unit_rows(table)
    scores = np.zeros(len(a), np.float32)
    scores[found] = np.einsum("ij,ij->i", rows[ia[found]], rows[ib[found]])
    return found, scores


def word_analogies(
    table: Table,
    questions: Sequence[Sequence[str]],
    restrict_vocab: int,
    case_insensitive: bool,
    limits: Limits,
    *,
    approximate: bool = False,
    ef_search: int = 0,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Answer analogy questions (a, b, c, expected) in one batched search.

    Args:
        questions: four equally long word lists: a, b, c, expected.

    Returns:
        (found (n,) bool: all four words known, correct (n,) bool, name of the search that answered).

    Raises:
        ValueError / LimitExceededError: lists of different lengths, no question, too many, a bad key,
            a bad ef_search.
    """
    lengths = {len(q) for q in questions}
    if len(questions) != 4 or len(lengths) != 1:
        raise ValueError(f"a/b/c/expected: four lists of equal length expected, got lengths {[len(q) for q in questions]}")
    nq = lengths.pop()
    if not nq:
        raise ValueError("a/b/c/expected: the request holds no question")
    check_limit("questions", nq, limits.max_pairs)
    for name, words in zip(("a", "b", "c", "expected"), questions):
        check_keys(name, words, limits)
    if ef_search < 0:
        raise ValueError(f"ef_search: {ef_search} must not be negative")
    check_limit("ef_search", ef_search, limits.max_ef_search)
    n = _restriction(table, restrict_vocab)
    vocab = vocabulary(table, n, case_insensitive)
    ids = np.stack([_rows(vocab, words) for words in questions], axis=1)  # (nq, 4)
    found = np.asarray((ids >= 0).all(axis=1))
    correct = np.zeros(nq, dtype=bool)
    known = ids[found]
    approximate = approximate and table.metric == "cosine" and not table.index.is_exact
    search = f"hnsw efSearch={ef_search or ANALOGY_EF_SEARCH}" if approximate else "exact"
    if not len(known):
        return found, correct, search
    # Cosine tables search their own index (exact or not); others brute force over their unit rows.
    index = table.index if table.metric == "cosine" else VectorIndex.brute_force(unit_rows(table))
    answers = analogies.answer(
        index, known, table.index_to_key, vocab, case_insensitive=case_insensitive, restrict=n, exact=not approximate, ef_search=ef_search or ANALOGY_EF_SEARCH
    )
    correct[found] = answers
    return found, correct, search

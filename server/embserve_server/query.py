"""The query core: the vocabulary users know from gensim, over one loaded :class:`Table`.

``lookup`` (get_vector), ``search`` (most_similar / similar_by_vector) and ``similarity`` work on
whole batches with numpy and return arrays; the servicer (service.py) packs them for the wire
(pack.py), the explorer reads them directly. Each function that has a fast path chooses it
itself, in one place next to both paths (``lookup``: :func:`_one_known_row`; ``search``:
:func:`_plain_search_row`), and tests/pure/test_fast_paths.py shows both paths give the same arrays.
Inputs are validated here, raising ``ValueError`` (or :class:`LimitExceededError`) that names the
field, the value and the limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from embserve_client import wire
from embserve_format.arrays import unit

from embserve_server import subword, tokenizer_table
from embserve_server.config import Limits
from embserve_server.errors import MissingKeyError
from embserve_server.tables import Table
from embserve_server.validate import check_ids, check_keys, check_limit, check_pairs, check_vectors

MISSING_POLICIES = tuple(wire.MISSING_POLICIES)  # "error", "skip", "zero", "subword"
DEFAULT_TOPN = 10
_FOUND_ONE = np.ones(1, dtype=bool)
_FOUND_ONE.flags.writeable = False


# ---------------------------------------------------------------------------------------------
# Lookup


class LookupArrays(NamedTuple):  # a tuple: built on every call, ~4x cheaper than a frozen dataclass
    """The rows of a Lookup (pack.pack_lookup puts them on the wire)."""

    vectors: np.ndarray  # (rows, dim) float32, C-contiguous; rows = len(request) unless policy "skip"
    found: np.ndarray  # (len(request),) bool
    ids: np.ndarray  # (len(request),) int64, -1 when missing


class OneRow(NamedTuple):
    """``get_vector(key)``'s answer: one known row of ``table``, raw.

    pack.pack_lookup writes it from the table's mapped bytes without building an array (a busy
    server runs each call with cold CPU caches, where every numpy call costs microseconds); the
    arrays of :class:`LookupArrays` are built on demand for any other reader.
    """

    table: Table
    row: int

    @property
    def vectors(self) -> np.ndarray:
        return self.table.vectors[self.row : self.row + 1]

    @property
    def found(self) -> np.ndarray:
        return _FOUND_ONE

    @property
    def ids(self) -> np.ndarray:
        return np.array([self.row], dtype=np.int64)


def lookup(
    table: Table,
    limits: Limits,
    *,
    keys: Sequence[str] = (),
    ids: Sequence[int] | np.ndarray = (),
    missing: str = "error",
    normalize: bool = False,
) -> LookupArrays | OneRow:
    """Vectors of many keys (or ids) at once.

    ``get_vector(key)`` (one known key, raw vector) is the commonest call: it is answered by its
    row number (:class:`OneRow`), without the ~12 numpy calls of the batch path
    (:func:`_lookup_batch`), each of which costs microseconds in a busy server.

    Raises:
        ValueError: no keys and no ids, both given, bad policy, ids out of range, over a limit.
        MissingKeyError: a missing key under policy "error".
        FailedPreconditionError: policy "subword" on a table without subword buckets.
    """
    row = _one_known_row(table, keys, ids, missing, normalize)
    if row is not None:
        return OneRow(table, row)
    return _lookup_batch(table, limits, keys, ids, missing, normalize)


def _one_known_row(table: Table, keys: Sequence[str], ids: Sequence[int] | np.ndarray, missing: str, normalize: bool) -> int | None:
    """The row of ``get_vector(key)``: one known key, raw vector, a valid policy; else None."""
    if len(keys) != 1 or len(ids) or normalize or missing not in MISSING_POLICIES:
        return None
    return table.key_to_index.get(keys[0])


def _lookup_batch(
    table: Table, limits: Limits, keys: Sequence[str], ids: Sequence[int] | np.ndarray, missing: str, normalize: bool
) -> LookupArrays:
    """General path: any number of keys or ids, every policy, normalisation."""
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing: {missing!r} is not one of {MISSING_POLICIES}")
    if len(keys) and len(ids):
        raise ValueError("keys and ids: give one or the other, not both")
    if not len(keys) and not len(ids):
        raise ValueError("keys/ids: the request names no key and no id")
    if len(keys):
        check_limit("keys", len(keys), limits.max_keys)
        row_ids = table.ids_for(keys)
    else:
        check_limit("ids", len(ids), limits.max_keys)
        row_ids = np.asarray(ids, dtype=np.int64)
        check_ids("ids", row_ids, table.count)
    found = row_ids >= 0
    source = table.index.rows if (normalize and table.metric == "cosine") else table.vectors
    if found.all():
        vectors = source.take(row_ids, axis=0)  # one C-contiguous float32 copy
    else:
        if len(keys):
            check_keys("keys", keys, limits)  # an invalid or over-long key is refused, not reported missing
        if missing == "error":
            raise MissingKeyError(str(keys[int(np.argmin(found))]), table.name)
        if missing == "skip":
            vectors = source[row_ids[found]]
        else:
            vectors = np.zeros((len(row_ids), table.dim), dtype=np.float32)
            vectors[found] = source[row_ids[found]]
            if missing == "subword":
                absent = np.flatnonzero(~found)
                vectors[absent] = subword.compose_for_table(table, [keys[int(i)] for i in absent])
    if normalize and table.metric != "cosine":
        vectors = unit(vectors)
    return LookupArrays(vectors if vectors.flags.c_contiguous else np.ascontiguousarray(vectors), found, row_ids)


# ---------------------------------------------------------------------------------------------
# Nearest neighbours


@dataclass(frozen=True)
class Query:
    """One nearest-neighbour query: weighted keys/ids (gensim's algebra) or a raw vector."""

    positive: Sequence[str] = ()
    negative: Sequence[str] = ()
    positive_ids: Sequence[int] = ()
    negative_ids: Sequence[int] = ()
    positive_weights: Sequence[float] = ()  # one per positive (keys, then ids); default 1.0
    negative_weights: Sequence[float] = ()  # one per negative; default 1.0 (subtracted)
    vector: np.ndarray | None = None

    def single_key(self) -> str | None:
        """The key of ``most_similar(key)``: one positive key and nothing else (else None)."""
        if len(self.positive) != 1 or len(self.negative) or len(self.positive_ids) or len(self.negative_ids) \
                or len(self.positive_weights) or len(self.negative_weights) or (self.vector is not None and len(self.vector)):
            return None
        return self.positive[0]


@dataclass(frozen=True)
class SearchOptions:
    topn: int = DEFAULT_TOPN
    include_query_keys: bool = False
    exact: bool = False
    ef_search: int = 0
    nprobe: int = 0
    restrict_vocab: int = 0
    min_score: float | None = None
    skip_special_tokens: bool = False  # tokenizer tables: [CLS], [PAD], ...
    skip_subword_tokens: bool = False  # tokenizer tables: "##ing"

    @property
    def is_default(self) -> bool:
        """Nothing but ``topn`` and ``ef_search`` set: the options of ``most_similar(key)``."""
        return not (self.include_query_keys or self.exact or self.nprobe or self.restrict_vocab or self.min_score is not None
                    or self.skip_special_tokens or self.skip_subword_tokens)


class SearchArrays(NamedTuple):
    """The neighbours of a batch of queries (pack.pack_search puts them on the wire)."""

    scores: np.ndarray  # (nq, topn) float32, 0 where id is -1
    ids: np.ndarray  # (nq, topn) int64, -1 for "none"
    keys: list[str]  # nq * topn keys, row-major, "" where id is -1

    def rows(self) -> list[list[tuple[str, float, int]]]:
        """Per query, its (key, score, id) results in order, "none" (-1) slots dropped."""
        topn = self.ids.shape[1]
        return [
            [(k, s, i) for k, s, i in zip(self.keys[n * topn : (n + 1) * topn], srow, irow) if i >= 0]
            for n, (srow, irow) in enumerate(zip(self.scores.tolist(), self.ids.tolist()))
        ]


def _terms(q: Query, table: Table, limits: Limits, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ids and signed weights of one query's positive and negative terms."""
    pos_keys, neg_keys = list(q.positive), list(q.negative)
    check_keys(f"queries[{n}].positive", pos_keys, limits)
    check_keys(f"queries[{n}].negative", neg_keys, limits)
    ids = np.concatenate(
        [table.ids_for(pos_keys), np.asarray(q.positive_ids, np.int64), table.ids_for(neg_keys), np.asarray(q.negative_ids, np.int64)]
    )
    npos = len(pos_keys) + len(q.positive_ids)
    nneg = len(neg_keys) + len(q.negative_ids)
    check_limit(f"queries[{n}] terms", npos + nneg, limits.max_terms)
    missing = np.flatnonzero(ids[: len(pos_keys)] < 0)
    if missing.size:
        raise MissingKeyError(pos_keys[missing[0]], table.name)
    missing = np.flatnonzero(ids[npos : npos + len(neg_keys)] < 0)
    if missing.size:
        raise MissingKeyError(neg_keys[missing[0]], table.name)
    check_ids(f"queries[{n}] ids", ids, table.count)
    weights = np.ones(npos + nneg, dtype=np.float32)
    for name, given, sl, size in (("positive_weights", q.positive_weights, slice(0, npos), npos), ("negative_weights", q.negative_weights, slice(npos, None), nneg)):
        if len(given):
            if len(given) != size:
                raise ValueError(f"queries[{n}].{name}: {len(given)} weights for {size} terms")
            weights[sl] = given
    weights[npos:] *= -1.0
    if not np.isfinite(weights).all():
        raise ValueError(f"queries[{n}]: weights must be finite numbers")
    return ids, weights


def _single_key_rows(table: Table, queries: Sequence[Query], limits: Limits) -> np.ndarray | None:
    """Row ids when every query is a single valid known key (``most_similar(key)``), else None.

    Lets a batch of them be one gather instead of per-query term arrays (~60 us -> ~10 us a
    query); anything else, including every invalid query, takes the general path and its errors.
    """
    keys = [q.single_key() for q in queries]
    if None in keys or limits.max_terms < 1:
        return None
    try:
        check_keys("queries", keys, limits)  # type: ignore[arg-type]  # no None left
    except ValueError:
        return None
    ids = table.ids_for(keys)  # type: ignore[arg-type]
    return None if (ids < 0).any() else ids


def query_matrix(table: Table, queries: Sequence[Query], limits: Limits) -> tuple[np.ndarray, list[np.ndarray]]:
    """The (nq, dim) query vectors and, per query, the row ids it was built from.

    Like gensim's most_similar: each term's row is unit-normalised (cosine tables), weighted,
    summed, and the sum unit-normalised.
    """
    nq = len(queries)
    if nq == 0:
        raise ValueError("queries: the request holds no query")
    check_limit("queries", nq, limits.max_queries)
    single = _single_key_rows(table, queries, limits)
    if single is not None:
        # The rows as the index sees them are already unit-norm for cosine tables: the same
        # matrix as the general path's (zeros + 1.0 * row, then unit()).
        return table.index.rows[single], list(single[:, None])
    matrix = np.zeros((nq, table.dim), dtype=np.float32)
    term_ids: list[np.ndarray] = []
    all_q, all_ids, all_w = [], [], []
    for n, q in enumerate(queries):
        has_terms = bool(len(q.positive) or len(q.negative) or len(q.positive_ids) or len(q.negative_ids))
        if q.vector is not None and len(q.vector):
            if has_terms:
                raise ValueError(f"queries[{n}]: give a vector or keys/ids, not both")
            matrix[n] = check_vectors(f"queries[{n}].vector", np.asarray(q.vector), table.dim, one=True)[0]
            term_ids.append(np.empty(0, np.int64))
            continue
        if not has_terms:
            raise ValueError(f"queries[{n}]: needs positive/negative keys or ids, or a vector")
        ids, weights = _terms(q, table, limits, n)
        term_ids.append(ids)
        all_q.append(np.full(len(ids), n))
        all_ids.append(ids)
        all_w.append(weights)
    if all_ids:
        qi, ids, w = np.concatenate(all_q), np.concatenate(all_ids), np.concatenate(all_w)
        np.add.at(matrix, qi, table.index.rows[ids] * w[:, None])
    with np.errstate(over="ignore", invalid="ignore"):  # finite but huge values (1e38) overflow the norm
        norms = np.linalg.norm(matrix, axis=1)
    if not np.isfinite(norms).all():
        n = int(np.flatnonzero(~np.isfinite(norms))[0])
        raise ValueError(f"queries[{n}]: values too large, the query vector's norm overflows float32")
    if table.metric == "cosine":
        matrix = unit(matrix)
    return np.ascontiguousarray(matrix, dtype=np.float32), term_ids


def check_search_options(options: SearchOptions, limits: Limits) -> None:
    if options.topn <= 0:
        raise ValueError(f"topn: {options.topn} must be positive")
    check_limit("topn", options.topn, limits.max_topn)
    if options.restrict_vocab < 0:
        raise ValueError(f"restrict_vocab: {options.restrict_vocab} must be positive (0 = all rows)")
    if options.ef_search < 0 or options.nprobe < 0:
        raise ValueError(f"ef_search/nprobe: {options.ef_search}/{options.nprobe} must not be negative")
    check_limit("ef_search", options.ef_search, limits.max_ef_search)
    check_limit("nprobe", options.nprobe, limits.max_nprobe)
    if options.min_score is not None and np.isnan(options.min_score):
        raise ValueError("min_score: NaN is not a score")


def search(table: Table, queries: Sequence[Query], options: SearchOptions, limits: Limits) -> SearchArrays:
    """Nearest rows for a batch of queries; each query's own keys/ids are left out (gensim).

    ``most_similar(key)`` with default options is the commonest call: it takes the index's one-row
    path (:func:`_search_row`) instead of the batch bookkeeping of :func:`_search_batch`.

    Raises:
        ValueError / LimitExceededError: bad topn, restrict_vocab, vector, weights, batch size.
        MissingKeyError: a query key that is not in the table.
        FailedPreconditionError: skipping special/sub-word tokens on a table without a tokenizer.
    """
    row = _plain_search_row(table, queries, options, limits)
    if row is not None:
        return _search_row(table, row, options)
    return _search_batch(table, queries, options, limits)


def _plain_search_row(table: Table, queries: Sequence[Query], options: SearchOptions, limits: Limits) -> int | None:
    """The row of ``most_similar(key)``: one known single-key query, default options, within limits; else None.

    Anything else (or anything invalid) is None and takes the general path, with its exact errors.
    """
    if len(queries) != 1 or limits.max_queries < 1 or limits.max_terms < 1 or not options.is_default:
        return None
    if not 0 < options.topn <= limits.max_topn or not 0 <= options.ef_search <= limits.max_ef_search:
        return None
    key = queries[0].single_key()
    if key is None or not 0 < len(key) <= limits.max_key_chars:
        return None
    return table.key_to_index.get(key)


def _search_row(table: Table, row: int, options: SearchOptions) -> SearchArrays:
    """Fast path: the neighbours of one row, the row itself left out, as lists (no batch arrays)."""
    ids, scores = table.index.nearest_to_row(row, options.topn, options.ef_search)
    keys = table.index_to_key
    return SearchArrays(np.array([scores], dtype=np.float32), np.array([ids], dtype=np.int64), [keys[i] if i >= 0 else "" for i in ids])


def _search_batch(table: Table, queries: Sequence[Query], options: SearchOptions, limits: Limits) -> SearchArrays:
    """General path: any batch of queries and options."""
    check_search_options(options, limits)
    exclude = tokenizer_table.excluded_rows(table, special=options.skip_special_tokens, subword=options.skip_subword_tokens)
    matrix, term_ids = query_matrix(table, queries, limits)
    width = 0 if options.include_query_keys else max((len(t) for t in term_ids), default=0)
    drop = None
    if width:
        drop = np.full((len(queries), width), -1, dtype=np.int64)
        for n, t in enumerate(term_ids):
            drop[n, : len(t)] = t
    D, I = table.index.search(
        matrix,
        options.topn,
        exact=options.exact,
        ef_search=options.ef_search,
        nprobe=options.nprobe,
        restrict=options.restrict_vocab,
        exclude=exclude,
        drop=drop,
        min_score=options.min_score,
    )
    keys = table.index_to_key[np.maximum(I, 0)]
    keys[I < 0] = ""
    return SearchArrays(scores=D, ids=I, keys=keys.ravel().tolist())


# ---------------------------------------------------------------------------------------------
# Similarity


def similarity(table: Table, a: Sequence[str], b: Sequence[str], limits: Limits) -> np.ndarray:
    """Cosine similarity of each pair (a[i], b[i]), float32 (n,).

    Raises:
        ValueError: different lengths, empty request, over a limit. MissingKeyError: a missing key.
    """
    check_pairs(a, b, limits)
    ia, ib = table.ids_for(a), table.ids_for(b)
    for keys, ids in ((a, ia), (b, ib)):
        if (ids < 0).any():
            raise MissingKeyError(keys[int(np.argmin(ids >= 0))], table.name)
    ua, ub = table.index.rows[ia], table.index.rows[ib]
    if table.metric != "cosine":
        ua, ub = unit(ua), unit(ub)
    return np.einsum("ij,ij->i", ua, ub).astype(np.float32)

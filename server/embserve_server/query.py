"""The query vocabulary users know from gensim, over one loaded :class:`Table`.

``lookup`` (get_vector), ``search`` (most_similar / similar_by_vector) and ``similarity``.
Everything works on whole batches with numpy; results are arrays, converted to the wire format
by the servicer and to JSON by the explorer. Inputs are validated here, raising ``ValueError``
(or :class:`LimitExceededError`) that names the field, the value and the limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from embserve_server import subword, tokens
from embserve_server.config import Limits
from embserve_server.errors import FailedPreconditionError, LimitExceededError, UnknownKeyError
from embserve_server.index import compact
from embserve_server.tables import Table

MISSING_POLICIES = ("error", "skip", "zero", "subword")
DEFAULT_TOPN = 10

SUBWORD_EXTRA = subword.EXTRA  # Table.extras entry of fastText tables (n-gram buckets)


def check_limit(field_name: str, value: int, limit: int) -> None:
    if value > limit:
        raise LimitExceededError(f"{field_name}: {value} is over the limit of {limit}")


def check_keys(field_name: str, keys: Sequence[str], limits: Limits) -> None:
    if not keys:
        return
    longest = max(map(len, keys))
    if longest > limits.max_key_chars:
        raise LimitExceededError(f"{field_name}: a key of {longest} characters is over the limit of {limits.max_key_chars}")
    if "" in keys:
        raise ValueError(f"{field_name}: keys must be non-empty strings (item {list(keys).index('')} is empty)")


def check_ids(field_name: str, ids: np.ndarray, count: int) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= count):
        bad = int(ids[(ids < 0) | (ids >= count)][0])
        raise ValueError(f"{field_name}: id {bad} is out of range [0, {count})")


# ---------------------------------------------------------------------------------------------
# Lookup


@dataclass(frozen=True)
class LookupResult:
    vectors: np.ndarray  # (rows, dim) float32; rows = len(request) unless policy "skip"
    found: np.ndarray  # (len(request),) bool
    ids: np.ndarray  # (len(request),) int64, -1 when missing


def lookup(
    table: Table,
    limits: Limits,
    *,
    keys: Sequence[str] = (),
    ids: Sequence[int] | np.ndarray = (),
    missing: str = "error",
    normalize: bool = False,
) -> LookupResult:
    """Vectors of many keys (or ids) at once.

    Raises:
        ValueError: no keys and no ids, both given, bad policy, ids out of range, over a limit.
        UnknownKeyError: a missing key under policy "error".
        FailedPreconditionError: policy "subword" on a table without subword buckets.
    """
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
            check_keys("keys", keys, limits)  # an empty or over-long key is refused, not reported missing
        if missing == "error":
            raise UnknownKeyError(str(keys[int(np.argmin(found))]), table.name)
        if missing == "skip":
            vectors = source[row_ids[found]]
        else:
            vectors = np.zeros((len(row_ids), table.dim), dtype=np.float32)
            vectors[found] = source[row_ids[found]]
            if missing == "subword":
                absent = np.flatnonzero(~found)
                vectors[absent] = compose_unknown(table, [keys[int(i)] for i in absent])
    if normalize and table.metric != "cosine":
        vectors = unit(vectors)
    return LookupResult(vectors if vectors.flags.c_contiguous else np.ascontiguousarray(vectors), found, row_ids)


def compose_unknown(table: Table, keys: list[str]) -> np.ndarray:
    """fastText-style vectors for keys not in the table, from their character n-grams."""
    if SUBWORD_EXTRA not in table.extras:
        raise FailedPreconditionError(
            f"table {table.name!r} has no subword n-grams: missing policy 'subword' needs a fastText table (embserve-train train --model fasttext)"
        )
    return subword.compose_for_table(table, keys)


def unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


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


@dataclass(frozen=True)
class SearchOptions:
    topn: int = DEFAULT_TOPN
    include_query_keys: bool = False
    exact: bool = False
    ef_search: int = 0
    nprobe: int = 0
    restrict_vocab: int = 0
    min_score: float | None = None
    exclude: np.ndarray | None = field(default=None, repr=False)  # (count,) bool: rows never returned


@dataclass(frozen=True)
class SearchResult:
    scores: np.ndarray  # (nq, topn) float32, 0 where id is -1
    ids: np.ndarray  # (nq, topn) int64, -1 for "none"

    def keys(self, table: Table) -> np.ndarray:
        """(nq, topn) object array of keys, "" where id is -1."""
        out = table.keys[np.maximum(self.ids, 0)]
        out[self.ids < 0] = ""
        return out


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
        raise UnknownKeyError(pos_keys[missing[0]], table.name)
    missing = np.flatnonzero(ids[npos : npos + len(neg_keys)] < 0)
    if missing.size:
        raise UnknownKeyError(neg_keys[missing[0]], table.name)
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


def _single_key_matrix(table: Table, queries: Sequence[Query], limits: Limits) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """Fast path for the common query, one positive key and nothing else (most_similar("cat")).

    One gather for the batch instead of per-query term arrays (~60 us -> ~10 us per query); the
    matrix equals the general path's (zeros + 1.0 * row, then the same unit()). None for anything else, including every invalid
    query, so errors keep their exact messages from the general path.
    """
    keys = []
    for q in queries:
        if len(q.positive) != 1 or len(q.negative) or len(q.positive_ids) or len(q.negative_ids) or len(q.positive_weights) \
                or len(q.negative_weights) or (q.vector is not None and len(q.vector)):
            return None
        keys.append(q.positive[0])
    if "" in keys or max(map(len, keys)) > limits.max_key_chars or limits.max_terms < 1:
        return None
    ids = table.ids_for(keys)
    if (ids < 0).any():
        return None
    # (nq, dim) float32 copy of the rows as the index sees them: already unit-norm for cosine tables.
    return table.index_rows(ids), list(ids[:, None])


def nearest_to_key(table: Table, key: str, topn: int, ef_search: int = 0) -> tuple[list[int], list[float]] | None:
    """``most_similar(key, topn)`` with default options, or None when ``key`` is not in the table.

    The same search and answer as :func:`search` for that one query (the key's own row dropped,
    padded to ``topn`` with id -1 / score 0), with plain lists instead of the batch bookkeeping:
    in a busy server each numpy call there costs microseconds, more than the HNSW search itself.
    The caller has checked ``topn`` and ``ef_search`` against the limits.
    """
    row = table.key_to_id.get(key)
    if row is None:
        return None
    rows = table.index.rows
    D, I = table.index.search(rows[row : row + 1], topn + 1, ef_search=ef_search)
    ids: list[int] = []
    scores: list[float] = []
    for i, d in zip(I[0].tolist(), D[0].tolist()):
        if i >= 0 and i != row and len(ids) < topn:
            ids.append(i)
            scores.append(d)
    pad = topn - len(ids)
    return ids + [-1] * pad, scores + [0.0] * pad


def query_matrix(table: Table, queries: Sequence[Query], limits: Limits) -> tuple[np.ndarray, list[np.ndarray]]:
    """The (nq, dim) query vectors and, per query, the row ids it was built from.

    Like gensim's most_similar: each term's row is unit-normalised (cosine tables), weighted,
    summed, and the sum unit-normalised.
    """
    nq = len(queries)
    if nq == 0:
        raise ValueError("queries: the request holds no query")
    check_limit("queries", nq, limits.max_queries)
    fast = _single_key_matrix(table, queries, limits)
    if fast is not None:
        return fast
    matrix = np.zeros((nq, table.dim), dtype=np.float32)
    term_ids: list[np.ndarray] = []
    all_q, all_ids, all_w = [], [], []
    for n, q in enumerate(queries):
        has_terms = bool(len(q.positive) or len(q.negative) or len(q.positive_ids) or len(q.negative_ids))
        if q.vector is not None and len(q.vector):
            if has_terms:
                raise ValueError(f"queries[{n}]: give a vector or keys/ids, not both")
            vec = np.asarray(q.vector, dtype=np.float32)
            if vec.shape != (table.dim,):
                raise ValueError(f"queries[{n}].vector: has {vec.size} values, table {table.name!r} has {table.dim} dimensions")
            if not np.isfinite(vec).all():
                raise ValueError(f"queries[{n}].vector: contains NaN or Inf")
            matrix[n] = vec
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
        np.add.at(matrix, qi, table.index_rows(ids) * w[:, None])
    with np.errstate(over="ignore", invalid="ignore"):  # finite but huge values (1e38) overflow the norm
        norms = np.linalg.norm(matrix, axis=1)
    if not np.isfinite(norms).all():
        n = int(np.flatnonzero(~np.isfinite(norms))[0])
        raise ValueError(f"queries[{n}]: values too large, the query vector's norm overflows float32")
    if table.metric == "cosine":
        matrix = unit(matrix)
    return np.ascontiguousarray(matrix, dtype=np.float32), term_ids


def search(table: Table, queries: Sequence[Query], options: SearchOptions, limits: Limits) -> SearchResult:
    """Nearest rows for a batch of queries.

    Raises:
        ValueError / LimitExceededError: bad topn, restrict_vocab, vector, weights, batch size.
        UnknownKeyError: a query key that is not in the table.
    """
    topn = options.topn
    if topn <= 0:
        raise ValueError(f"topn: {topn} must be positive")
    check_limit("topn", topn, limits.max_topn)
    if options.restrict_vocab < 0:
        raise ValueError(f"restrict_vocab: {options.restrict_vocab} must be positive (0 = all rows)")
    if options.ef_search < 0 or options.nprobe < 0:
        raise ValueError(f"ef_search/nprobe: {options.ef_search}/{options.nprobe} must not be negative")
    check_limit("ef_search", options.ef_search, limits.max_ef_search)
    check_limit("nprobe", options.nprobe, limits.max_nprobe)
    if options.min_score is not None and np.isnan(options.min_score):
        raise ValueError("min_score: NaN is not a score")
    matrix, term_ids = query_matrix(table, queries, limits)
    nq = len(queries)
    # Query terms to drop from each row of results, padded with -1 (gensim drops them).
    width = 0 if options.include_query_keys else max((len(t) for t in term_ids), default=0)
    drop = np.full((nq, max(width, 1)), -1, dtype=np.int64)
    if width:
        for n, t in enumerate(term_ids):
            drop[n, : len(t)] = t
    D, I = table.index.search(
        matrix,
        topn + width,
        exact=options.exact,
        ef_search=options.ef_search,
        nprobe=options.nprobe,
        restrict=options.restrict_vocab,
        exclude=options.exclude,
    )
    bad = (I < 0) | (I[:, :, None] == drop[:, None, :]).any(axis=2)
    if options.min_score is not None:
        bad |= D < options.min_score
    D, I = compact(D, I, bad, topn)
    return SearchResult(scores=D, ids=I)


# ---------------------------------------------------------------------------------------------
# Similarity


def similarity(table: Table, a: Sequence[str], b: Sequence[str], limits: Limits) -> np.ndarray:
    """Cosine similarity of each pair (a[i], b[i]), float32 (n,).

    Raises:
        ValueError: different lengths, empty request, over a limit. UnknownKeyError: a missing key.
    """
    if len(a) != len(b):
        raise ValueError(f"a and b: pair lists differ in length ({len(a)} vs {len(b)})")
    if not len(a):
        raise ValueError("a/b: the request holds no pair")
    check_limit("pairs", len(a), limits.max_pairs)
    check_keys("a", a, limits)
    check_keys("b", b, limits)
    ia, ib = table.ids_for(a), table.ids_for(b)
    for keys, ids in ((a, ia), (b, ib)):
        if (ids < 0).any():
            raise UnknownKeyError(keys[int(np.argmin(ids >= 0))], table.name)
    ua, ub = table.index_rows(ia), table.index_rows(ib)
    if table.metric != "cosine":
        ua, ub = unit(ua), unit(ub)
    return np.einsum("ij,ij->i", ua, ub).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Tokenizer tables


@dataclass(frozen=True)
class Encoding:
    ids: list[int]
    tokens: list[str]


def _tokenizer_table(table: Table, call: str) -> tokens.TokenizerTable:
    tt = table.extras.get(tokens.EXTRA)
    if tt is None:
        raise FailedPreconditionError(
            f"table {table.name!r} carries no tokenizer: {call} needs a table imported with --format safetensors --tokenizer"
        )
    return tt  # type: ignore[no-any-return]


def tokenize(table: Table, texts: Sequence[str], limits: Limits, *, add_special_tokens: bool = False) -> list[Encoding]:
    """Token ids (the table's row ids) and token strings of each text (no padding, no truncation).

    Raises:
        FailedPreconditionError: the table carries no tokenizer.
        ValueError / LimitExceededError: no text, too many texts, a text over the length limit.
    """
    tt = _tokenizer_table(table, "tokenize")
    if not len(texts):
        raise ValueError("texts: the request holds no text")
    check_limit("texts", len(texts), limits.max_texts)
    longest = max(map(len, texts))
    check_limit("text characters", longest, limits.max_text_chars)
    encodings = tt.tokenizer.encode_batch(list(texts), add_special_tokens=add_special_tokens)
    return [Encoding(ids=list(e.ids), tokens=list(e.tokens)) for e in encodings]


def excluded_rows(table: Table, *, special: bool, subword: bool) -> np.ndarray | None:
    """Rows a search must never return: special and/or continuation tokens (None = no filter).

    ``special`` also drops rows without a token (ids the tokenizer never produces).

    Raises:
        FailedPreconditionError: the table carries no tokenizer.
    """
    if not special and not subword:
        return None
    tt = _tokenizer_table(table, "skipping special/sub-word tokens")
    mask = np.zeros(table.count, dtype=bool)
    if special:
        mask |= tt.special | tt.unused
    if subword:
        mask |= tt.continuation
    return mask

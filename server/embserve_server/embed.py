"""Text in, one vector out: the query core of ``Embed`` (gRPC), ``/v1/embeddings`` (HTTP) and the
explorer's sentence view.

A text becomes token ids with the table's own tokenizer (tokenizer tables: ``tokenizer.json``,
:mod:`embserve_server.tokenizer_table`) or with the word tokenizer its bundle records
(``extras.tokenizer``, rebuilt by :func:`embserve_format.text.word_tokenizer`; loaded once per table
as the :data:`EXTRA` part); the rows of those ids are pooled by :func:`embserve_format.text.pool`,
the one pooling rule (weights: the bundle's ``weights.npy``, else 1).

Unknown tokens (no row; a tokenizer table's unknown token, e.g. ``[UNK]``) are skipped and counted;
on fastText tables they are composed from their character n-grams instead (still counted as
unknown). Truncation keeps the first ``truncate`` pooled tokens, after unknown ones are skipped, as
model2vec's ``encode`` does. A text with no pooled token is a zero vector, not an error (one odd
text must not fail a batch of 256): its ``tokens`` is 0 and ``unknown`` says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from embserve_format import limits
from embserve_format.bundle import MANIFEST, TOKENIZER, Bundle, BundleError
from embserve_format.text import Tokenizer, pool, word_tokenizer

from embserve_server import subword, tokenizer_table
from embserve_server.config import Limits
from embserve_server.errors import FailedPreconditionError
from embserve_server.validate import check_ids, check_limit

if TYPE_CHECKING:
    from embserve_server.tables import Table

EXTRA = "words"  # Table.extras entry: the recorded word Tokenizer
DEFAULT_TRUNCATE = limits.DEFAULT_TRUNCATE  # tokens pooled per text unless the request says otherwise
GATHER_BYTES = 1 << 20  # token rows gathered at a time when pooling a batch (bounds a call's working memory)


def load(b: Bundle) -> Tokenizer | None:
    """The word tokenizer a bundle records, or None (tokenizer tables, tables that record none).

    Raises:
        BundleError: recorded settings this version cannot reproduce.
    """
    if b.file(TOKENIZER) is not None:
        return None  # a language model's tokenizer.json wins: it produced the table's rows
    try:
        return word_tokenizer(b.extras.get("tokenizer"))
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{b.path / MANIFEST}: extras.tokenizer: {exc}") from exc


class Embedded(NamedTuple):  # a tuple: built on every call, cheaper than a frozen dataclass
    """Vectors of a batch of texts and what went into each (see proto EmbedResponse)."""

    vectors: np.ndarray  # (n, d) float32, C-contiguous
    tokens: np.ndarray  # (n,) int64 tokens pooled
    unknown: np.ndarray  # (n,) int64 tokens not in the table
    truncated: np.ndarray  # (n,) int64 tokens past truncate
    seen: np.ndarray  # (n,) int64 tokens the text produced (OpenAI's usage counts these)


class _Tokens(NamedTuple):
    ids: np.ndarray  # (T,) int64 rows, -1 = unknown
    lengths: np.ndarray  # (n,) int64 tokens per text
    words: list[str] | None  # (T,) token strings (word tables: what fastText composes)


def has_text_tokenizer(table: Table) -> bool:
    """The table can turn text into tokens (its own tokenizer, or a recorded word tokenizer)."""
    return tokenizer_table.EXTRA in table.extras or EXTRA in table.extras


def _tokenize(table: Table, texts: Sequence[str]) -> _Tokens:
    tt = table.extras.get(tokenizer_table.EXTRA)
    if tt is not None:
        tok: Any = tt.tokenizer
        if len(texts) == 1:
            # One text: encode() holds the GIL for its ~25 us, where encode_batch*() release and retake
            # it around the call (a thread switch in a busy server), and its ids make one array.
            one = tok.encode(texts[0], add_special_tokens=False).ids
            ids = np.array(one, dtype=np.int64)
            if tt.unk_id is not None and tt.unk_id in one:
                ids[ids == tt.unk_id] = -1
            return _Tokens(ids, np.array([len(one)], dtype=np.int64), None)
        encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # no offsets: ~2x faster
        encodings = encode(list(texts), add_special_tokens=False)
        per_text = [e.ids for e in encodings]
        lengths = np.fromiter(map(len, per_text), dtype=np.int64, count=len(per_text))
        ids = np.fromiter(chain.from_iterable(per_text), dtype=np.int64, count=int(lengths.sum()))
        if tt.unk_id is not None:
            ids[ids == tt.unk_id] = -1
        return _Tokens(ids, lengths, None)
    words: Tokenizer | None = table.extras.get(EXTRA)
    if words is None:
        raise FailedPreconditionError(
            f"table {table.name!r} has no tokenizer and records no word tokenizer (manifest extras.tokenizer): "
            "text cannot become its tokens; embed token ids instead, or import the table with a tokenizer"
        )
    per_text_words = [words(t) for t in texts]
    lengths = np.fromiter(map(len, per_text_words), dtype=np.int64, count=len(per_text_words))
    flat = list(chain.from_iterable(per_text_words))
    return _Tokens(table.ids_for(flat) if flat else np.zeros(0, np.int64), lengths, flat)


def _check_request(table: Table, limits: Limits, n: int, texts: Sequence[str], truncate: int, dimensions: int) -> None:
    if n == 0:
        raise ValueError("texts: the request holds no text (give texts or token_ids)")
    check_limit("texts", n, limits.max_texts)
    if texts:
        longest = max(map(len, texts))
        check_limit("text characters", longest, limits.max_text_chars)
        check_limit("characters in the call", sum(map(len, texts)), limits.max_call_chars)
        empty = next((i for i, t in enumerate(texts) if not t), None)
        if empty is not None:
            raise ValueError(f"texts[{empty}]: an empty text has no tokens to embed")
    if truncate < 0:
        raise ValueError(f"truncate: {truncate} must be positive (tokens kept per text), or 0 to refuse long texts")
    check_limit("truncate", truncate, limits.max_text_tokens)
    if dimensions:
        if table.bundle.pooling.get("pca_ordered") is not True:
            raise ValueError(
                f"dimensions: table {table.name!r} does not say its columns are PCA-ordered (manifest pooling.pca_ordered), "
                "so its first columns are not a smaller embedding; leave dimensions at 0"
            )
        if not 0 < dimensions <= table.dim:
            raise ValueError(f"dimensions: {dimensions} is not in [1, {table.dim}] (table {table.name!r} has {table.dim} columns)")


def embed(
    table: Table,
    limits: Limits,
    *,
    texts: Sequence[str] = (),
    token_ids: Sequence[Sequence[int]] = (),
    normalize: bool = True,
    truncate: int = DEFAULT_TRUNCATE,
    dimensions: int = 0,
) -> Embedded:
    """One vector per text (or per token-id list): the weighted mean of its token rows.

    Raises:
        ValueError / LimitExceededError: no text, both texts and ids, an empty text, over a limit,
            ids out of range, a text over ``max_text_tokens`` with ``truncate=0``, bad ``dimensions``.
        FailedPreconditionError: texts on a table with no tokenizer and no recorded word tokenizer.
    """
    if len(texts) and len(token_ids):
        raise ValueError("texts and token_ids: give one or the other, not both")
    n = len(texts) or len(token_ids)
    _check_request(table, limits, n, texts, truncate, dimensions)
    if len(texts):
        toks = _tokenize(table, texts)
    else:
        lengths = np.fromiter(map(len, token_ids), dtype=np.int64, count=n)
        check_limit("token ids in the call", int(lengths.sum()), limits.max_keys)
        ids = np.fromiter(chain.from_iterable(token_ids), dtype=np.int64, count=int(lengths.sum()))
        check_ids("token_ids", ids, table.count)
        toks = _Tokens(ids, lengths, None)
    return _pool_in_groups(table, limits, toks, normalize=normalize, truncate=truncate, dimensions=dimensions)


def _pool_in_groups(table: Table, limits: Limits, toks: _Tokens, *, normalize: bool, truncate: int, dimensions: int) -> Embedded:
    """:func:`_pool_tokens` over groups of texts of at most ~:data:`GATHER_BYTES` of token rows each
    (a text longer than that is a group of its own), so a batch's gathered rows never all exist at
    once: 256 texts of 15 tokens of 256-d rows would be 4 MB, which the allocator keeps afterwards."""
    per_group = max(1, GATHER_BYTES // (4 * table.dim))
    if toks.ids.size <= per_group:
        return _pool_tokens(table, limits, toks, normalize=normalize, truncate=truncate, dimensions=dimensions)
    ends = np.cumsum(toks.lengths)
    parts, first, start = [], 0, 0
    while first < len(ends):
        last = max(first + 1, int(np.searchsorted(ends, start + per_group, side="right")))  # texts [first, last)
        end = int(ends[last - 1])
        group = _Tokens(toks.ids[start:end], toks.lengths[first:last], None if toks.words is None else toks.words[start:end])
        parts.append(_pool_tokens(table, limits, group, normalize=normalize, truncate=truncate, dimensions=dimensions))
        first, start = last, end
    return Embedded(*(np.concatenate(field) for field in zip(*parts)))


def _pool_tokens(table: Table, limits: Limits, toks: _Tokens, *, normalize: bool, truncate: int, dimensions: int) -> Embedded:
    ids, lengths = toks.ids, toks.lengths
    longest = int(lengths.max()) if len(lengths) else 0
    if (not ids.size or int(ids.min()) >= 0) and longest <= (truncate or limits.max_text_tokens):
        # Every token known, nothing to cut (the common case): the rows of the ids, as they come.
        w = _weights(table)
        vectors = pool(table.vectors.take(ids, axis=0), lengths, weights=None if w is None else w[ids], normalize=normalize,
                       dimensions=dimensions, component=table.bundle.component)
        zero = np.zeros(len(lengths), dtype=np.int64)
        return Embedded(vectors, lengths, zero, zero, lengths)
    known = ids >= 0
    text_of = np.repeat(np.arange(len(lengths)), lengths)  # (T,) text of each token
    unknown = np.bincount(text_of[~known], minlength=len(lengths))
    sub = table.extras.get(subword.EXTRA)
    composing = sub is not None and toks.words is not None
    use = np.ones_like(known) if composing else known  # fastText: unknown words are composed, kept
    kept = np.bincount(text_of[use], minlength=len(lengths))
    if truncate == 0:
        over = np.flatnonzero(kept > limits.max_text_tokens)
        if over.size:
            i = int(over[0])
            raise ValueError(
                f"texts[{i}]: {int(kept[i])} tokens is over the limit of {limits.max_text_tokens} "
                "(truncate=0 refuses long texts; set truncate to cut them instead)"
            )
        cut = kept
    else:
        cut = np.minimum(kept, truncate)
        if (kept > truncate).any():
            # Rank of each used token inside its text; keep the first `truncate`.
            pos = np.flatnonzero(use)
            starts = np.cumsum(kept) - kept
            rank = np.arange(pos.size) - np.repeat(starts, kept)
            keep_pos = pos[rank < truncate]
            use = np.zeros_like(use)
            use[keep_pos] = True
    chosen = ids[use]
    known_chosen = chosen >= 0
    rows = table.vectors.take(np.where(known_chosen, chosen, 0), axis=0)  # (T', d) one gather
    weights = _weights(table)
    w = None if weights is None else weights[np.where(known_chosen, chosen, 0)]
    if composing and not known_chosen.all():
        assert sub is not None and toks.words is not None  # composing implies both
        missing = np.flatnonzero(~known_chosen)
        where = np.flatnonzero(use)[missing]
        rows[missing] = sub.compose([toks.words[int(i)] for i in where])
        if w is not None:
            # An unknown word is rarer than any known one: it gets the largest weight.
            w[missing] = _largest_weight(table)
    vectors = pool(rows, cut, weights=w, normalize=normalize, dimensions=dimensions, component=table.bundle.component)
    return Embedded(vectors, cut.astype(np.int64), unknown.astype(np.int64), (kept - cut).astype(np.int64), lengths)


def _weights(table: Table) -> np.ndarray | None:
    """The bundle's per-row pooling weights (``weights.npy``), or None for 1 each."""
    return table.bundle.weights


def _largest_weight(table: Table) -> float:
    """The table's largest pooling weight, found once per version (not a scan of every row per call)."""
    def build() -> float:
        weights = table.bundle.weights
        return float(weights.max()) if weights is not None and weights.size else 1.0

    return table.derived("largest pooling weight", "extras", build)  # type: ignore[no-any-return]


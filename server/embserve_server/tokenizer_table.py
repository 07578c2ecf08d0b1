"""Tokenizer tables (a language model's input embedding layer): the bundle's tokenizer.json,
loaded with the Hugging Face ``tokenizers`` library, plus masks of special and continuation tokens.

:mod:`embserve_server.tables` lists :func:`load` among its optional parts (the ``tokenizer`` extra); a
table without ``tokenizer.json`` simply has no such extra and tokenizer calls answer FAILED_PRECONDITION.
Not to be confused with the bearer tokens of auth (:mod:`embserve_server.auth`).
The manifest's ``extras["tokenizer"]`` (written by ``embserve_trainer.transformer``) names the
special ids, ids without a token, and how sub-word continuations are marked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from embserve_format.bundle import TOKENIZER, Bundle, BundleError
from embserve_format.text import pool

from embserve_server.config import Limits
from embserve_server.errors import FailedPreconditionError
from embserve_server.validate import check_limit

if TYPE_CHECKING:
    from embserve_server.tables import Table

logger = logging.getLogger(__name__)

EXTRA = "tokenizer"


@dataclass(frozen=True)
class TokenizerTable:
    tokenizer: Any  # tokenizers.Tokenizer, padding and truncation off
    special: np.ndarray  # (count,) bool: special tokens ([CLS], [PAD], ...)
    continuation: np.ndarray  # (count,) bool: sub-word continuation tokens ("##ing")
    unused: np.ndarray  # (count,) bool: rows no text can produce (ids without a token)
    unk_id: int | None = None  # the id of the model's unknown token ([UNK]), None when it has none


def _mask(count: int, ids: Any, what: str, path: object) -> np.ndarray:
    arr = np.asarray(ids or [], dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= count):
        raise BundleError(f"{path}: manifest extras tokenizer.{what} has ids outside [0, {count})")
    mask = np.zeros(count, dtype=bool)
    mask[arr] = True
    return mask


def load(b: Bundle) -> TokenizerTable | None:
    """The bundle's tokenizer and token masks, or None for tables without ``tokenizer.json``.

    Raises:
        BundleError: the tokenizer cannot be read, or its tokens do not match the table's keys
            (a tokenizer from another model would silently map text to the wrong rows).
    """
    path = b.file(TOKENIZER)
    if path is None:
        return None
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise BundleError(f"{path}: serving a tokenizer table needs: pip install tokenizers") from exc
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own Exception type for malformed files
        raise BundleError(f"{path}: not a valid tokenizer.json ({exc})") from exc
    # Model files often pad to a fixed length (MiniLM: 128) and truncate: a lookup service returns
    # the tokens of the text itself, all of them (texts are bounded by Limits.max_text_chars).
    tokenizer.no_padding()
    tokenizer.no_truncation()
    info = b.extras.get(EXTRA) or {}
    unused = _mask(b.count, info.get("unused_ids"), "unused_ids", path)
    renamed = _mask(b.count, info.get("renamed_ids"), "renamed_ids", path)
    _check_vocab(tokenizer, b, unused | renamed, path)
    special = _mask(b.count, info.get("special_ids"), "special_ids", path)
    prefix = str(info.get("continuation_prefix") or "")
    start = str(info.get("word_start_prefix") or "")
    if prefix:
        continuation = np.fromiter((k.startswith(prefix) for k in _keys(b)), dtype=bool, count=b.count)
    elif start:
        # BPE/Unigram vocabularies mark word starts ("Ġcat", "▁cat"); the rest continue a word.
        starts = np.fromiter((k.startswith(start) for k in _keys(b)), dtype=bool, count=b.count)
        continuation = ~starts & ~special & ~unused
    else:
        continuation = np.zeros(b.count, dtype=bool)
    continuation &= ~renamed  # stand-in keys say nothing about the token
    logger.info(
        "table %s: tokenizer with %d special, %d continuation, %d unused rows", b.name, int(special.sum()),
        int(continuation.sum()), int(unused.sum()),
    )
    unk_token = getattr(tokenizer.model, "unk_token", None)  # tokenizer.model copies the model: read once
    unk_id = tokenizer.token_to_id(unk_token) if unk_token else None
    return TokenizerTable(tokenizer, special, continuation, unused, unk_id)


_KEY_CHUNK = 4096  # keys read at a time at load: a few hundred KB of str objects, freed chunk by chunk


def _keys(b: Bundle) -> Iterator[str]:
    """The table's keys in row order, a small chunk at a time: the key list's own iteration makes
    its str objects 65,536 at a time, which for a 30k vocabulary is all of them at once (~4 MB that
    the allocator keeps after the load)."""
    for a in range(0, b.count, _KEY_CHUNK):
        yield from b.keys[a : min(b.count, a + _KEY_CHUNK)]


def _check_vocab(tokenizer: Any, b: Bundle, stand_in: np.ndarray, path: object) -> None:
    """Every token sits on the row of its id (except rows whose key is a stand-in), and no token id
    is past the table's rows.

    Row by row through ``id_to_token``, a chunk of keys at a time: ``get_vocab()`` would build a dict
    of every token (~7 MB of str and int objects for a 30k vocabulary, which the allocator keeps
    after the check); it is built only to name the offending id when the check fails.
    """
    found, wrong, first = 0, 0, None
    for i, key in enumerate(_keys(b)):
        token = tokenizer.id_to_token(i)
        if token is None:
            continue
        found += 1
        if not stand_in[i] and key != token:
            wrong += 1
            first = first or (token, i, key)
    if found != tokenizer.get_vocab_size(with_added_tokens=True):
        vocab = tokenizer.get_vocab(with_added_tokens=True)  # token -> id: only to name the id past the rows
        last = max(vocab.values(), default=0)
        raise BundleError(f"{path}: tokenizer has token id {last}, table has only {b.count} rows")
    if first is not None:
        t, i, k = first
        raise BundleError(
            f"{path}: token {t!r} has id {i} but row {i} is key {k!r} "
            f"({wrong} mismatches): the tokenizer does not belong to this table"
        )


@dataclass(frozen=True)
class Encoding:
    ids: list[int]
    tokens: list[str]


def tokenizer_of(table: Table, call: str) -> TokenizerTable:
    """The table's tokenizer, or FailedPreconditionError naming the ``call`` that needs one."""
    tt = table.extras.get(EXTRA)
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
    tt = tokenizer_of(table, "tokenize")
    if not len(texts):
        raise ValueError("texts: the request holds no text")
    check_limit("texts", len(texts), limits.max_texts)
    longest = max(map(len, texts))
    check_limit("text characters", longest, limits.max_text_chars)
    encodings = tt.tokenizer.encode_batch(list(texts), add_special_tokens=add_special_tokens)
    return [Encoding(ids=list(e.ids), tokens=list(e.tokens)) for e in encodings]


@dataclass(frozen=True)
class TextRows:
    """The tokens of one text and their rows (pack.pack_lookup_text puts them on the wire)."""

    ids: list[int]
    tokens: list[str]
    vectors: np.ndarray  # (len(ids), dim) float32, raw rows
    mean: np.ndarray  # (dim,) float32 mean of the rows; empty when not asked for or no token


def lookup_text(table: Table, text: str, limits: Limits, *, add_special_tokens: bool = False, mean: bool = False) -> TextRows:
    """Tokenize ``text`` and gather its tokens' raw rows (and, with ``mean``, their pooled mean: Embed's
    weighted mean without the unit length).

    Raises:
        FailedPreconditionError: the table carries no tokenizer.
        ValueError / LimitExceededError: the text is over the length limit.
    """
    (enc,) = tokenize(table, [text], limits, add_special_tokens=add_special_tokens)
    vectors = np.ascontiguousarray(table.vectors[np.asarray(enc.ids, dtype=np.int64)], dtype=np.float32)
    average = np.empty(0, np.float32)
    if mean and len(vectors):  # the one pooling rule (Embed's), weighted by the bundle's pooling weights, not normalised
        w = table.bundle.weights
        average = pool(vectors, np.array([len(vectors)]), weights=None if w is None else w[enc.ids], normalize=False,
                       component=table.bundle.component)[0]
    return TextRows(enc.ids, enc.tokens, vectors, average.astype(np.float32, copy=False))


def excluded_rows(table: Table, *, special: bool, subword: bool) -> np.ndarray | None:
    """Rows a search must never return: special and/or continuation tokens (None = no filter).

    ``special`` also drops rows without a token (ids the tokenizer never produces).

    Raises:
        FailedPreconditionError: the table carries no tokenizer.
    """
    if not special and not subword:
        return None
    tt = tokenizer_of(table, "skipping special/sub-word tokens")
    mask = np.zeros(table.count, dtype=bool)
    if special:
        mask |= tt.special | tt.unused
    if subword:
        mask |= tt.continuation
    return mask

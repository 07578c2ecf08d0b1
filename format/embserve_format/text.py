"""Text -> tokens -> one vector: the word tokenizer rule and the pooling maths (numpy only).

The ONE home of both, shared by the trainer (which records the tokenizer in the manifest) and the
server's ``Embed`` (which reads it back), so a table is queried with exactly the tokens it was
trained on.

Tokens: every choice lives in a frozen :class:`Tokenizer` whose :meth:`Tokenizer.settings` go into
the bundle manifest (``extras.tokenizer``); :func:`word_tokenizer` rebuilds it from there.

    tok = Tokenizer(cleaner="gcide")
    tok("Affect \\Af*fect\"\\, v. t. To act upon. [1913 Webster]")   # ['affect', 'v', 't', 'to', 'act', 'upon']

Vectors: :func:`pool` turns the token rows of a batch of texts into one vector each, the weighted
mean ``v = sum(w_i * row_i) / sum(w_i)`` (weights: the bundle's ``weights.npy`` pooling weights, else 1),
minus its projection on the bundle's common component ``U`` (``component.npy``, SIF's second step:
``v - (v U^T) U``), optionally cut to the first ``dimensions`` columns (PCA-ordered tables) and scaled
to unit length. A text with no pooled token is a zero vector.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from embserve_format.arrays import unit

# gensim's Cython training routines silently drop everything past 10,000 tokens of one sentence
# (MAX_WORDS_IN_BATCH); longer documents are cut into chunks of at most this many tokens instead.
MAX_DOCUMENT_TOKENS = 10_000
NORMALIZATIONS = ("NFKC", "NFC", "NFKD", "NFD", "none")
# Named token patterns: the name is recorded, the regex is recorded too (in case it ever changes).
PATTERNS = {
    # letters/digits runs, with inner apostrophes kept ("don't", "o'clock"); "_" and punctuation split
    "words": r"[^\W_]+(?:'[^\W_]+)*",
    # letters only: drops numbers, handy for dictionaries and analogy-style evaluation
    "alpha": r"[^\W\d_]+(?:'[^\W\d_]+)*",
    # whitespace-separated chunks, untouched (pre-tokenised corpora)
    "whitespace": r"\S+",
}

# --- cleaners: markup removed before tokenising. Each is a pure str -> str function. --------------

_TAG = re.compile(r"<[^<>\n]{0,200}>")  # <i>, </b>, <pc@worldsoul.org>
# GCIDE's ASCII accent codes sit inside words: caf['e], [=a]ft, [i^]: keep the letter(s).
_GCIDE_ACCENT = re.compile(r"\[(?:[=.'`^~\"-]([a-zA-Z]{1,2})|([a-zA-Z]{1,2})[`'^~\":=])\]")
_GCIDE_BRACKET = re.compile(r"\[[^\[\]]*\]")  # [1913 Webster], [Obs.], etymologies [L. ad + facere]
_GCIDE_PRON = re.compile(r"\\[^\\\n]{0,120}\\")  # \Af*fect"\  pronunciation / syllables
_GCIDE_CITE = re.compile(r"--\s?[A-Z][\w.']*(?:\s+(?:[A-Z][\w.']*|of|de|the))*")  # --Milton. --Sir W. Scott.
_GCIDE_BRACES = re.compile(r"[{}]")  # {Afeard}: a cross-reference, the word stays


def clean_none(text: str) -> str:
    return text


def clean_markup(text: str) -> str:
    """Remove ``<...>`` tags only."""
    return _TAG.sub(" ", text)


def clean_gcide(text: str) -> str:
    """GCIDE (dict-gcide) markup: source tags like ``[1913 Webster]``, bracketed etymologies and usage
    labels, ``\\pro*nun*ci*a*tion\\``, ``--Author.`` citations, ``{cross-refs}`` and ``<...>`` tags.
    The dictd header entries (``00-database-*``) are dropped whole."""
    if text.startswith("00-database-") or text.startswith("00database"):
        return ""
    text = _TAG.sub(" ", text)
    text = _GCIDE_ACCENT.sub(lambda m: m.group(1) or m.group(2), text)
    while True:  # innermost brackets first: etymologies nest ([OE. aferen, AS. [=a]f?ran.])
        text, n = _GCIDE_BRACKET.subn(" ", text)
        if not n:
            break
    text = _GCIDE_PRON.sub(" ", text)
    text = _GCIDE_CITE.sub(" ", text)
    return _GCIDE_BRACES.sub("", text)


CLEANERS: dict[str, Callable[[str], str]] = {"none": clean_none, "markup": clean_markup, "gcide": clean_gcide}


@dataclass(frozen=True)
class Tokenizer:
    """Text -> list of tokens. All fields are recorded in the manifest (``extras.tokenizer``)."""

    cleaner: str = "none"  # one of CLEANERS
    normalization: str = "NFKC"  # Unicode normal form applied after cleaning ("none" to skip)
    lowercase: bool = True  # str.lower() after normalisation
    pattern: str = "words"  # one of PATTERNS
    max_document_tokens: int = MAX_DOCUMENT_TOKENS

    def __post_init__(self) -> None:
        if self.cleaner not in CLEANERS:
            raise ValueError(f"unknown cleaner {self.cleaner!r}: use one of {', '.join(CLEANERS)}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {self.normalization!r}: use one of {', '.join(NORMALIZATIONS)}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"unknown token pattern {self.pattern!r}: use one of {', '.join(PATTERNS)}")
        if self.max_document_tokens < 1:
            raise ValueError(f"max_document_tokens must be positive, got {self.max_document_tokens}")
        # Compiled once; frozen dataclass, hence object.__setattr__.
        object.__setattr__(self, "_regex", re.compile(PATTERNS[self.pattern]))
        object.__setattr__(self, "_clean", CLEANERS[self.cleaner])

    def __call__(self, text: str) -> list[str]:
        """Tokens of ``text`` (deterministic: same text and settings, same tokens)."""
        text = self._clean(text)  # type: ignore[attr-defined]
        if self.normalization != "none":
            text = unicodedata.normalize(self.normalization, text)  # type: ignore[arg-type]
        if self.lowercase:
            text = text.lower()
        return self._regex.findall(text)  # type: ignore[attr-defined,no-any-return]

    def chunks(self, text: str) -> Iterator[list[str]]:
        """Tokens of ``text`` cut into documents of at most ``max_document_tokens`` (empty ones skipped)."""
        tokens = self(text)
        n = self.max_document_tokens
        for start in range(0, len(tokens), n):
            yield tokens[start : start + n]

    def settings(self) -> dict[str, object]:
        """Everything needed to tokenise exactly like this again (goes into the manifest)."""
        return {**asdict(self), "regex": PATTERNS[self.pattern], "lowercase_method": "str.lower"}


def word_tokenizer(settings: Mapping[str, Any] | None) -> Tokenizer | None:
    """The word :class:`Tokenizer` a manifest recorded (``extras.tokenizer``), or None when it records none.

    A tokenizer table's ``extras.tokenizer`` (a language model's: ``model``, ``special_ids``, ...) is
    not a word tokenizer and gives None too; such tables carry ``tokenizer.json`` instead.

    Raises:
        ValueError: recorded settings this code cannot reproduce (an unknown cleaner, normal form or
            pattern, or a pattern whose regex differs from the one recorded).
    """
    if not settings or "pattern" not in settings:
        return None
    names = {f.name for f in fields(Tokenizer)}
    tok = Tokenizer(**{k: v for k, v in settings.items() if k in names})
    recorded = settings.get("regex")
    if recorded is not None and recorded != PATTERNS[tok.pattern]:
        raise ValueError(f"tokenizer pattern {tok.pattern!r} was recorded as regex {recorded!r}, this version has {PATTERNS[tok.pattern]!r}")
    return tok


def pool(
    rows: np.ndarray,
    lengths: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    normalize: bool = True,
    dimensions: int = 0,
    component: np.ndarray | None = None,
) -> np.ndarray:
    """One vector per text: the weighted mean of its token rows, less its common component.

    Args:
        rows: (T, d) float32, the token rows of every text one after the other.
        lengths: (n,) int, tokens of each text (sum = T); a text may have none.
        weights: (T,) float32 pooling weight of each token row, or None for 1 each.
        normalize: scale each vector to unit L2 length (zero vectors stay zero).
        dimensions: keep only the first this many columns (0 = all), before normalising.
        component: (k, d) orthonormal rows whose projection is removed from each mean (over all d
            columns, before ``dimensions`` cuts them), or None.

    Returns:
        (n, d or dimensions) C-contiguous float32; a zero row for a text without tokens (or whose
        weights sum to 0).
    """
    ln = np.asarray(lengths, dtype=np.int64).tolist()
    if dimensions and component is None:
        rows = rows[:, :dimensions]
    if weights is not None:
        w = np.asarray(weights, dtype=np.float32)
        rows = rows * w[:, None]
    if len(ln) == 1 and ln[0] == len(rows):
        # One text (the commonest call): the same reduce and division as the loop below, without
        # its per-text bookkeeping, which costs more than the arithmetic for one short text.
        out = np.add.reduce(rows, axis=0, keepdims=True, dtype=np.float32)
        total = np.float32(len(rows) if weights is None else w.sum())
        if total > 0:
            out /= total
        else:
            out[:] = 0  # no token, or weights summing to 0: the zero row
    else:
        out = np.zeros((len(ln), rows.shape[1]), dtype=np.float32)
        # One reduce per text: np.add.reduceat over the rows axis of a 2-D array is ~10x slower
        # (measured 22 ms vs 2 ms for 256 texts x 4,490 tokens x 256 dims).
        totals = [0.0] * len(ln)
        start = 0
        for i, n in enumerate(ln):
            if n:
                np.add.reduce(rows[start : start + n], axis=0, out=out[i])
                totals[i] = float(n) if weights is None else float(w[start : start + n].sum())
            start += n
        # A text without tokens (or whose weights sum to 0) keeps its zero row.
        div = np.array(totals, dtype=np.float32)[:, None]
        np.divide(out, div, out=out, where=div > 0)
    if component is not None:
        c = np.asarray(component, dtype=np.float32)
        out -= (out @ c.T) @ c
        if dimensions:
            out = np.ascontiguousarray(out[:, :dimensions])
    return unit(out) if normalize else out

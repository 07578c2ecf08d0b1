"""A reverse dictionary from GCIDE (Debian dict-gcide): (headword, definition) pairs nobody here wrote.

An entry starts with an unindented paragraph ``Headword \\pro*nun"ci*a`tion\\, n. [etymology]``
followed by its first sense. We keep single-word alphabetic headwords (the first entry of each; entries
that list variant headwords are skipped),
clean the markup with the trainer's GCIDE cleaner, drop the leading part of speech and sense
number/field label, mask the headword (and words sharing its stem: all but its last 3 letters, at least 4) inside its own definition, cut
the definition to 40 words, and draw ``n`` pairs with a seeded generator.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from embserve_format.text import clean_gcide
from embserve_trainer.corpus import iter_documents, resolve_corpus

GCIDE = Path("/usr/share/dictd/gcide.dict.dz")
_HEAD = re.compile(r"^([A-Za-z]{3,})\s*\\")  # "Abdomen \Ab*do"men\"
_POS = re.compile(r"^[\s,;]*(?:(?:n|a|adv|v|prep|conj|interj|pron|imp|p|pr|pl|sing|t|i|obs|Obs)\.\s*(?:&|,|;)?\s*)+")
_LABEL = re.compile(r"^\s*(?:\d+\.\s*)?(?:\([^)]{0,40}\)\s*)*")  # "1. (Anat.) "
MAX_WORDS = 40


def read_pairs(path: Path = GCIDE) -> list[tuple[str, str]]:
    """Every usable (headword, definition) in file order, first entry of each headword."""
    seen: set[str] = set()
    pairs = []
    for doc in iter_documents(resolve_corpus([path]), "paragraph"):
        m = _HEAD.match(doc)
        if not m:
            continue
        head = m.group(1)
        if head.lower() in seen:
            continue
        text = clean_gcide(doc)[len(head):]
        if text.lstrip().startswith(","):  # "Orthographic, Orthographical": variant headwords, skipped
            continue
        text = _LABEL.sub("", _POS.sub("", text))
        stem = head[: max(4, len(head) - 3)]  # "disgorg" masks disgorging too
        text = re.sub(rf"\b{re.escape(stem)}\w*", "___", text, flags=re.IGNORECASE)
        words = text.split()
        if len(words) < 4:
            continue
        seen.add(head.lower())
        pairs.append((head.lower(), " ".join(words[:MAX_WORDS])))
    return pairs


def sample_pairs(n: int, seed: int = 0, path: Path = GCIDE, *, held_out_from: int | None = None) -> list[tuple[str, str]]:
    """``n`` pairs drawn with ``seed``; with ``held_out_from``, only among the pairs that the sample of
    ``n`` with that seed does not hold (a development split disjoint from the reported one)."""
    pairs = read_pairs(path)
    pool = np.arange(len(pairs))
    if held_out_from is not None:
        taken = np.random.default_rng(held_out_from).choice(len(pairs), size=min(n, len(pairs)), replace=False)
        pool = np.setdiff1d(pool, taken)
    rows = np.random.default_rng(seed).choice(pool, size=min(n, len(pool)), replace=False)
    return [pairs[i] for i in sorted(rows)]


if __name__ == "__main__":
    for h, d in sample_pairs(10):
        print(f"{h}: {d}")

"""Whole words to add to a distilled table's vocabulary (``embserve-train distill --vocabulary``).

The ``n`` most frequent words of a word table (its rows in frequency order: GloVe 6B's, from a
corpus nobody here wrote) that are alphabetic and that the base model's tokenizer does not already
hold as one token, most frequent first, one per line:

    python bench/distill_vocabulary.py --words /tmp/dtables/glove/1 --tokenizer /tmp/dtables/minilm/1/tokenizer.json \
        --n 20000 > /tmp/glove-words.txt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def extra_words(keys: list[str], known: set[str], n: int) -> list[str]:
    """The first ``n`` of ``keys`` (frequency order) that are alphabetic and not in ``known``."""
    out: list[str] = []
    for k in keys:
        if len(out) == n:
            break
        if k.isalpha() and k.isascii() and k not in known:
            out.append(k)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--words", type=Path, required=True, help="a word-table bundle whose rows are in frequency order")
    p.add_argument("--tokenizer", type=Path, required=True, help="the base model's tokenizer.json")
    p.add_argument("--n", type=int, default=20000)
    args = p.parse_args()
    from tokenizers import Tokenizer

    known = set(Tokenizer.from_file(str(args.tokenizer)).get_vocab())
    keys = (args.words / "keys.txt").read_text(encoding="utf-8").split("\n")
    sys.stdout.write("".join(w + "\n" for w in extra_words(keys, known, args.n)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

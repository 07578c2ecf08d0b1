"""gensim's evaluation files read exactly as gensim 4.4 reads them (word pairs and analogies).

One reader per file format, shared by the trainer's evaluator and the client's gensim face
(:class:`embserve_client.RemoteKeyedVectors`), so both count the same lines.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def read_word_pairs(
    path: str | os.PathLike[str], *, delimiter: str = "\t", encoding: str = "utf8", case_insensitive: bool = True
) -> list[tuple[str, str, float]]:
    """A word-pair file as gensim's ``evaluate_word_pairs`` reads it: ``(a, b, human score)`` per valid line.

    ``#`` lines are comments; lines without exactly three fields or with a non-numeric score are
    skipped (logged), as gensim does. ``case_insensitive`` upper-cases both words.
    """
    lines: list[tuple[str, str, float]] = []
    with open(path, encoding=encoding) as fin:
        for line_no, line in enumerate(fin):
            if not line or line.startswith("#"):
                continue
            try:
                a, b, sim_text = line.split(delimiter)
                if case_insensitive:
                    a, b = a.upper(), b.upper()
                lines.append((a, b, float(sim_text)))
            except (ValueError, TypeError):
                logger.info("Skipping invalid line #%d in %s", line_no, path)
    return lines


def read_analogies(path: str | os.PathLike[str], case_insensitive: bool) -> list[tuple[str, list[tuple[str, ...]]]]:
    """An analogy file as gensim reads it: (section name, [(a, b, c, expected), ...]) in file order.

    ``: section`` lines open a section; other lines need four words (gensim skips the rest).

    Raises:
        ValueError: a question line before the first section header (gensim's message).
    """
    parsed: list[tuple[str, list[tuple[str, ...]]]] = []
    with open(path, "rb") as fin:
        for line_no, raw in enumerate(fin):
            line = raw.decode("utf8")
            if line.startswith(": "):
                parsed.append((line.lstrip(": ").strip(), []))
                continue
            if not parsed:
                raise ValueError(f"Missing section header before line #{line_no} in {path}")
            words = [word.upper() for word in line.split()] if case_insensitive else line.split()
            if len(words) != 4:
                logger.info("Skipping invalid line #%i in %s", line_no, path)
                continue
            parsed[-1][1].append(tuple(words))
    return parsed

"""What every importer shares: options, the error that names ``FILE:LINE``, the key rules (UTF-8,
duplicates, bundle-safe), the ``COUNT DIM`` header, the byte-order mark and the progress bar."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from embserve_format.bundle import valid_key

from embserve_trainer.progress import bar

logger = logging.getLogger(__name__)

UNICODE_ERRORS = ("strict", "replace", "ignore")  # gensim's unicode_errors values
DUPLICATES = ("keep-first", "error")  # keep-first: gensim's behaviour
DEFAULT_BLOCK_SIZE = 4 << 20  # bytes per parsed block: bounds the parser's temporaries (~10x this)
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class ReadOptions:
    """How strictly to read an input table.

    Attributes:
        unicode_errors: "strict" refuses keys that are not UTF-8; "replace"/"ignore" as in gensim.
        duplicates: "keep-first" drops later rows of a repeated key (gensim); "error" refuses them.
        limit: read only the first N rows (None: all).
        block_size: bytes parsed at once (memory bound; tests use tiny blocks).
        progress: show a progress bar (rows, rows/s, ETA) on stderr.
    """

    unicode_errors: str = "strict"
    duplicates: str = "keep-first"
    limit: int | None = None
    block_size: int = DEFAULT_BLOCK_SIZE
    progress: bool = True

    def __post_init__(self) -> None:
        if self.unicode_errors not in UNICODE_ERRORS:
            raise ValueError(f"unicode_errors {self.unicode_errors!r}: use one of {', '.join(UNICODE_ERRORS)}")
        if self.duplicates not in DUPLICATES:
            raise ValueError(f"duplicates {self.duplicates!r}: use one of {', '.join(DUPLICATES)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit {self.limit}: must be a positive number of rows")
        if self.block_size < 1:
            raise ValueError(f"block_size {self.block_size}: must be a positive number of bytes")


class FormatError(ValueError):
    """A malformed input file: ``FILE:LINE: what was wrong; what was expected``."""

    def __init__(self, path: Path | str, line: int | str, what: str, expected: str) -> None:
        super().__init__(f"{path}:{line}: {what}; expected {expected}")


class RowError(Exception):
    """A rule a row breaks, before the reader knows where the row is (see :meth:`at`)."""

    def __init__(self, what: str, expected: str) -> None:
        super().__init__(what)
        self.what, self.expected = what, expected

    def at(self, path: Path | str, line: int | str) -> FormatError:
        return FormatError(path, line, self.what, self.expected)


@dataclass
class Table:
    """A parsed input: (count, dim) float32 rows, their keys, and what the reader did (manifest)."""

    vectors: np.ndarray
    keys: list[str]
    info: dict[str, Any] = field(default_factory=dict)


class KeyCollector:
    """Decodes keys, applies the duplicate policy and keeps the bundle's key rules, row by row."""

    def __init__(self, options: ReadOptions, first_line: int = 1) -> None:
        self.keys: list[str] = []
        self.dropped = 0  # later rows of repeated keys (keep-first)
        self.repaired = 0  # keys that were not UTF-8 (unicode_errors replace/ignore)
        self._seen: set[str] = set()
        self._options = options
        self._first_line = first_line  # file line of the first row, for "first on line N"

    def add(self, raw: bytes) -> bool:
        """Take the next row's key; True if its row is kept, False for a dropped duplicate.

        Raises:
            RowError: invalid UTF-8 (strict), an empty key or one with a line break, a duplicate
                (duplicates="error").
        """
        try:
            key = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if self._options.unicode_errors == "strict":
                raise RowError(
                    f"key {raw!r} is not valid UTF-8 (byte {exc.start})",
                    "UTF-8 keys (or pass --unicode-errors replace|ignore)",
                ) from None
            key = raw.decode("utf-8", self._options.unicode_errors)
            self.repaired += 1
        if not valid_key(key):  # the bundle's one key rule: non-empty, no line break
            what = f"key {key!r} holds a line break" if key else "an empty key"
            raise RowError(what, "a non-empty key without \\r or \\n before the first space")
        if key in self._seen:
            if self._options.duplicates == "error":
                first = self._first_line + self.keys.index(key)
                raise RowError(
                    f"duplicate key {key!r} (first on line {first})",
                    "unique keys (or --duplicates keep-first: keep the first, as gensim does)",
                )
            self.dropped += 1
            return False
        self._seen.add(key)
        self.keys.append(key)
        return True

    def info(self) -> dict[str, Any]:
        if self.repaired:
            logger.warning("%d keys were not valid UTF-8 (unicode_errors=%s)", self.repaired, self._options.unicode_errors)
        return {
            "unicode_errors": self._options.unicode_errors,
            "duplicates": self._options.duplicates,
            "duplicates_dropped": self.dropped,
            "keys_not_utf8": self.repaired,
        }


def check_header(path: Path, raw: bytes) -> tuple[int, int]:
    """``COUNT DIM`` of a word2vec/fastText first line, both positive ASCII integers."""
    parts = raw.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        shown = raw.rstrip(b"\r\n")[:60].decode("utf-8", "backslashreplace")
        raise FormatError(
            path, 1, f"header {shown!r} is not 'COUNT DIM'",
            "two positive integers (a file without a header is --format glove)",
        )
    count, dim = int(parts[0]), int(parts[1])
    if count < 1 or dim < 1:
        raise FormatError(path, 1, f"header says {count} rows of {dim} values", "at least one row of at least one value")
    return count, dim


def skip_bom(f: BinaryIO, path: Path) -> bool:
    """Step over a UTF-8 byte-order mark (said in the log); True if there was one."""
    if f.read(len(BOM)) == BOM:
        logger.info("%s: stripped a UTF-8 byte-order mark", path)
        return True
    f.seek(0)
    return False


@contextlib.contextmanager
def open_progress(total: int, desc: str, unit: str, enabled: bool) -> Iterator[Any]:
    """A rows, rows/s and ETA progress bar (tqdm), or a silent stand-in."""
    progress = bar(total, desc, unit=unit, disable=not enabled)
    try:
        yield progress
    finally:
        progress.close()

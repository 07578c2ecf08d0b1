"""Stream training text from disk: plain files, directories, .gz/.bz2/.xz and dictd (.dict/.dict.dz).

Nothing here holds a corpus in memory: files are opened one at a time through the matching
decompressor and yielded as documents (one per line, or one per blank-line separated paragraph).
Every path is checked before any text is read, so a typo fails in milliseconds with the file name.

    files = resolve_corpus([Path("/usr/share/dictd/gcide.dict.dz")])   # [CorpusFile(path, kind="dictd", ...)]
    for doc in iter_documents(files): ...                               # str, one document each
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from embserve_format.bundle import sha256_file

# Suffix -> opener. dictd's ".dz" is dictzip: gzip with random-access chunks, readable as plain gzip.
OPENERS: dict[str, Callable[..., Any]] = {".gz": gzip.open, ".dz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# Formats people hand us that we cannot stream as text; named in the error so the fix is obvious.
UNSUPPORTED = (".zip", ".7z", ".rar", ".zst", ".lz4", ".lz", ".tar", ".tgz", ".npy", ".npz", ".pdf", ".bin")
DOCUMENTS = ("auto", "line", "paragraph")
SNIFF_BYTES = 1 << 16
ENCODING = "utf-8"
DECODE_ERRORS = "replace"  # GCIDE itself has 3 stray cp1252 bytes; a few U+FFFD beat refusing the corpus


@dataclass(frozen=True)
class CorpusFile:
    path: Path
    compression: str  # "none", "gz", "dz", "bz2", "xz"
    kind: str  # "text" or "dictd" (a dictd database: paragraphs are entries)


def _compression(path: Path) -> str:
    suffix = path.suffix.lower()
    return suffix[1:] if suffix in OPENERS else "none"


def _kind(path: Path) -> str:
    name = path.name.lower()
    return "dictd" if name.endswith(".dict") or name.endswith(".dict.dz") else "text"


def open_text(path: Path) -> IO[str]:
    """Open ``path`` as UTF-8 text through the decompressor its suffix names."""
    opener = OPENERS.get(path.suffix.lower())
    raw = opener(path, "rb") if opener else open(path, "rb")
    return io.TextIOWrapper(raw, encoding=ENCODING, errors=DECODE_ERRORS, newline=None)


def _check_file(path: Path) -> CorpusFile:
    """Refuse unsupported, unreadable, corrupt or binary files before training starts."""
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    if path.suffix.lower() in UNSUPPORTED or suffix in (".tar.gz",):
        raise ValueError(
            f"{path}: unsupported corpus format {suffix!r}; unpack or convert it to plain UTF-8 text "
            f"(supported: plain text, {', '.join(OPENERS)}, dictd .dict/.dict.dz, or a directory of those)"
        )
    compression = _compression(path)
    opener = OPENERS.get(path.suffix.lower())
    try:
        with (opener(path, "rb") if opener else open(path, "rb")) as f:
            head = f.read(SNIFF_BYTES)
    except OSError as exc:
        # gzip/bz2/lzma raise OSError subclasses (BadGzipFile, "Invalid data stream") for corrupt input.
        what = exc.strerror or str(exc)
        fix = "check the file permissions" if isinstance(exc, PermissionError) else (
            f"the file is not valid {compression} data; re-download it or drop the suffix"
            if compression != "none" else "check that the path is a readable file"
        )
        raise ValueError(f"{path}: cannot read corpus file ({what}); {fix}") from exc
    except (EOFError, zlib.error, lzma.LZMAError) as exc:
        raise ValueError(f"{path}: truncated or corrupt {compression} file ({exc}); re-create it") from exc
    if b"\x00" in head:
        raise ValueError(
            f"{path}: looks binary (NUL bytes), not text; pass plain UTF-8 text or a compressed text file"
        )
    return CorpusFile(path, compression, _kind(path))


def resolve_corpus(paths: Iterable[Path]) -> list[CorpusFile]:
    """Expand directories (recursively, sorted, hidden entries skipped) and check every file.

    Args:
        paths: files and/or directories, in the order given on the command line.

    Returns:
        The corpus files in reading order.

    Raises:
        ValueError: a path that does not exist, an unsupported or unreadable file, or no files at all.
    """
    out: list[CorpusFile] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(
                f for f in p.rglob("*")
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            if not found:
                raise ValueError(f"{p}: directory holds no corpus files; add text files or pass another --corpus")
            out.extend(_check_file(f) for f in found)
        elif p.is_file():
            out.append(_check_file(p))
        elif p.exists():
            raise ValueError(f"{p}: not a regular file or directory; pass text files or a directory")
        else:
            raise ValueError(f"{p}: no such corpus file or directory; check the --corpus path")
    if not out:
        raise ValueError("no corpus given: pass --corpus PATH [PATH ...]")
    return out


def document_mode(files: list[CorpusFile], documents: str) -> str:
    """Resolve ``documents="auto"``: dictd databases are paragraphs (entries), everything else lines."""
    if documents not in DOCUMENTS:
        raise ValueError(f"unknown document mode {documents!r}: use one of {', '.join(DOCUMENTS)}")
    if documents != "auto":
        return documents
    return "paragraph" if any(f.kind == "dictd" for f in files) else "line"


def _paragraphs(lines: Iterable[str]) -> Iterator[str]:
    block: list[str] = []  # one paragraph's lines at a time, never the file
    for line in lines:
        if line.strip():
            block.append(line)
        elif block:
            yield "".join(block)
            block = []
    if block:
        yield "".join(block)


def iter_documents(files: list[CorpusFile], documents: str = "line") -> Iterator[str]:
    """Yield documents from ``files`` in order, streaming.

    Args:
        files: from :func:`resolve_corpus`.
        documents: "line" (one document per line, like gensim's LineSentence) or "paragraph"
            (blank-line separated blocks; dictd entries and wrapped prose).

    Raises:
        ValueError: a file that turns out corrupt halfway (the message names it).
    """
    for cf in files:
        try:
            with open_text(cf.path) as f:
                if documents == "paragraph":
                    yield from _paragraphs(f)
                else:
                    yield from f
        except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise ValueError(f"{cf.path}: corpus file became unreadable while streaming ({exc}); re-create it") from exc


def corpus_sha256(files: list[CorpusFile]) -> tuple[str, dict[str, str]]:
    """sha256 of every file's raw bytes, and one digest over them all (in reading order)."""
    combined = hashlib.sha256()
    per_file: dict[str, str] = {}
    for cf in files:
        digest = sha256_file(cf.path)
        per_file[str(cf.path)] = digest
        combined.update(bytes.fromhex(digest))
    return combined.hexdigest(), per_file

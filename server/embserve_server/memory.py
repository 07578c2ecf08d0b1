"""What a table version costs in memory, and the budget that refuses a version that would not fit.

Bytes are counted by part (:data:`MEMORY_PARTS`: rows, index, keys, extras), the parts that
``embserve tables --memory`` and ``embserve_table_bytes`` show. :func:`memory_parts` is the one
rule: a loaded :class:`~embserve_server.tables.Table` passes what load built, :func:`estimate`
passes what load would build, from the bundle's manifest and file sizes, before anything is read.

:class:`MemoryBudget` holds ``--memory-limit`` (default: the cgroup's limit, when the process has
one). Before a version is loaded the registry asks it whether what the process holds plus the
version's estimate stays within the limit; a version that would not is refused, and the version
being served stays (new versions load next to the old, so both are resident at once). What the
process holds is the larger of its resident memory now and its runtime (resident memory before
any table loaded) plus every loaded version's parts: mapped pages the kernel reclaimed (file
pages, under pressure) are not resident now, but come back as searches touch them.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embserve_format.bundle import INDEX, KEY_INDEX, KEYS, TOKENIZER, VECTORS, read_manifest

MEMORY_PARTS = ("rows", "index", "keys", "extras")  # memory_parts keys, the metrics' "part" label
KEY_INDEX_BYTES_PER_KEY = 16  # a key index built at load: offsets, hash, row (12 B) + its buckets
NORM_BYTES = 4  # float32 norm a row, kept for the exact re-rank of quantized index storage
# A loaded tokenizer.json (the `tokenizers` library's vocabulary maps, both directions) holds ~8x
# its file: measured 3.6 MiB resident for the 29,525 tokens of a WordPiece vocabulary (0.44 MB file).
TOKENIZER_BYTES_PER_TOKEN = 128
CGROUP_V2 = Path("/sys/fs/cgroup/memory.max")
CGROUP_V1 = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")
_NO_LIMIT = 1 << 62  # cgroup v1 writes "no limit" as a page-rounded 2**63 - 1
_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def memory_parts(files: dict[str, int], *, built_index: int, built_keys: int, norms: int, count: int = 0) -> dict[str, int]:
    """Bytes by part from a bundle's file sizes (``{file name: bytes}``) and what load builds.

    Args:
        files: every file the manifest lists, with its size.
        built_index: bytes of the exact index built at load when the bundle ships none.
        built_keys: bytes of the key index built at load when the bundle ships no keys.idx.
        norms: bytes of the row norms a quantized index keeps for its re-rank (0 otherwise).
        count: the table's rows: a tokenizer.json is counted as the tokenizer it loads into
            (:data:`TOKENIZER_BYTES_PER_TOKEN` a row), not as its file, which is read and dropped.
    """
    files = dict(files)
    keys = files.pop(KEYS, 0) + files.pop(KEY_INDEX, built_keys)
    index = (files.pop(INDEX, 0) or built_index) + norms
    tokenizer = count * TOKENIZER_BYTES_PER_TOKEN if files.pop(TOKENIZER, None) is not None else 0
    return {"rows": files.pop(VECTORS, 0), "index": index, "keys": keys, "extras": sum(files.values()) + tokenizer}


def file_sizes(path: Path, manifest: dict[str, Any]) -> dict[str, int]:
    """Size of every file the manifest lists (0 for one that vanished: its mapped pages live on)."""
    return {name: _size(path / name) for name in manifest["files"]}


def estimate(path: Path) -> dict[str, int]:
    """Bytes by part that loading the bundle at ``path`` would hold, from its manifest and file sizes.

    Raises:
        BundleError: the manifest is missing or malformed (the load would refuse it too).
    """
    manifest = read_manifest(path)
    count, dim = int(manifest["count"]), int(manifest["vector_size"])
    factory = str((manifest.get("index") or {}).get("factory") or "Flat")
    files = file_sizes(path, manifest)
    return memory_parts(
        files,
        built_index=count * dim * 4,  # the exact Flat over the (normalised) rows
        built_keys=count * KEY_INDEX_BYTES_PER_KEY,
        norms=count * NORM_BYTES if INDEX in files and not factory.endswith("Flat") else 0,
        count=count,
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def parse_size(text: str) -> int:
    """``"512M"`` -> bytes (suffixes K, M, G, T are powers of 1024; an optional trailing B or iB).

    Raises:
        ValueError: not a positive whole number with an optional suffix.
    """
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    digits, suffix = (value[:-1], value[-1]) if value[-1:] in _SUFFIXES and value[-1:] else (value, "")
    if not digits.isdigit() or int(digits) <= 0:
        raise ValueError(f"memory limit {text!r}: expected a positive number of bytes with an optional K, M, G or T suffix (e.g. 6G)")
    return int(digits) * _SUFFIXES[suffix]


def cgroup_limit(v2: Path = CGROUP_V2, v1: Path = CGROUP_V1) -> int | None:
    """The memory limit of the process's cgroup (v2 ``memory.max``, else v1), None when there is none."""
    for path in (v2, v1):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max" or not text.isdigit() or int(text) >= _NO_LIMIT:
            return None
        return int(text)
    return None


def resolve_limit(setting: str) -> int | None:
    """``--memory-limit``: "auto" (the cgroup's limit, if any), "none", or a size (:func:`parse_size`)."""
    if setting.strip().lower() == "auto":
        return cgroup_limit()
    if setting.strip().lower() in ("none", "off", "0"):
        return None
    return parse_size(setting)


def resident_bytes() -> int:
    """The process's resident set size now (``/proc/self/statm``; elsewhere its peak, ru_maxrss)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


class MemoryLimitError(Exception):
    """Loading a version would take the process past its memory limit (the version is refused)."""


@dataclass(frozen=True)
class MemoryBudget:
    """``limit`` bytes for the whole process (None: no limit); :meth:`check` before every load.

    ``runtime``: resident bytes before any table loaded (default: now, when the registry is built).
    """

    limit: int | None = None
    runtime: int = field(default_factory=resident_bytes)

    def check(self, path: Path, what: str, held: int = 0) -> dict[str, int]:
        """The estimate of the bundle at ``path``; raise :class:`MemoryLimitError` if it would not fit.

        Args:
            path: the version's bundle directory.
            what: names the version in the message.
            held: bytes of every version loaded now (their parts).

        Raises:
            MemoryLimitError: max(resident now, runtime + held) + the estimate > the limit (the message gives them).
            BundleError: no readable manifest.
        """
        parts = estimate(path)
        if self.limit is None:
            return parts
        need, now = sum(parts.values()), max(resident_bytes(), self.runtime + held)
        if now + need > self.limit:
            shown = ", ".join(f"{part} {_mib(size)}" for part, size in parts.items())
            raise MemoryLimitError(
                f"{what} needs ~{_mib(need)} ({shown}); the process holds {_mib(now)} of its "
                f"{_mib(self.limit)} limit (--memory-limit): it would not fit, so it is not loaded"
            )
        return parts


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"

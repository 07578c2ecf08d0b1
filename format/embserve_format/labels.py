"""Version labels of a table (format 1): ``<tables>/<name>/labels.json`` beside the version directories.

A label ("stable", "canary") names one version of the table, so readers can ask for a role
instead of a number and an operator moves the role from version to version::

    <tables>/glove/labels.json    {"format": "embserve-labels/1", "labels": {"stable": 3, "canary": 4}}

The file is optional (no file: no labels), written atomically (a hidden temporary file in the
table directory, fsynced, renamed over the old one, the directory fsynced) and under an exclusive
lock on a hidden lock file, so two writers changing different labels both keep their change.
Reading validates everything: a malformed file raises :class:`LabelsFileError` and a reader
(the server) keeps what it had. Whether the named versions exist and are valid is the writer's
check (:func:`check_targets`), and the server's again when it reads the file.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from embserve_format.bundle import BundleError, list_versions, read_bundle, validate_name, validate_version
from embserve_format.bundle_writer import _fsync, write_atomically  # one way the format writes a file

LABELS = "labels.json"
LABELS_FORMAT = "embserve-labels/1"
_LOCK = ".labels.lock"  # hidden: list_tables / list_versions ignore it
# A letter first, so a label never reads as a version number ("3" is a version, "v3" a label).
_LABEL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
MAX_LABELS = 64  # labels per table


class LabelsFileError(BundleError):
    """A labels file that cannot be read or is malformed (its table's labels stay as they were)."""


def validate_label(label: str) -> str:
    """Return ``label`` if it is a valid label name, else raise ``ValueError`` saying what is allowed."""
    if not isinstance(label, str) or not _LABEL_RE.match(label):
        raise ValueError(
            f"label {label!r}: expected a letter then up to 63 letters, digits, '_', '.' or '-' (e.g. stable, canary)"
        )
    return label


def labels_path(tables_dir: str | os.PathLike[str], name: str) -> Path:
    return Path(tables_dir) / validate_name(name) / LABELS


def parse_labels(data: object, source: str = LABELS) -> dict[str, int]:
    """The ``{label: version}`` of a decoded labels document.

    Raises:
        LabelsFileError: wrong format tag, not a mapping, a bad label name or version.
    """
    if not isinstance(data, dict) or data.get("format") != LABELS_FORMAT or not isinstance(data.get("labels"), dict):
        raise LabelsFileError(f"{source}: expected {{\"format\": \"{LABELS_FORMAT}\", \"labels\": {{label: version}}}}")
    labels: dict[str, int] = {}
    for label, version in data["labels"].items():
        try:
            validate_label(label)
            if isinstance(version, bool) or not isinstance(version, int):
                raise ValueError(f"label {label!r}: version {version!r} is not an integer")
            validate_version(version)
        except ValueError as exc:
            raise LabelsFileError(f"{source}: {exc}") from exc
        labels[label] = version
    if len(labels) > MAX_LABELS:
        raise LabelsFileError(f"{source}: {len(labels)} labels, at most {MAX_LABELS}")
    return labels


def read_labels(tables_dir: str | os.PathLike[str], name: str) -> dict[str, int]:
    """The labels of table ``name`` (``{}`` when it has no labels file).

    Raises:
        LabelsFileError: the file is unreadable or malformed.
    """
    path = labels_path(tables_dir, name)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsFileError(f"{path}: cannot read ({exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabelsFileError(f"{path}: not JSON ({exc})") from exc
    return parse_labels(data, str(path))


def parse_assignments(items: Sequence[str], remove: Sequence[str] = ()) -> dict[str, int | None]:
    """``["stable=3", "canary="]`` plus ``remove`` names -> ``{label: version or None to drop}``.

    Raises:
        ValueError: not ``LABEL=VERSION`` / ``LABEL=``, a bad label or version, a label given twice.
    """
    changes: dict[str, int | None] = {}
    for item in items:
        label, sep, version = item.partition("=")
        if not sep or not (version == "" or (version.isdigit() and int(version) > 0)):
            raise ValueError(f"{item!r}: expected LABEL=VERSION (e.g. stable=3), or LABEL= to remove the label")
        _add(changes, validate_label(label), int(version) if version else None)
    for label in remove:
        _add(changes, validate_label(label), None)
    return changes


def _add(changes: dict[str, int | None], label: str, version: int | None) -> None:
    if label in changes:
        raise ValueError(f"label {label!r} is given twice")
    changes[label] = version


def apply_changes(labels: Mapping[str, int], changes: Mapping[str, int | None]) -> dict[str, int]:
    """``labels`` with ``changes`` applied (None removes a label; removing an absent one is a no-op)."""
    out = dict(labels)
    for label, version in changes.items():
        if version is None:
            out.pop(validate_label(label), None)
        else:
            out[validate_label(label)] = validate_version(version)
    if len(out) > MAX_LABELS:
        raise ValueError(f"{len(out)} labels, at most {MAX_LABELS} per table")
    return dict(sorted(out.items()))


def check_targets(tables_dir: str | os.PathLike[str], name: str, versions: set[int], *, verify_checksums: bool = True) -> None:
    """Raise ``ValueError`` unless every version exists and is a valid bundle (what a server would load).

    Raises:
        ValueError: a version that is not on disk (the message lists those that are).
        BundleError / ChecksumError: a version that a server would refuse.
    """
    present = list_versions(tables_dir, name)
    for version in sorted(versions):
        if version not in present:
            shown = ", ".join(map(str, present)) or "none"
            raise ValueError(f"table {name!r} has no version {version}; versions on disk: {shown}")
        path = Path(tables_dir) / name / str(version)
        read_bundle(path, verify_checksums=verify_checksums, mmap=True, key_index=True)


@contextmanager
def locked(tables_dir: str | os.PathLike[str], name: str) -> Iterator[None]:
    """Hold the table's labels lock (exclusive, released on exit): read, change and write under it."""
    table_dir = Path(tables_dir) / validate_name(name)
    if not table_dir.is_dir():
        raise ValueError(f"table {name!r}: no directory {table_dir}")
    fd = os.open(table_dir / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_labels(tables_dir: str | os.PathLike[str], name: str, labels: Mapping[str, int]) -> Path:
    """Replace table ``name``'s labels file atomically (hold :func:`locked` around read-change-write).

    An empty mapping removes the file. Returns the file's path.

    Raises:
        ValueError: a bad label or version. OSError: the directory cannot be written.
    """
    clean = apply_changes({}, labels)
    path = labels_path(tables_dir, name)
    if not clean:
        path.unlink(missing_ok=True)
        _fsync(path.parent)
        return path
    body = (json.dumps({"format": LABELS_FORMAT, "labels": clean}, indent=2) + "\n").encode("utf-8")
    write_atomically(path, lambda f: f.write(body))
    return path


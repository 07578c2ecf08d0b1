"""The registry of served tables: which versions of each table are loaded, and what labels name.

:class:`TableRegistry` scans the tables directory (at start, on the poll, on AdminService.Reload),
loads new versions with :func:`~embserve_server.tables.load_table` next to the serving ones and
swaps one :class:`Served` snapshot in a single assignment, so in-flight calls finish on the
version they started with and a reader never sees a label naming a version that is not loaded.
Labels come from each table's ``labels.json`` (:mod:`embserve_format.labels`, resolved by
:mod:`embserve_server.labelling`); the memory limit from :mod:`embserve_server.memory`.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from embserve_format.bundle import MANIFEST, BundleError, bundle_path, list_tables, list_versions, validate_name
from embserve_format.labels import apply_changes, locked, read_labels, validate_label, write_labels

from embserve_server import labelling, memory
from embserve_server.errors import LabelTargetError, TableUnavailableError, UnknownLabelError, UnknownTableError, UnknownVersionError
from embserve_server.tables import Table, load_table

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class ReloadOutcome:
    table: str
    outcome: str  # "loaded", "unchanged", "refused"
    version: int
    message: str = ""
    reason: str = ""  # a refusal's: "invalid" (bundle), "memory" (--memory-limit), "vanished" (files gone)


@dataclass(frozen=True)
class Served:
    """What the registry serves, replaced whole on every change so readers take one consistent look."""

    versions: dict[str, dict[int, Table]] = field(default_factory=dict)  # name -> version -> loaded table
    labels: dict[str, dict[str, int]] = field(default_factory=dict)  # name -> label -> a loaded version
    refusals: tuple[ReloadOutcome, ...] = ()  # versions on disk refused (invalid, too big), by table and version

    @functools.cached_property
    def tables(self) -> dict[str, Table]:
        """name -> the serving (newest loaded) version."""
        return {name: loaded[max(loaded)] for name, loaded in self.versions.items()}


class TableRegistry:
    """The tables being served: per table, the newest ``keep_versions`` valid versions plus the labelled ones.

    Requests name a version, or a label (``labels.json`` beside the versions, see
    :mod:`embserve_format.labels`), or get the newest (the *serving* version). Keeping several lets a
    training run's snapshots, an A/B pair or a rollout be read version by version; every version
    is memory-mapped, so one more costs its key index and little else. A label whose new version
    is missing or refused keeps its previous version (and the log says why). Before a version
    loads, ``budget`` estimates it and refuses it when the process would pass its memory limit.

    Args:
        tables_dir: root holding ``<name>/<version>/`` bundles.
        default_table: table used when a request names none (default: the only/first table).
        mmap: memory-map vectors and flat index storage.
        verify_checksums: check every file's sha256 before serving it.
        pinned: serve exactly this version of these tables.
        keep_versions: how many of the newest valid versions of each table stay loaded (>= 1).
        on_change: called with (Table | None, ReloadOutcome) after every load attempt (metrics).
        budget: the memory limit checked before every load (default: none).
    """

    def __init__(
        self,
        tables_dir: str | Path,
        *,
        default_table: str | None = None,
        mmap: bool = True,
        verify_checksums: bool = True,
        pinned: dict[str, int] | None = None,
        keep_versions: int = 1,
        on_change: Callable[[Table | None, ReloadOutcome], None] | None = None,
        budget: memory.MemoryBudget | None = None,
    ) -> None:
        if keep_versions < 1:
            raise ValueError(f"keep_versions: {keep_versions} must be at least 1")
        self.tables_dir = Path(tables_dir)
        self._default = default_table
        self._mmap = mmap
        self._verify = verify_checksums
        self._pinned = dict(pinned or {})
        self.keep_versions = keep_versions
        self.on_change = on_change  # settable: a forked worker points it at its own metrics
        self.budget = budget or memory.MemoryBudget()
        self._served = Served()  # replaced whole on every change, never mutated: readers need no lock
        self._refused: dict[tuple[str, int], float] = {}  # (name, version) -> manifest mtime refused
        self._refusals: dict[tuple[str, int], ReloadOutcome] = {}  # standing refusals (health details)
        self._notes = labelling.Notes(logger)  # why a label kept its previous version, logged once
        self._lock = threading.Lock()  # serialises reloads and label changes, never held by readers
        self._held = 0  # during a scan: bytes of the versions loaded (served, and loaded by the scan so far)

    # -- reading side (request threads) --------------------------------------------------------

    def get(self, name: str = "", version: int = 0, label: str = "") -> Table:
        """Table ``name`` ("" = default table) at ``version`` or ``label`` (neither: the serving, newest one).

        Raises:
            ValueError: both a version and a label, or a malformed label.
            UnknownTableError: no such table.
            UnknownVersionError / UnknownLabelError: that version is not loaded, no such label.
            TableUnavailableError: nothing is loaded yet.
        """
        served = self._served  # one look: a label and the versions it names always match
        tables = served.tables
        if not name:
            if not tables:
                raise TableUnavailableError("no table is loaded yet")
            name = self.default_name(tables)
        table = tables.get(name)
        if table is None:
            raise UnknownTableError(name, sorted(tables))
        if label:
            if version:
                raise ValueError(f"version {version} and version_label {label!r}: give one or the other")
            labels = served.labels.get(name, {})
            version = labels.get(validate_label(label), 0)
            if not version:
                raise UnknownLabelError(name, label, labels)
        if version and version != table.version:
            loaded = served.versions.get(name, {})
            if version not in loaded:
                raise UnknownVersionError(name, version, sorted(loaded))
            return loaded[version]
        return table

    def versions(self, name: str) -> list[Table]:
        """The loaded versions of table ``name``, oldest first (empty if none)."""
        return [t for _, t in sorted(self._served.versions.get(name, {}).items())]

    def labels(self, name: str) -> dict[str, int]:
        """The labels of table ``name`` as served: label -> loaded version."""
        return dict(self._served.labels.get(name, {}))

    def refusals(self) -> list[ReloadOutcome]:
        """Versions on disk that are not served because they were refused (invalid, too big), by table."""
        return list(self._served.refusals)

    def default_name(self, tables: dict[str, Table] | None = None) -> str:
        tables = self._served.tables if tables is None else tables
        if self._default and self._default in tables:
            return self._default
        return sorted(tables)[0] if tables else ""

    def all(self) -> list[Table]:
        """The serving version of every table, by name."""
        return [t for _, t in sorted(self._served.tables.items())]

    def __len__(self) -> int:
        return len(self._served.versions)

    # -- loading side (start-up, poller, admin RPC) ---------------------------------------------

    def reload(self, only: str | None = None) -> list[ReloadOutcome]:
        """Scan the tables directory: load every newer valid version and every newly labelled one.

        A version that fails validation is refused and logged, the serving version stays, and the
        refused version is not retried until its manifest changes. A version refused for memory is
        checked again at every scan and loads once it fits.
        """
        with self._lock:
            served = self._served
            self._held = _held(served)
            # Served tables too: a table directory that vanished must be noticed (and kept), not skipped.
            names = sorted({*list_tables(self.tables_dir), *served.versions}) if only is None else [validate_name(only)]
            versions, labels = dict(served.versions), dict(served.labels)
            outcomes = []
            for name in names:
                wanted = self._notes.read(self.tables_dir, name, labels.get(name, {}))
                before = versions.get(name, {})
                found, versions[name], labels[name] = self._reload_one(name, before, labels.get(name, {}), wanted)
                self._held += sum(t.nbytes for v, t in versions[name].items() if v not in before)  # loaded by this scan
                outcomes.extend(found)
            self._publish(versions, labels, outcomes)
            return outcomes

    def set_labels(self, name: str, changes: dict[str, int | None]) -> dict[str, int]:
        """Assign (version) or remove (None) labels of table ``name``: load, then write ``labels.json``.

        The new versions are loaded (and checked against the memory limit) before the file is
        written; nothing changes when one of them is missing or refused.

        Returns:
            The table's labels now.

        Raises:
            ValueError: a malformed label or version. LabelTargetError: a version missing or refused.
            LabelsFileError: the labels file on disk is malformed (fix or remove it first).
        """
        name = validate_name(name)
        with self._lock, locked(self.tables_dir, name):
            self._held = _held(self._served)
            wanted = apply_changes(read_labels(self.tables_dir, name), changes)
            on_disk = list_versions(self.tables_dir, name)
            served = self._served
            for label, version in changes.items():
                if version is not None and version not in on_disk and version not in served.versions.get(name, {}):
                    raise LabelTargetError(f"label {label!r}: table {name!r} has no version {version} "
                                           f"(versions on disk: {', '.join(map(str, on_disk)) or 'none'}); labels unchanged")
            found, loaded, labels = self._reload_one(name, served.versions.get(name, {}), served.labels.get(name, {}), wanted)
            for label, version in changes.items():
                if version is not None and labels.get(label) != version:
                    why = self._refusals.get((name, version))
                    raise LabelTargetError(f"label {label!r}: table {name!r} version {version} was refused"
                                           f"{f' ({why.message})' if why else ''}; labels unchanged")
            write_labels(self.tables_dir, name, wanted)
            self._publish({**served.versions, name: loaded}, {**served.labels, name: labels}, found)
            logger.info("table %s: labels now %s", name, labels or "none")
            return dict(labels)

    def _publish(self, versions: dict[str, dict[int, Table]], labels: dict[str, dict[str, int]], outcomes: list[ReloadOutcome]) -> None:
        versions = {name: loaded for name, loaded in versions.items() if loaded}
        refusals = tuple(o for _, o in sorted(self._refusals.items()))
        self._served = Served(versions, {name: labels[name] for name in versions if labels.get(name)}, refusals)
        for outcome in outcomes:
            if self.on_change:
                loaded = versions.get(outcome.table, {})
                self.on_change(loaded[max(loaded)] if loaded and outcome.outcome == "loaded" else None, outcome)

    def _reload_one(
        self, name: str, loaded: dict[int, Table], labels: dict[str, int], wanted: dict[str, int]
    ) -> tuple[list[ReloadOutcome], dict[int, Table], dict[str, int]]:
        """Outcomes, the versions of ``name`` to keep loaded, and its labels as they will be served.

        Kept: the newest ``keep_versions`` valid versions, and the versions the ``wanted`` labels
        name; a label whose version is missing or refused keeps its previous version (``labels``).
        """
        try:
            versions = list_versions(self.tables_dir, name)
        except OSError as exc:
            logger.error("table %s: cannot list versions (%s); keeping what is served", name, exc)
            return [], loaded, labels
        if name in self._pinned:
            versions = [v for v in versions if v == self._pinned[name]]
        outcomes: list[ReloadOutcome] = []
        current = max(loaded) if loaded else None
        vanished = current if current is not None and current not in versions else None
        if vanished is not None and self._refused.get((name, vanished)) != _VANISHED:
            self._refused[(name, vanished)] = _VANISHED  # log and count it once
            logger.error("table %s version %d vanished from %s; still serving the loaded copy", name, vanished, self.tables_dir)
            outcomes.append(ReloadOutcome(name, "refused", vanished, "bundle directory vanished; still serving the loaded copy", "vanished"))
        newest: dict[int, Table] = {}
        # Newest first, until keep_versions are loaded (with one version kept: down to the serving one).
        for version in reversed(versions):
            if len(newest) >= self.keep_versions or (self.keep_versions == 1 and current is not None and version < current):
                break
            table = self._load(name, version, loaded, newest, outcomes)
            if table is not None:
                newest[version] = table
        if vanished is not None:
            newest[vanished] = loaded[vanished]  # the mapped pages outlive the files
            newest = dict(sorted(newest.items())[-self.keep_versions :])  # unless newer versions replace it
        keep = dict(newest)
        for version in sorted(set(wanted.values()) - set(keep)):
            table = loaded.get(version) or (self._load(name, version, loaded, keep, outcomes) if version in versions else None)
            if table is not None:
                keep[version] = table
        served_labels = self._notes.resolve(name, wanted, labels, keep, self._refusals)
        for version in set(served_labels.values()) - set(keep):
            keep[version] = loaded[version]  # a label's previous version stays while its new one is refused
        if current is not None and current in keep and not outcomes:
            outcomes.append(ReloadOutcome(name, "unchanged", current))
        serving = max(keep) if keep else 0
        for key in [k for k in self._refusals if k[0] == name and (k[1] not in versions or (k[1] < serving and k[1] not in wanted.values()))]:
            del self._refusals[key]  # gone from disk, or older than what serves and unlabelled: no longer news
        return outcomes, dict(sorted(keep.items())), served_labels

    def _load(self, name: str, version: int, loaded: dict[int, Table], kept: dict[int, Table], outcomes: list[ReloadOutcome]) -> Table | None:
        """Version ``version`` of ``name``: the loaded one, a fresh load, or None (refused: outcome recorded)."""
        if version in loaded:
            return loaded[version]
        path = bundle_path(self.tables_dir, name, version)
        stamp = _mtime(path / MANIFEST)
        if self._refused.get((name, version)) == stamp:
            return None  # refused before and unchanged since: do not log and count it again
        what = f"table {name} version {version}"
        try:
            self.budget.check(path, what, self._held + sum(t.nbytes for v, t in kept.items() if v not in loaded))
            current = max(loaded) if loaded else None
            like = next(iter(kept.values()), None) or (loaded[current] if current is not None else None)  # shares a same-vocabulary key index
            table = load_table(path, mmap=self._mmap, verify_checksums=self._verify, like=like)
        except memory.MemoryLimitError as exc:
            previous = self._refusals.get((name, version))
            if previous is None or previous.reason != "memory":  # checked again at every scan: log and count it once
                logger.error("refused %s: %s", what, exc)
                self._refusals[(name, version)] = ReloadOutcome(name, "refused", version, str(exc), "memory")
                outcomes.append(self._refusals[(name, version)])
            return None
        except (BundleError, ValueError, OSError, RuntimeError, MemoryError) as exc:
            self._refused[(name, version)] = stamp
            logger.error("refused %s: %s", what, exc)
            self._refusals[(name, version)] = ReloadOutcome(name, "refused", version, str(exc), "invalid")
            outcomes.append(self._refusals[(name, version)])
            return None
        self._refusals.pop((name, version), None)
        outcomes.append(ReloadOutcome(name, "loaded", version))
        return table


def _held(served: Served) -> int:
    """Bytes of every loaded version (a key index shared by versions counts for each: from above)."""
    return sum(t.nbytes for loaded in served.versions.values() for t in loaded.values())


_VANISHED = -2.0  # marks a served version whose directory disappeared (real mtimes are >= 0, missing -1)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0

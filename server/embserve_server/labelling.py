"""How the registry turns a table's ``labels.json`` into the labels it serves, and says why when it cannot.

The rule: a label names the version its file says when that version is loaded (loaded now, or
loadable and within the memory limit). When it is not — missing from disk, refused as invalid,
refused for memory — the label keeps the version it named before (a label that is new gets
none), and the log says why, once per cause rather than at every poll. A labels file that cannot
be read keeps every label of the table as it was. The file format is :mod:`embserve_format.labels`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from embserve_format.labels import LabelsFileError, read_labels


class Notes:
    """Reads and resolves labels for :class:`~embserve_server.registry.TableRegistry`, logging each problem once.

    Args:
        logger: where changes and problems are logged (the registry's).
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._said: dict[tuple[str, str], str] = {}  # (table, label or "") -> the problem last logged

    def _note(self, key: tuple[str, str], problem: str | None) -> None:
        if problem is None:
            self._said.pop(key, None)
        elif self._said.get(key) != problem:
            self._said[key] = problem
            self.logger.error("%s", problem)

    def read(self, tables_dir: str | os.PathLike[str], name: str, served: Mapping[str, int]) -> dict[str, int]:
        """The labels table ``name``'s file asks for; ``served`` (kept as they are) when it cannot be read."""
        try:
            wanted = read_labels(tables_dir, name)
        except (LabelsFileError, ValueError) as exc:
            self._note((name, ""), f"table {name}: labels file refused, keeping its labels as they were: {exc}")
            return dict(served)
        self._note((name, ""), None)
        return wanted

    def resolve(
        self,
        name: str,
        wanted: Mapping[str, int],
        previous: Mapping[str, int],
        kept: Mapping[int, Any],
        refusals: Mapping[tuple[str, int], Any],
    ) -> dict[str, int]:
        """Label -> version to serve: ``wanted`` where that version is in ``kept``, else ``previous``.

        Args:
            name: the table.
            wanted: the labels file's assignments.
            previous: the labels served until now (each a loaded version).
            kept: the versions that will be loaded.
            refusals: (table, version) -> the refusal (its ``message``) of versions not loaded.
        """
        out: dict[str, int] = {}
        for label, version in sorted(wanted.items()):
            before = previous.get(label)
            if version in kept:
                out[label] = version
                self._note((name, label), None)
                if before != version:
                    self.logger.info("table %s: label %s -> version %d%s", name, label, version, f" (was {before})" if before else "")
                continue
            refusal = refusals.get((name, version))
            why = f"was refused: {refusal.message}" if refusal is not None else "is not on disk (or not loadable)"
            keeps = f"keeps version {before}" if before is not None else "names no version yet"
            self._note((name, label), f"table {name}: label {label} -> version {version} not applied: that version {why}; the label {keeps}")
            if before is not None:
                out[label] = before
        for label in sorted(set(previous) - set(wanted)):
            self._note((name, label), None)
            self.logger.info("table %s: label %s removed (was version %d)", name, label, previous[label])
        return out

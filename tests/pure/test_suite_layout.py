"""The suite's own rules (tests/conftest.py's docstring): folders by need, one wait helper, a timeout per test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
GROUPS = ("pure", "processes", "browser_deploy")
# Pacing a load generator is not waiting for an event: the loopback cluster's clients keep a rate.
MAY_SLEEP = {"waiting.py", "loopback.py"}


def _test_files() -> list[Path]:
    return sorted(TESTS.rglob("test_*.py"))


def test_every_test_file_is_in_a_group_folder() -> None:
    misplaced = [str(p.relative_to(TESTS)) for p in _test_files() if p.parent.name not in GROUPS or p.parent.parent != TESTS]
    assert not misplaced, f"move these into tests/{{{','.join(GROUPS)}}}/ (rule in tests/conftest.py's docstring): {misplaced}"


def test_no_test_file_imports_one_from_another_folder() -> None:
    for path in _test_files():
        for name in re.findall(r"^from (test_\w+) import|^import (test_\w+)", path.read_text(encoding="utf-8"), re.M):
            module = next(n for n in name if n)
            assert (path.parent / f"{module}.py").is_file(), f"{path.name} imports {module} from another folder: move the helper to tests/"


def test_waits_go_through_the_one_helper() -> None:
    sleepers = [str(p.relative_to(TESTS)) for p in TESTS.rglob("*.py")
                if p.name not in MAY_SLEEP and p != Path(__file__).resolve() and "time.sleep(" in p.read_text(encoding="utf-8")]
    assert not sleepers, f"poll with waiting.wait_until (a deadline and a message) instead of sleeping: {sleepers}"


def test_every_test_has_a_timeout(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.hasplugin("timeout"), "pytest-timeout is not installed (requirements-dev.txt)"
    assert float(pytestconfig.getini("timeout")) > 0

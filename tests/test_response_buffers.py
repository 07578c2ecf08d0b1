"""embserve-server reuses its response-sized buffers (cli.keep_freed_buffers).

A 1024-key Lookup allocates several buffers of ~256 KB; when malloc hands them back to the kernel
after each call, the next call faults every page in again (the cost docs/performance-lookup.md
measured). Counted as the server process's minor page faults per call, never timed; glibc with a
fixed 128 KiB mmap threshold (its starting default) is the control that shows the count moves.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from conftest import BIN, make_table, wait_for_line
from embserve_client import Client

DIM, KEYS, CALLS = 64, 1024, 200  # 1024 x 64 x 4 = 256 KiB of rows a call


@contextmanager
def server(tables: Path, env: dict[str, str]) -> Iterator[tuple[int, str]]:
    proc = subprocess.Popen(
        [BIN / "embserve-server", "--tables", str(tables), "--address", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **env},
    )
    try:
        line = wait_for_line(proc, "listening on")
        port = re.search(r"listening on 127\.0\.0\.1:(\d+)", line).group(1)  # type: ignore[union-attr]
        wait_for_line(proc, "serving t v1")
        yield proc.pid, f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def minor_faults(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def faults_per_call(tables: Path, env: dict[str, str]) -> float:
    keys = [f"w{i}" for i in np.random.default_rng(0).choice(2000, KEYS, replace=False)]
    with server(tables, env) as (pid, target), Client(target) as client:
        for _ in range(20):  # warm-up: first allocations, caches, connections
            client.lookup(keys)
        before = minor_faults(pid)
        for _ in range(CALLS):
            assert client.lookup(keys).found.all()
        return (minor_faults(pid) - before) / CALLS


def test_big_lookups_reuse_their_buffers(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    make_table(tables, n=2000, dim=DIM)
    pages = KEYS * DIM * 4 // 4096  # pages of one buffer of rows
    ours = faults_per_call(tables, {})
    control = faults_per_call(tables, {"MALLOC_MMAP_THRESHOLD_": str(128 << 10)})  # every such buffer mapped afresh
    assert control > pages, f"the control faulted {control:.0f} pages a call; the count does not see fresh buffers"
    assert ours < pages / 4, f"{ours:.0f} pages faulted in a call (control {control:.0f}): freed buffers go back to the kernel"

"""``--workers 2``: both processes answer correctly, and one /metrics endpoint counts both."""

from __future__ import annotations

import re
import signal
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
from conftest import BIN, free_port, wait_for_line
from embserve_client import Client
from embserve_client.bundle import read_bundle


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_two_workers_share_the_port_and_metrics(tables: Path) -> None:
    mport = free_port()
    proc = subprocess.Popen(
        [BIN / "embserve-server", "--tables", str(tables), "--address", "127.0.0.1:0", "--workers", "2", "--metrics-address", f"127.0.0.1:{mport}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        line = wait_for_line(proc, "with 2 workers")
        m = re.search(r"listening on 127\.0\.0\.1:(\d+) with 2 workers \(pids (\d+), (\d+)\)", line)
        assert m, line
        port, pids = m.group(1), [int(m.group(2)), int(m.group(3))]
        wait_for_line(proc, "serving t v1")
        wait_for_line(proc, "serving t v1")  # both workers, with the tables the parent loaded
        stored = read_bundle(tables / "t" / "1")
        before = [cpu_ticks(p) for p in pids]
        rng = np.random.default_rng(0)
        calls = 0
        # 16 separate connections: SO_REUSEPORT spreads connections, not calls, over the workers.
        for _ in range(16):
            with Client(f"127.0.0.1:{port}") as c:
                for _ in range(25):
                    ids = rng.integers(0, 2000, size=256)
                    got = c.lookup([f"w{i}" for i in ids])
                    assert np.array_equal(got.vectors, stored.vectors[ids])
                    calls += 1
                # an exact batch: BLAS and OpenMP in a forked worker
                near = c.most_similar_batch([f"w{i}" for i in range(64)], topn=3, exact=True)
                assert len(near) == 64 and all(len(n) == 3 for n in near)
        after = [cpu_ticks(p) for p in pids]
        assert all(a > b for a, b in zip(after, before)), (before, after)  # both workers did work
        body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read().decode()
        m2 = re.search(r'^embserve_requests_total\{code="OK",method="Lookup"\} (\S+)$', body, re.M)
        assert m2 and float(m2.group(1)) == calls, body[:2000]
        assert re.search(r'^embserve_table_rows\{table="t"\} 2000\.0$', body, re.M)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0

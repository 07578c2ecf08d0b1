"""``--workers 2``: both processes answer correctly, one /metrics endpoint counts both, and the
workers die with their parent."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from conftest import BIN, free_port
from embserve_client import Client
from embserve_format.bundle import read_bundle
from prometheus_client.multiprocess import MultiProcessCollector
from waiting import wait_for_line, wait_until

# A bound on how long orphaned workers may keep the port after their parent is SIGKILLed (issue 15).
PARENT_DEATH_BOUND = 2.0


@contextmanager
def two_workers(tables: Path, mp_dir: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[str], int, list[int]]]:
    """``embserve-server --workers 2`` on a free port, both workers serving; yields (proc, port, worker pids)."""
    mp_dir.mkdir()
    proc = subprocess.Popen(
        [BIN / "embserve-server", "--tables", str(tables), "--address", "127.0.0.1:0", "--workers", "2", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp_dir)},
    )
    try:
        line = wait_for_line(proc, "with 2 workers")
        m = re.search(r"listening on 127\.0\.0\.1:(\d+) with 2 workers \(pids (\d+), (\d+)\)", line)
        assert m, line
        wait_for_line(proc, "serving t v1")
        wait_for_line(proc, "serving t v1")  # both workers, with the tables the parent loaded
        yield proc, int(m.group(1)), [int(m.group(2)), int(m.group(3))]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def lookups_ok(mp_dir: Path, pid: int) -> float:
    """``embserve_requests_total{method="Lookup",code="OK"}`` as counted by the one worker ``pid``."""
    files = [str(p) for p in mp_dir.glob(f"*_{pid}.db")]
    for family in MultiProcessCollector.merge(files, accumulate=True):
        for sample in family.samples:
            if sample.name == "embserve_requests_total" and sample.labels == {"method": "Lookup", "code": "OK"}:
                return float(sample.value)
    return 0.0


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an orphan's reaper may be slow to collect it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_two_workers_share_the_port_and_metrics(tables: Path, tmp_path: Path) -> None:
    mport, mp_dir = free_port(), tmp_path / "metrics"
    with two_workers(tables, mp_dir, "--metrics-address", f"127.0.0.1:{mport}") as (proc, port, pids):
        stored = read_bundle(tables / "t" / "1")
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
        # Each worker's own counter (its multiprocess metrics file): both answered, together all,
        # once each worker's serving loop has added its calls (every second).
        def counted() -> list[float] | None:
            per = [lookups_ok(mp_dir, pid) for pid in pids]
            return per if sum(per) == calls else None

        per_worker = wait_until("both workers' files count every call", counted,
                                detail=lambda: f"{[lookups_ok(mp_dir, pid) for pid in pids]} of {calls}")
        assert all(n > 0 for n in per_worker), per_worker
        body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read().decode()
        m2 = re.search(r'^embserve_requests_total\{code="OK",method="Lookup"\} (\S+)$', body, re.M)
        assert m2 and float(m2.group(1)) == calls, body[:2000]
        assert re.search(r'^embserve_table_rows\{table="t"\} 2000\.0$', body, re.M)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_workers_exit_when_the_parent_is_killed(tables: Path, tmp_path: Path) -> None:
    """SIGKILL of the parent (an OOM kill) must not leave orphans serving on the shared port."""
    with two_workers(tables, tmp_path / "metrics") as (proc, port, pids):
        with Client(f"127.0.0.1:{port}") as c:
            assert c.get_vector("w1").shape == (16,)
        proc.kill()
        proc.wait(timeout=30)
        try:
            wait_until(f"workers {pids} gone after the parent died", lambda: not any(running(pid) for pid in pids),
                       PARENT_DEATH_BOUND, poll=0.01)
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", port)) != 0, f"something still answers on port {port}"
        finally:
            for pid in filter(running, pids):  # a failed run must not leave orphans behind
                os.kill(pid, signal.SIGKILL)

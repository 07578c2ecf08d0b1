"""--memory-limit: a version that would take the server past its limit is refused, the old one keeps serving."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
from conftest import BIN, make_table, seeded_table
from embserve_client import Client
from embserve_format.bundle_writer import BundleSpec, write_bundle
from embserve_server import memory
from embserve_server.registry import TableRegistry
from waiting import wait_for_line

SMALL, BIG, DIM = 2_000, 150_000, 64


def test_sizes_limits_and_cgroup_files(tmp_path: Path) -> None:
    assert [memory.parse_size(s) for s in ("512", "4K", "6G", "6GiB", "3gb", "2m")] == [512, 4096, 6 << 30, 6 << 30, 3 << 30, 2 << 20]
    for bad in ("", "G", "-1G", "1.5G", "6X", "0"):
        with pytest.raises(ValueError, match="expected a positive number of bytes"):
            memory.parse_size(bad)
    assert memory.resolve_limit("none") is None and memory.resolve_limit("64M") == 64 << 20
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    assert memory.cgroup_limit(v2, v1) is None  # neither file: no cgroup limit
    v1.write_text("9223372036854771712\n")  # cgroup v1's "unlimited"
    assert memory.cgroup_limit(v2, v1) is None
    v1.write_text("1073741824\n")
    assert memory.cgroup_limit(v2, v1) == 1 << 30
    v2.write_text("max\n")  # v2 wins when present
    assert memory.cgroup_limit(v2, v1) is None
    v2.write_text("536870912\n")
    assert memory.cgroup_limit(v2, v1) == 512 << 20


@pytest.mark.parametrize("shipped", [True, False])  # an index shipped in the bundle, or the exact index built at load
def test_estimate_is_what_the_loaded_version_holds(tmp_path: Path, shipped: bool) -> None:
    if shipped:
        path = make_table(tmp_path, n=SMALL, dim=DIM, factory="Flat")
    else:
        vectors, keys = seeded_table(SMALL, DIM)
        path = write_bundle(tmp_path, "t", vectors, keys, BundleSpec(source={"kind": "test"}))
    before = memory.estimate(path)
    registry = TableRegistry(tmp_path)
    registry.reload()
    loaded = registry.get("t").memory_parts  # what `embserve tables --memory` shows once loaded
    if shipped:
        assert before == loaded
    else:  # the key index built at load: estimated from above (16 bytes a key; it takes 12 plus its buckets)
        assert {k: v for k, v in before.items() if k != "keys"} == {k: v for k, v in loaded.items() if k != "keys"}
        assert loaded["keys"] <= before["keys"] <= loaded["keys"] + SMALL * memory.KEY_INDEX_BYTES_PER_KEY


def rss_of(pid: int, field: str = "VmRSS") -> int:
    """Resident bytes of a process now (VmRSS) or at its peak since exec (VmHWM)."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", text).group(1)) * 1024  # type: ignore[union-attr]


def start(tables: Path, *extra: str) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        [BIN / "embserve-server", "--tables", str(tables), "--address", "127.0.0.1:0", "--metrics-address", "127.0.0.1:0",
         "--poll-interval", "0.1", "--no-mmap", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    metrics = wait_for_line(proc, "metrics on").split("metrics on ")[1].strip()
    target = wait_for_line(proc, "listening on").rsplit(" ", 1)[1].strip()
    wait_for_line(proc, "serving t v1")
    return proc, target, metrics


def stop(proc: subprocess.Popen[str]) -> int:
    """Stop the server; return its peak resident set since exec, in bytes (VmHWM, read just before SIGTERM).

    Not the child's ``ru_maxrss``: Linux carries the forking process's high-water mark across exec
    into it, so a server started by this (big) test process would report the test's own peak.
    """
    peak = rss_of(proc.pid, "VmHWM")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    return peak


def test_a_version_over_the_limit_is_refused_and_the_old_one_serves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tables, aside = tmp_path / "tables", tmp_path / "aside"
    make_table(tables, n=SMALL, dim=DIM, version=1, factory="Flat")
    big = make_table(aside, n=BIG, dim=DIM, seed=2, version=2, factory="Flat")
    need = sum(memory.estimate(big).values())
    # What the second version really costs: the same server without a limit, before and after loading it.
    proc, target, _ = start(tables, "--memory-limit", "none")
    try:
        one = rss_of(proc.pid)
        shutil.move(str(big), str(tables / "t" / "2"))  # a rename: the poll sees the whole version
        wait_for_line(proc, "loaded table t version 2")
        both = rss_of(proc.pid)
    finally:
        stop(proc)
    shutil.move(str(tables / "t" / "2"), str(big))
    limit = one + need * 3 // 4  # just below what the second version needs
    assert both > limit, (one, both, need)  # loading it would pass the limit
    proc, target, metrics = start(tables, "--memory-limit", str(limit))
    try:
        shutil.move(str(big), str(tables / "t" / "2"))
        line = wait_for_line(proc, "refused table t version 2")
        assert "--memory-limit" in line and "would not fit" in line
        with Client(target) as c:
            assert c.lookup(["w1"]).version == 1  # the old version keeps serving
            (refusal,) = c.refusals()
            assert (refusal.table, refusal.version, refusal.reason) == ("t", 2, "memory")
        body = urllib.request.urlopen(metrics, timeout=30).read().decode()
        assert 'embserve_memory_refusals_total{table="t"} 1.0' in body
        assert float(re.search(r"^embserve_memory_limit_bytes (\S+)$", body, re.M).group(1)) == limit  # type: ignore[union-attr]
        make_table(tables, n=SMALL, dim=DIM, seed=3, version=3, factory="Flat")  # a version that fits still loads
        wait_for_line(proc, "loaded table t version 3")
        with Client(target) as c:
            assert c.lookup(["w1"]).version == 3 and c.refusals() == []
    finally:
        peak = stop(proc)
    assert peak <= limit, (peak, limit)
    with capsys.disabled():
        print(f"\nmemory limit {limit / 2**20:.1f} MiB: one version {one / 2**20:.1f} MiB, both {both / 2**20:.1f} MiB "
              f"(second version estimated {need / 2**20:.1f} MiB); peak RSS under the limit {peak / 2**20:.1f} MiB")


"""Slowloris against the HTTP side port: the server's threads and descriptors, and a scrape's latency.

    .venv/bin/python bench/bench_slowloris.py --tables tables [--connections 2000] [--header-timeout 2]

Starts ``embserve-server --explorer`` (whatever embserve_server is importable: run it once with the
old code on PYTHONPATH for the baseline), opens N connections that each send half a request line
and stall, and samples the server's thread and descriptor counts (/proc/PID/task, /proc/PID/fd)
and the time a /metrics scrape takes: at idle, with the stalled connections open, and after the
header timeout. A server without a header timeout keeps its stalled connections (and, for
ThreadingHTTPServer, one thread each) until the clients hang up, which this bench does last.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def counts(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))


def scrape_ms(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as resp:
        resp.read()
    return 1000 * (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tables", type=Path, required=True)
    p.add_argument("--connections", type=int, default=2000)
    p.add_argument("--header-timeout", type=float, default=2.0, help="passed as --http-header-timeout when the server knows it")
    args = p.parse_args()
    cmd = [str(BIN / "embserve-server"), "--tables", str(args.tables), "--address", "127.0.0.1:0", "--metrics-address", "127.0.0.1:0", "--explorer"]
    knows = "--http-header-timeout" in subprocess.run([*cmd[:1], "--help"], capture_output=True, text=True).stdout
    if knows:
        cmd += ["--http-header-timeout", str(args.header_timeout)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    port = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        if "metrics on http" in line:
            port = int(line.strip().rsplit(":", 1)[1].split("/")[0])
        if " serving " in line:
            break
    threading.Thread(target=lambda: [None for _ in proc.stdout or ()], daemon=True).start()
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        for _ in range(3):
            scrape_ms(url)
        idle = counts(proc.pid)
        kind = f"new (header timeout {args.header_timeout:.1f}s)" if knows else "baseline (no header timeout)"
        print(f"server: {kind}; "
              f"load average {os.getloadavg()[0]:.2f}")
        print(f"idle:                  threads {idle[0]:5d}  fds {idle[1]:5d}  scrape {scrape_ms(url):7.1f} ms")
        socks = []
        t0 = time.perf_counter()
        for _ in range(args.connections):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(b"GET /metr")
            socks.append(s)
        opened = time.perf_counter() - t0
        time.sleep(0.5)  # let the server accept the last ones before sampling (a bench, not a test)
        during = counts(proc.pid)
        print(f"{args.connections} stalled open:   threads {during[0]:5d}  fds {during[1]:5d}  scrape {scrape_ms(url):7.1f} ms"
              f"  (opened in {opened:.1f} s)")
        deadline = time.monotonic() + args.header_timeout + 10
        while time.monotonic() < deadline:
            threads, fds = counts(proc.pid)
            if threads <= idle[0] + 2 and fds <= idle[1] + 8:
                break
            time.sleep(0.1)
        recovered = time.monotonic() - (deadline - args.header_timeout - 10)
        after = counts(proc.pid)
        print(f"timeout + up to 10 s:  threads {after[0]:5d}  fds {after[1]:5d}  scrape {scrape_ms(url):7.1f} ms"
              f"  ({recovered:.1f} s after the last connection)")
        for s in socks:
            s.close()
        time.sleep(1)
        closed = counts(proc.pid)
        print(f"clients hung up:       threads {closed[0]:5d}  fds {closed[1]:5d}")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Bare grpcio servers only: what grpc itself costs a call, sync against asyncio, and handler time.

    .venv/bin/python bench/bare_grpc_kinds.py            # under flock /tmp/embserve-heavy.lock, like every bench

Each server runs in its own process and answers fixed bytes; one client loop drives each in turn
(rounds alternate the order) and the server's CPU (utime+stime from /proc) is divided by the calls:

1. a bare sync server (grpc.server + ThreadPoolExecutor(8), the bare baseline of bench_lookup.py)
   against a bare ``grpc.aio`` server, for an 80-byte and a 210 KB answer;
2. bare sync servers whose handler first spins 20/50/100 µs of Python: what a handler's own time
   costs a call in the server (about 1x, measured 2026-12-06; docs/performance-lookup.md).

Nothing here asserts a time; it prints figures.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

import grpc
import harness as h

SERVICE = "embserve.v1.EmbeddingService"
SECONDS = 3.0
ROUNDS = 4


def _sync_server(payload: bytes, spin_us: float, port_file: str) -> None:
    spin = spin_us / 1e6

    def reply(request: bytes, context: object) -> bytes:
        until = time.perf_counter() + spin
        while time.perf_counter() < until:
            pass
        return payload

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Lookup": grpc.unary_unary_rpc_method_handler(reply)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    Path(port_file).write_text(str(port))
    server.wait_for_termination()


async def _aio_server(payload: bytes, port_file: str) -> None:
    async def reply(request: bytes, context: object) -> bytes:
        return payload

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Lookup": grpc.unary_unary_rpc_method_handler(reply)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    Path(port_file).write_text(str(port))
    await server.wait_for_termination()


def _start(kind: str, size: int, spin_us: float, tmp: str) -> tuple[subprocess.Popen[bytes], int]:
    port_file = os.path.join(tmp, f"port-{kind}-{size}-{spin_us}")
    proc = subprocess.Popen([sys.executable, __file__, "serve", kind, str(size), str(spin_us), port_file])
    deadline = time.monotonic() + 60
    while not (os.path.exists(port_file) and Path(port_file).read_text()):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"the {kind} server did not start")
        time.sleep(0.05)
    return proc, int(Path(port_file).read_text())


def compare(servers: dict[str, tuple[str, int, float]]) -> dict[str, float]:
    """Server CPU µs per call, least of ROUNDS rounds, for each named (kind, answer bytes, spin µs)."""
    per_call: dict[str, list[float]] = {name: [] for name in servers}
    with tempfile.TemporaryDirectory() as tmp:
        procs = {name: _start(*spec, tmp) for name, spec in servers.items()}
        try:
            for r in range(ROUNDS):
                for name in list(servers) if r % 2 == 0 else list(servers)[::-1]:
                    proc, port = procs[name]
                    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                        call = channel.unary_unary(f"/{SERVICE}/Lookup")
                        for _ in range(200):
                            call(b"x")
                        cpu0, calls, t0 = h.cpu_seconds(proc.pid), 0, time.monotonic()
                        while time.monotonic() - t0 < SECONDS:
                            call(b"x")
                            calls += 1
                        per_call[name].append((h.cpu_seconds(proc.pid) - cpu0) / calls * 1e6)
        finally:
            for proc, _ in procs.values():
                proc.kill()
    return {name: min(v) for name, v in per_call.items()}


def main() -> None:
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"bare grpcio servers, server CPU µs per call (least of {ROUNDS} rounds of {SECONDS:.0f} s; load average {load})")
    for size in (80, 210_000):
        got = compare({"sync": ("sync", size, 0.0), "aio": ("aio", size, 0.0)})
        print(f"  {size:>7} B answer: sync {got['sync']:6.0f}  aio {got['aio']:6.0f}  aio/sync {got['aio'] / got['sync']:.2f}x")
    spins = (0.0, 20.0, 50.0, 100.0)
    got = compare({f"spin {s:.0f}": ("sync", 80, s) for s in spins})
    base = got["spin 0"]
    for s in spins:
        extra = got[f"spin {s:.0f}"] - base
        print(f"  handler spins {s:5.0f} µs: {got[f'spin {s:.0f}']:6.0f} µs a call, {extra:+6.0f} over no spin" + (f" ({extra / s:.1f}x the spin)" if s else ""))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        kind, size, spin, port_file = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
        payload = os.urandom(size)
        if kind == "aio":
            asyncio.run(_aio_server(payload, port_file))
        else:
            _sync_server(payload, spin, port_file)
    else:
        main()

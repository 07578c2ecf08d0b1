"""Hostile clients on the HTTP side port: slowloris, the connection cap, timeouts, an API flood.

The slowloris test runs ``embserve-server`` as users start it; the cap and timeout tests run the
port's server (http_server.HttpServer) with a small handler; the flood runs the gRPC server and its
HTTP port in this process, sharing one admission count.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import BIN, http_site, make_table, rejected
from embserve_client import Client
from embserve_server.config import HttpLimits
from embserve_server.http_port import HttpPort
from embserve_server.http_server import HttpServer, Request, Response, plain
from prometheus_client import CollectorRegistry
from test_http_security import fetch
from waiting import lines_seen, wait_for_line, wait_until


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("http-hostile") / "tables"
    make_table(path, n=500, dim=8)
    return path


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def fds_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_slowloris_holds_no_thread_and_grpc_and_metrics_keep_answering(tables: Path) -> None:
    """2,000 connections each send half a request line and stall; the server's threads stay at their
    idle count, every stalled connection is closed by the header timeout (or the cap), and new gRPC
    calls and scrapes answer throughout."""
    header_timeout = 2.0
    cmd = [str(BIN / "embserve-server"), "--tables", str(tables), "--address", "127.0.0.1:0", "--metrics-address", "127.0.0.1:0",
           "--explorer", "--http-header-timeout", str(header_timeout)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stalled: list[socket.socket] = []
    try:
        http_port = int(wait_for_line(proc, "metrics on http://").strip().rsplit(":", 1)[1].split("/")[0])
        grpc_port = int(re.search(r":(\d+)$", wait_for_line(proc, "listening on").strip()).group(1))  # type: ignore[union-attr]
        wait_for_line(proc, " serving ")
        metrics = f"http://127.0.0.1:{http_port}/metrics"
        with Client(f"127.0.0.1:{grpc_port}", timeout=30) as client:

            def both_answer() -> None:
                assert client.get_vector("w3").shape == (8,)
                assert fetch(metrics)[0] == 200

            for _ in range(3):  # warm the pools: idle is "after the first calls"
                both_answer()
                fetch(f"http://127.0.0.1:{http_port}/api/tables")
            idle_threads, idle_fds = threads_of(proc.pid), fds_of(proc.pid)
            peak = idle_threads
            for i in range(2000):
                s = socket.create_connection(("127.0.0.1", http_port), timeout=30)
                s.sendall(b"GET /metr")  # half a request line, then nothing
                stalled.append(s)
                if i % 250 == 0:
                    both_answer()
                    peak = max(peak, threads_of(proc.pid))
            flood_fds = fds_of(proc.pid)

            def settled() -> bool:
                nonlocal peak
                both_answer()
                threads = threads_of(proc.pid)
                peak = max(peak, threads)
                return threads <= idle_threads + 2 and fds_of(proc.pid) <= idle_fds + 8

            wait_until("threads and descriptors back at idle", settled, timeout=header_timeout + 20)
            after_threads, after_fds = threads_of(proc.pid), fds_of(proc.pid)
        # The server closed them (the test still holds its ends open): each reads end-of-file.
        for s in stalled[:: len(stalled) // 20]:
            s.settimeout(header_timeout + 20)
            assert s.recv(1) == b""
        print(f"\nslowloris 2000 conns: threads idle {idle_threads} peak {peak} after {after_threads}; "
              f"fds idle {idle_fds} during {flood_fds} after {after_fds}")
        assert peak <= idle_threads + 4  # no thread per connection
        log = lines_seen(proc)  # waiting's reader keeps draining the pipe: a full one would stall the server's logging
        assert not [line for line in log if "ERROR" in line or "Traceback" in line], "".join(log[-20:])
    finally:
        for s in stalled:
            s.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


@contextmanager
def engine(handler: Callable[[Request], Any], **limits: Any) -> Iterator[HttpServer]:
    server = HttpServer(handler, HttpLimits(**limits))
    server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        server.close()


def raw(port: int, data: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(data)
    return s


def read_all(s: socket.socket, timeout: float = 30) -> bytes:
    """Everything the server sends until it closes the connection."""
    s.settimeout(timeout)
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_cap_closes_the_longest_waiting_connection_then_answers_503() -> None:
    gate, entered = threading.Event(), threading.Semaphore(0)

    async def handler(request: Request) -> Response:
        if request.path == "/hold":
            entered.release()
            await asyncio.get_running_loop().run_in_executor(None, gate.wait)
        return plain(200, f"done {request.path}\n")

    with engine(handler, max_connections=2, header_timeout=30) as server:
        url = f"http://127.0.0.1:{server.port}"
        # Two stalled connections fill the cap; a scrape still gets in by closing the older one.
        first, second = raw(server.port, b"GET /he"), raw(server.port, b"GET /he")
        wait_until("two open connections", lambda: server.connections == 2)
        assert fetch(f"{url}/quick")[:1] == (200,)
        assert read_all(first) == b""  # evicted
        second.close()
        # Two connections busy with requests: nothing to evict, a third is answered 503 at once.
        busy = [raw(server.port, b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n") for _ in range(2)]
        for _ in busy:
            assert entered.acquire(timeout=30)
        status, headers, body = fetch(f"{url}/quick")
        assert status == 503 and headers["Retry-After"] == "1" and b"too many open connections" in body
        gate.set()
        for s in busy:
            s.settimeout(30)
            assert s.recv(4096).startswith(b"HTTP/1.1 200 OK")
            s.close()
    # The side port's own busy answer comes from the status map: ConnectionLimitError -> UNAVAILABLE -> 503.
    port = HttpPort(CollectorRegistry())
    assert port.busy().status == 503 and b"too many open HTTP connections" in port.busy().body
    port.close()


def test_header_idle_timeouts_and_bad_requests() -> None:
    async def handler(request: Request) -> Response:
        return plain(200, "ok\n")

    with engine(handler, header_timeout=0.5, idle_timeout=0.5, max_header_bytes=1024) as server:
        assert read_all(raw(server.port, b"GET / HT")) == b""  # half a head: closed, no answer
        # Keep-alive: an answer, then the idle connection is closed.
        answer = read_all(raw(server.port, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"))
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"ok\n")
        # A request dripped one byte at a time still has to finish within the header timeout.
        dripper = raw(server.port, b"G")
        dripper.settimeout(0.1)
        closed_after = None
        for i, byte in enumerate(b"ET / HTTP/1.1\r\nX-Slow: " + b"y" * 200):
            try:
                dripper.sendall(bytes([byte]))
                if dripper.recv(1) == b"":
                    closed_after = i
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_after = i
                break
        assert closed_after is not None
        assert read_all(raw(server.port, b"NOT HTTP\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
        huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"z" * 4096 + b"\r\n\r\n"
        assert read_all(raw(server.port, huge)).startswith(b"HTTP/1.1 431 ")
        assert fetch(f"http://127.0.0.1:{server.port}/")[0] == 200  # still serving


def test_api_flood_is_refused_and_grpc_keeps_answering(tables: Path) -> None:
    limits = HttpLimits(api_threads=1)  # the JSON API's share of the 4 admitted calls: 1
    with http_site(tables, max_concurrent_rpcs=4, http=limits) as (server, base):
        assert server.admission is not None
        before = rejected(server, "overload")
        with server.admission.http_call():  # the API's share is taken: the next API call is refused
            status, headers, body = fetch(f"{base}/api/map?key=w1")
            assert status == 429 and headers["Retry-After"] == "1"
            assert json.loads(body) == {
                "error": "explorer API busy: 1 calls in progress, its share of the limit is 1; retry with backoff",
                "code": "RESOURCE_EXHAUSTED",
            }
            assert fetch(f"{base}/metrics")[0] == 200  # scrapes are not admitted work
        assert rejected(server, "overload") - before == 1

        before = rejected(server, "overload")
        stop = threading.Event()

        def flood(n: int) -> list[int]:
            return [fetch(f"{base}/api/map?key=w{(n * 31 + i) % 500}&topn=60&second=10")[0] for i in range(15) if not stop.is_set()]

        with ThreadPoolExecutor(8) as pool, Client(f"127.0.0.1:{server.port}", timeout=30) as client:
            flooding = [pool.submit(flood, n) for n in range(8)]
            answered = 0
            while not all(f.done() for f in flooding) or answered < 20:
                assert len(client.most_similar(f"w{answered % 500}", topn=5)) == 5  # admitted: raises if refused
                answered += 1
            statuses = [s for f in flooding for s in f.result()]
        assert set(statuses) <= {200, 429} and 200 in statuses
        assert rejected(server, "overload") - before == statuses.count(429)  # every refusal counted
        print(f"\n/api/map flood: {statuses.count(200)} answered, {statuses.count(429)} refused; {answered} gRPC calls all answered")

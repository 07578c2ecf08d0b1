"""The HTTP side port keeps gRPC's promises: bearer tokens, TLS, bounded connections, shared admission.

Real servers on 127.0.0.1: the gRPC server with its HTTP port in this process (sharing its token
check, refusal counter and admission count), or ``embserve-server`` as users start it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import BIN, make_table, running_server, wait_for_line
from embserve_client import Client
from embserve_client.errors import AuthenticationError
from embserve_server.app import Server
from embserve_server.config import HttpLimits, ServerConfig
from embserve_server.explorer import Explorer
from embserve_server.http_server import HttpServer, Request, Response, plain
from embserve_server.metrics_http import HttpPort, start_metrics_http
from embserve_server.tls import check_http_exposure
from prometheus_client import CollectorRegistry
from test_security import ADMIN, READ, make_pki

Fetched = tuple[int, dict[str, str], bytes]


def fetch(url: str, token: str | None = None, *, context: ssl.SSLContext | None = None, scheme: str = "Bearer") -> Fetched:
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30, context=context) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def rejected(server: Server, reason: str) -> float:
    return server.metrics.registry.get_sample_value("embserve_rejected_requests_total", {"reason": reason}) or 0.0


def wait_until(what: str, condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``condition`` (bounded) until it is truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("http-sec") / "tables"
    make_table(path, n=500, dim=8)
    return path


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("http-auth") / "tokens"
    path.write_text(f"{READ} read\n{ADMIN} admin\n")
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("http-pki"))


@contextmanager
def http_site(tables: Path, **config: Any) -> Iterator[tuple[Server, str]]:
    """A gRPC server and its HTTP port with the explorer, wired as ``run_worker`` wires them."""
    with running_server(tables, **config) as server:
        cfg = ServerConfig(tables_dir=tables, metrics_address="127.0.0.1:0", explorer=True, **config)
        port = start_metrics_http(cfg, server.metrics.registry, explorer=Explorer(server.registry, cfg.limits),
                                  tokens=server.tokens, admission=server.admission)
        try:
            scheme = "https" if cfg.tls_cert is not None else "http"
            yield server, f"{scheme}://127.0.0.1:{port.port}"
        finally:
            port.close()


@pytest.fixture(scope="module")
def auth_site(tables: Path, token_file: Path) -> Iterator[tuple[Server, str]]:
    with http_site(tables, auth_token_file=token_file) as site:
        yield site


# ---------------------------------------------------------------------------------------------
# Tokens


API_PATHS = ("/api/tables", "/api/neighbors?key=w1&topn=5", "/api/analogy?a=w1&b=w2&c=w3", "/api/map?key=w1&topn=4&second=2")


def test_api_needs_a_read_token_counted_with_grpc_refusals(auth_site: tuple[Server, str]) -> None:
    server, base = auth_site
    before = rejected(server, "unauthenticated")
    for path in API_PATHS:
        for token, challenge in ((None, 'Bearer realm="embserve"'), ("not-a-token", 'Bearer realm="embserve", error="invalid_token"')):
            status, headers, body = fetch(base + path, token)
            assert status == 401, (path, token)
            assert headers["WWW-Authenticate"] == challenge
            answer = json.loads(body)
            assert answer["code"] == "UNAUTHENTICATED"
            assert answer["error"].startswith("no bearer token" if token is None else "invalid bearer token")
        status, _, _ = fetch(base + path, READ, scheme="Basic")  # only the Bearer scheme counts, as on gRPC
        assert status == 401
    with Client(f"127.0.0.1:{server.port}") as anonymous, pytest.raises(AuthenticationError):
        anonymous.get_vector("w1")
    # One token check, one counter: 3 HTTP refusals per path and the gRPC one.
    assert rejected(server, "unauthenticated") - before == 3 * len(API_PATHS) + 1


def test_read_and_admin_tokens_get_the_grpc_answer(auth_site: tuple[Server, str]) -> None:
    server, base = auth_site
    with Client(f"127.0.0.1:{server.port}", token=READ) as c:
        expected = [(n.key, n.id) for n in c.most_similar("w7", topn=6)]
    for token, scheme in ((READ, "Bearer"), (ADMIN, "Bearer"), (READ, "bearer")):
        status, _, body = fetch(f"{base}/api/neighbors?key=w7&topn=6", token, scheme=scheme)
        assert status == 200
        assert [(n["key"], n["id"]) for n in json.loads(body)["neighbors"]] == expected


def test_page_asks_for_the_token_and_its_files_stay_open(auth_site: tuple[Server, str]) -> None:
    _, base = auth_site
    for path in ("/", "/index.html"):
        status, headers, body = fetch(base + path)
        assert status == 401 and headers["Content-Type"].startswith("text/html")
        assert headers["WWW-Authenticate"].startswith("Bearer") and headers["Cache-Control"] == "no-store"
        assert b'id="token-form"' in body  # the page itself, which asks for the token
        assert fetch(base + path, "wrong")[0] == 401
        status, _, with_token = fetch(base + path, READ)
        assert status == 200 and with_token == body
    for name in ("explorer.js", "explorer.css"):  # the package's own code, no table data
        assert fetch(f"{base}/static/{name}")[0] == 200
    assert b"sessionStorage" in fetch(f"{base}/static/explorer.js")[2]


def test_metrics_stay_open_unless_asked(auth_site: tuple[Server, str], tables: Path, token_file: Path) -> None:
    _, base = auth_site
    status, _, body = fetch(f"{base}/metrics")
    assert status == 200 and b"embserve_rejected_requests_total" in body
    with http_site(tables, auth_token_file=token_file, metrics_auth=True) as (server, protected):
        before = rejected(server, "unauthenticated")
        status, headers, body = fetch(f"{protected}/metrics")
        assert status == 401 and body.startswith(b"UNAUTHENTICATED: no bearer token")
        assert headers["WWW-Authenticate"] == 'Bearer realm="embserve"'
        assert fetch(f"{protected}/metrics", "wrong")[0] == 401
        status, _, body = fetch(f"{protected}/metrics", READ)
        assert status == 200 and b"embserve_rejected_requests_total" in body
        assert rejected(server, "unauthenticated") - before == 2
    with pytest.raises(ValueError, match="--metrics-auth needs --auth-token-file"):
        with http_site(tables, metrics_auth=True):
            pass


# ---------------------------------------------------------------------------------------------
# TLS


def test_explorer_over_https_with_the_test_ca(tables: Path, token_file: Path, pki: Path) -> None:
    trusted = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with http_site(tables, auth_token_file=token_file, tls_cert=pki / "server.pem", tls_key=pki / "server.key") as (server, base):
        assert base.startswith("https://")
        status, _, body = fetch(f"{base}/api/tables", READ, context=trusted)
        assert status == 200 and json.loads(body)["default"] == "t"
        assert fetch(f"{base}/api/tables", context=trusted)[0] == 401
        assert fetch(base.replace("127.0.0.1", "localhost") + "/metrics", context=trusted)[0] == 200
        # Plaintext HTTP to the TLS port: no answer, the handshake fails and the connection closes.
        with pytest.raises((OSError, http.client.HTTPException)):
            fetch(base.replace("https://", "http://") + "/api/tables", READ)
        # A client that does not trust the CA refuses the server.
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            fetch(f"{base}/metrics", context=ssl.create_default_context(cafile=str(pki / "other.pem")))
        assert fetch(f"{base}/metrics", context=trusted)[0] == 200  # still serving


def test_mutual_tls_on_the_http_port(tables: Path, pki: Path) -> None:
    with http_site(tables, tls_cert=pki / "server.pem", tls_key=pki / "server.key", tls_client_ca=pki / "ca.pem") as (_, base):
        with_cert = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        with_cert.load_cert_chain(pki / "client.pem", pki / "client.key")
        assert fetch(f"{base}/metrics", context=with_cert)[0] == 200
        without = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        with pytest.raises((OSError, http.client.HTTPException)):
            fetch(f"{base}/metrics", context=without)


@pytest.mark.parametrize(
    ("address", "extra", "refused"),
    [
        ("127.0.0.1:9100", {}, False),
        ("[::1]:9100", {}, False),
        ("localhost:9100", {}, False),
        ("0.0.0.0:9100", {}, True),
        ("10.1.2.3:9100", {}, True),
        (":9100", {}, True),
        ("0.0.0.0:9100", {"allow_insecure_http": True}, False),
        ("0.0.0.0:9100", {"tls_cert": Path("c.pem"), "tls_key": Path("k.pem")}, False),
        ("0.0.0.0:9100", {"explorer": False}, False),  # /metrics alone asks for no token
        ("0.0.0.0:9100", {"explorer": False, "metrics_auth": True}, True),
    ],
)
def test_tokens_over_plaintext_only_on_loopback(address: str, extra: dict[str, Any], refused: bool) -> None:
    config = ServerConfig(tables_dir=Path("."), metrics_address=address, explorer=True, auth_token_file=Path("tokens"))
    config = replace(config, **extra)
    if refused:
        with pytest.raises(ValueError, match="clear text.*--allow-insecure-http"):
            check_http_exposure(config)
    else:
        check_http_exposure(config)
    check_http_exposure(replace(config, auth_token_file=None, metrics_auth=False))  # no tokens: nothing to leak


def test_server_refuses_to_start_with_tokens_over_plaintext(tables: Path, token_file: Path) -> None:
    cmd = [str(BIN / "embserve-server"), "--tables", str(tables), "--address", "127.0.0.1:0", "--explorer",
           "--metrics-address", "0.0.0.0:0", "--auth-token-file", str(token_file)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "clear text" in out.stderr and "--allow-insecure-http" in out.stderr
    proc = subprocess.Popen([*cmd, "--allow-insecure-http"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        port = int(wait_for_line(proc, "explorer on http://").strip().rstrip("/").rsplit(":", 1)[1])
        wait_for_line(proc, " serving ")
        assert fetch(f"http://127.0.0.1:{port}/api/tables")[0] == 401
    finally:
        proc.terminate()
        proc.wait(timeout=60)


# ---------------------------------------------------------------------------------------------
# Hostile clients: slowloris, connection cap, admission shared with gRPC


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
        log: list[str] = []  # keep reading the server's output: a full pipe would stall its logging
        threading.Thread(target=lambda: log.extend(proc.stdout or ()), daemon=True).start()
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


def test_cap_closes_the_longest_waiting_connection_then_answers_503(tables: Path) -> None:
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


def test_workers_parent_checks_metrics_tokens_and_counts_its_refusals(tables: Path, token_file: Path) -> None:
    """--workers 2: the parent serves the aggregated /metrics; --metrics-auth works there too."""
    cmd = [str(BIN / "embserve-server"), "--tables", str(tables), "--address", "127.0.0.1:0", "--workers", "2",
           "--metrics-address", "127.0.0.1:0", "--auth-token-file", str(token_file), "--metrics-auth"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        port = int(wait_for_line(proc, "metrics on http://").strip().rsplit(":", 1)[1].split("/")[0])
        wait_for_line(proc, " serving ")
        url = f"http://127.0.0.1:{port}/metrics"
        assert fetch(url)[0] == 401
        status, _, body = fetch(url, READ)
        assert status == 200
        assert re.search(rb'^embserve_rejected_requests_total\{reason="unauthenticated"\} 1\.0$', body, re.M), body[-2000:]
    finally:
        proc.terminate()
        proc.wait(timeout=60)

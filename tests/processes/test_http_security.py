"""The HTTP side port keeps gRPC's promises: bearer tokens, TLS, bounded connections, shared admission.

Real servers on 127.0.0.1: the gRPC server with its HTTP port in this process (sharing its token
check, refusal counter and admission count), or ``embserve-server`` as users start it.
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN, BIN, READ, http_site, make_table, rejected
from embserve_client import Client
from embserve_client.errors import AuthenticationError
from embserve_server.app import Server
from embserve_server.config import ServerConfig
from embserve_server.tls import check_http_exposure
from waiting import wait_for_line

Fetched = tuple[int, dict[str, str], bytes]


def fetch(url: str, token: str | None = None, *, context: ssl.SSLContext | None = None, scheme: str = "Bearer") -> Fetched:
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30, context=context) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("http-sec") / "tables"
    make_table(path, n=500, dim=8)
    return path


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

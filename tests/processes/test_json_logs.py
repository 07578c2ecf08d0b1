"""``embserve-server --log-format json``: every line of a run parses with ``json.loads``, calls carry their fields.

A short soak in a real process: calls that succeed, fail and are refused (auth, overload), a TLS
handshake with a stranger's CA, a certificate rotated in a Secret volume's layout, and a drain.
The rate limit on refusal lines is checked with a clock the test controls.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import BIN, http_site, make_pki, make_table
from embserve_client import Client
from embserve_client.errors import AuthenticationError, UnavailableError, UnknownKeyError
from embserve_server.call_log import MAX_REQUEST_ID, RateLimit, request_id
from secret_volume import SecretVolume
from test_http_security import fetch
from test_rotation import tls_files
from waiting import wait_until

TOKEN = "json-log-token-0123456789"
FIELDS = {"time", "level", "logger", "message"}
CALL_FIELDS = {"method", "table", "version", "code", "duration", "peer", "request_id"}


class Output:
    """Every line a process writes to stdout+stderr, collected by a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)

    def parsed(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines)]

    def wait_for(self, what: str, match: Any) -> dict[str, Any]:
        return wait_until(what, lambda: next((o for o in self.parsed() if match(o)), None), timeout=60)  # type: ignore[no-any-return]

    def join(self) -> None:
        self._thread.join(30)


def test_json_log_soak(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    make_table(tables, n=200, dim=8)
    pki_old, pki_new = tmp_path / "pki-old", tmp_path / "pki-new"
    for d in (pki_old, pki_new):
        d.mkdir()
        make_pki(d)
    volume = SecretVolume(tmp_path / "tls")
    volume.write(tls_files(pki_old))
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN} read\n")
    proc = subprocess.Popen(
        [BIN / "embserve-server", "--tables", str(tables), "--address", "127.0.0.1:0", "--log-format", "json", "--log-calls",
         "--tls-cert", str(volume.path("tls.crt")), "--tls-key", str(volume.path("tls.key")), "--auth-token-file", str(tokens),
         "--rotation-interval", "0.1", "--max-concurrent-rpcs", "64"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    out = Output(proc)
    try:
        listening = out.wait_for("listening", lambda o: o["message"].startswith("listening on"))
        port = re.search(r":(\d+)$", listening["message"]).group(1)  # type: ignore[union-attr]
        out.wait_for("serving", lambda o: o["message"].startswith("serving t v1"))
        target = f"127.0.0.1:{port}"
        both = (pki_old / "ca.pem").read_bytes() + (pki_new / "ca.pem").read_bytes()
        with Client(target, root_certificates=both, token=TOKEN, request_id="soak-1") as c:
            for _ in range(50):
                c.get_vector("w1")
            with pytest.raises(UnknownKeyError):
                c.get_vector("not-a-key")
        with Client(target, root_certificates=both, timeout=10) as anonymous, pytest.raises(AuthenticationError) as refused:
            anonymous.get_vector("w1")
        with Client(target, root_certificates=(pki_new / "ca.pem").read_bytes(), timeout=5) as stranger, pytest.raises(UnavailableError):
            stranger.get_vector("w1")  # a failed handshake (the server still has the old certificate)
        volume.write(tls_files(pki_new))
        out.wait_for("the rotation", lambda o: o["message"].startswith("tls reloaded"))
        with Client(target, root_certificates=(pki_new / "ca.pem").read_bytes(), token=TOKEN) as c:
            c.get_vector("w2")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        out.join()
    objects = out.parsed()  # every line: one JSON object
    assert proc.returncode == 0
    assert all(FIELDS <= o.keys() for o in objects)
    calls = [o for o in objects if "method" in o]
    assert all(CALL_FIELDS <= o.keys() for o in calls)
    ok = [o for o in calls if o["request_id"] == "soak-1" and o["code"] == "OK"]
    assert len(ok) >= 50 and {(o["method"], o["table"], o["version"]) for o in ok} >= {("Lookup", "t", 1)}
    assert all(isinstance(o["duration"], float) and o["duration"] >= 0 and o["peer"].startswith("ipv4:127.0.0.1:") for o in ok)
    [missing] = [o for o in calls if o["request_id"] == "soak-1" and o["code"] == "NOT_FOUND"]
    assert missing["level"] == "WARNING" and "not-a-key" in missing["details"]
    [auth] = [o for o in calls if o["code"] == "UNAUTHENTICATED"]
    assert auth["request_id"] == refused.value.request_id and "bearer token" in auth["details"]
    assert any(o["message"].startswith("stopped") for o in objects)


def test_refusal_lines_are_rate_limited() -> None:
    now = [0.0]
    limit = RateLimit(2, clock=lambda: now[0])
    assert [limit.allow() for _ in range(5)] == [0, 0, None, None, None]  # a second's worth, then counted
    now[0] += 0.5
    assert limit.allow() == 3 and limit.allow() is None  # one more after half a second, naming the 3 left out
    now[0] += 100
    assert [limit.allow() for _ in range(3)] == [1, 0, None]  # the bucket holds one second's worth, not 100
    assert [RateLimit(0, clock=lambda: 0.0).allow() for _ in range(3)] == [None, None, None]
    with pytest.raises(ValueError, match="--log-rate"):
        RateLimit(-1)


def test_request_ids() -> None:
    assert request_id((("x-request-id", "abc-1"),)) == "abc-1"
    made = {request_id(()) for _ in range(100)}
    assert len(made) == 100 and all(re.fullmatch(r"[0-9a-f]{16}", m) for m in made)
    for bad in ("", "x" * (MAX_REQUEST_ID + 1), "line\nbreak", "caf\u00e9"):
        assert request_id((("x-request-id", bad),)) != bad


def test_http_refusals_are_logged_with_the_call_fields(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tables = tmp_path / "tables"
    make_table(tables, n=100, dim=8)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN} read\n")
    with caplog.at_level(logging.WARNING, logger="embserve_server.call_log"), \
            http_site(tables, auth_token_file=tokens) as (_, base):
        assert fetch(f"{base}/api/tables")[0] == 401
        assert fetch(f"{base}/api/tables", TOKEN)[0] == 200
        line = wait_until("the refusal's line", lambda: next((r for r in caplog.records if hasattr(r, "call")), None))
    assert line.call["method"] == "HTTP GET /api/tables" and line.call["code"] == "401"
    assert line.call["peer"].startswith("127.0.0.1:")
    assert len([r for r in caplog.records if hasattr(r, "call")]) == 1  # the answered call is not a refusal

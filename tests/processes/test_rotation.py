"""Rotation without a restart: certificates and tokens replaced under load, in a Kubernetes Secret's layout.

The files live where a kubelet puts a mounted Secret: ``..<timestamp>/tls.crt``, a ``..data``
symlink to that directory, and ``tls.crt -> ..data/tls.crt``; an update writes a new timestamped
directory, renames a new ``..data`` link over the old one and deletes the old directory
(tests/secret_volume.py). The path the server was given never changes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import threading
import urllib.error
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import free_port, make_pki, make_table, running_server
from embserve_client import AsyncClient, Client
from embserve_client.errors import AuthenticationError, EmbserveError, UnavailableError
from embserve_server.app import Server
from embserve_server.auth import TokenCheck, load_tokens
from embserve_server.config import ServerConfig
from embserve_server.http_port import start_http_port
from embserve_server.rotation import Rotation
from secret_volume import SecretVolume
from test_http_security import fetch
from test_workers import two_workers
from waiting import wait_for_line, wait_until

POLL = 0.05  # seconds between the rotation's checks in these tests


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rot") / "tables"
    make_table(path, n=200, dim=8)
    return path


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two unrelated CAs, each with a server certificate for 127.0.0.1 and a client certificate."""
    return make_pki(tmp_path_factory.mktemp("pki-old")), make_pki(tmp_path_factory.mktemp("pki-new"))


def tls_files(pki: Path, client_ca: Path | None = None) -> dict[str, bytes]:
    files = {"tls.crt": (pki / "server.pem").read_bytes(), "tls.key": (pki / "server.key").read_bytes()}
    if client_ca is not None:
        files["ca.crt"] = client_ca.read_bytes()
    return files


def reloads(server: Server, what: str, result: str) -> float:
    return server.metrics.registry.get_sample_value("embserve_credential_reloads_total", {"what": what, "result": result}) or 0.0


@dataclass
class Load:
    """Threads calling until stopped; every failure is kept. ``fresh`` threads open a new connection per call."""

    call: Callable[[bool], None]
    threads: int = 2
    fresh: int = 1
    calls: int = 0
    errors: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, fresh: bool) -> None:
        while not self.stop.is_set():
            try:
                self.call(fresh)
            except BaseException as exc:  # noqa: BLE001 - kept for the assertion
                with self.lock:
                    self.errors.append(exc)
            with self.lock:
                self.calls += 1

    @contextmanager
    def running(self) -> Iterator[Load]:
        workers = [threading.Thread(target=self._run, args=(n < self.fresh,), daemon=True) for n in range(self.threads)]
        for w in workers:
            w.start()
        try:
            yield self
        finally:
            self.stop.set()
            for w in workers:
                w.join(60)

    def more_calls(self, n: int) -> None:
        """Wait until ``n`` more calls have been made (the load really ran across an event)."""
        start = self.calls
        wait_until(f"{n} more calls under load", lambda: self.calls >= start + n)


def test_certificate_rotates_under_load_on_both_ports(tables: Path, pkis: tuple[Path, Path], tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    old, new = pkis
    volume = SecretVolume(tmp_path / "tls")
    volume.write(tls_files(old))
    both_cas = (old / "ca.pem").read_bytes() + (new / "ca.pem").read_bytes()
    config = {"tls_cert": volume.path("tls.crt"), "tls_key": volume.path("tls.key")}
    with running_server(tables, **config) as server:
        assert server.rotation is not None and server.tls is not None
        target = f"127.0.0.1:{server.port}"
        http_config = ServerConfig(tables_dir=tables, metrics_address="127.0.0.1:0", **config)  # type: ignore[arg-type]
        http = start_http_port(http_config, server.metrics.registry, tls=server.tls)
        steady = Client(target, root_certificates=both_cas, timeout=30)

        def call(fresh: bool) -> None:
            if fresh:
                with Client(target, root_certificates=both_cas, timeout=30) as c:
                    assert c.get_vector("w1").shape == (8,)
            else:
                assert steady.get_vector("w2").shape == (8,)

        def trusting(pki: Path) -> Client:
            return Client(target, root_certificates=(pki / "ca.pem").read_bytes(), timeout=5)

        def https_status(pki: Path) -> int:
            return fetch(f"https://127.0.0.1:{http.port}/metrics", context=ssl.create_default_context(cafile=pki / "ca.pem"))[0]

        server.rotation.start(POLL)
        try:
            with Load(call).running() as load:
                load.more_calls(20)
                volume.write(tls_files(new))
                wait_until("the new certificate loaded", lambda: reloads(server, "tls", "ok") == 1)
                load.more_calls(20)  # calls across the change, on an old connection and on new ones
                with trusting(new) as c:
                    assert c.get_vector("w3").shape == (8,)
                with trusting(old) as c, pytest.raises(UnavailableError):
                    c.get_vector("w3")  # a new connection gets the new certificate only
                assert https_status(new) == 200
                with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
                    https_status(old)

                # A broken pair (the old certificate with the new key) is refused; the new one keeps serving.
                volume.write({"tls.crt": (old / "server.pem").read_bytes(), "tls.key": (new / "server.key").read_bytes()})
                wait_until("the broken pair refused", lambda: reloads(server, "tls", "error") == 1)
                load.more_calls(20)
                with trusting(new) as c:
                    assert c.get_vector("w4").shape == (8,)
                assert https_status(new) == 200
            assert load.errors == [], load.errors[:3]
            assert reloads(server, "tls", "ok") == 1 and reloads(server, "tls", "error") == 1  # logged and counted once
            assert any("tls reload refused" in r.getMessage() and "matching key" in r.getMessage() for r in caplog.records)
        finally:
            server.rotation.stop()
            steady.close()
            http.close()


def test_client_ca_rotates_for_mutual_tls(tables: Path, pkis: tuple[Path, Path], tmp_path: Path) -> None:
    old, new = pkis
    volume = SecretVolume(tmp_path / "mtls")
    volume.write(tls_files(old, client_ca=old / "ca.pem"))
    with running_server(tables, tls_cert=volume.path("tls.crt"), tls_key=volume.path("tls.key"), tls_client_ca=volume.path("ca.crt")) as server:
        assert server.rotation is not None
        target = f"127.0.0.1:{server.port}"

        def client_of(pki: Path) -> Client:
            return Client(target, root_certificates=(old / "ca.pem").read_bytes(), timeout=5,
                          private_key=(pki / "client.key").read_bytes(), certificate_chain=(pki / "client.pem").read_bytes())

        with client_of(old) as c:
            assert c.get_vector("w1").shape == (8,)
        # Same server certificate, new client CA: clients of the new CA get in, the old ones no longer.
        volume.write({**tls_files(old), "ca.crt": (new / "ca.pem").read_bytes()})
        server.rotation.poll()
        assert reloads(server, "tls", "ok") == 1
        with client_of(new) as c:
            assert c.get_vector("w1").shape == (8,)
        with client_of(old) as c, pytest.raises(UnavailableError):
            c.get_vector("w1")


READ_A, READ_B, ADMIN = "token-a-0123456789", "token-b-0123456789", "token-admin-0123456789"


def test_token_revoked_under_load(tables: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    volume = SecretVolume(tmp_path / "tokens")
    volume.write({"tokens": f"{READ_A} read\n{READ_B} read\n{ADMIN} admin\n".encode()})
    with running_server(tables, auth_token_file=volume.path("tokens")) as server:
        assert server.rotation is not None
        target = f"127.0.0.1:{server.port}"
        a, b = Client(target, token=READ_A, timeout=30), Client(target, token=READ_B, timeout=30)

        def call(fresh: bool) -> None:
            assert b.get_vector("w1").shape == (8,)

        server.rotation.start(POLL)
        try:
            with Load(call, fresh=0).running() as load:
                load.more_calls(20)
                assert a.get_vector("w1").shape == (8,)
                volume.write({"tokens": f"{READ_B} read\n{ADMIN} admin\n".encode()})  # token A revoked
                wait_until("the new token file loaded", lambda: reloads(server, "tokens", "ok") == 1)
                with pytest.raises(AuthenticationError):
                    a.get_vector("w1")  # its very next call
                load.more_calls(20)
                # A malformed file keeps the tokens in force and says why.
                volume.write({"tokens": f"{READ_A} read\n{READ_B} superuser\n".encode()})
                wait_until("the malformed token file refused", lambda: reloads(server, "tokens", "error") == 1)
                load.more_calls(20)
                with pytest.raises(AuthenticationError):
                    a.get_vector("w1")
            assert load.errors == [], load.errors[:3]
            assert any("tokens reload refused" in r.getMessage() and "line 2" in r.getMessage() for r in caplog.records)
        finally:
            server.rotation.stop()
            a.close()
            b.close()


def test_change_is_seen_when_size_and_mtime_stay(tmp_path: Path) -> None:
    """Content decides: a new file of the same size and mtime behind the same path is still seen."""
    volume = SecretVolume(tmp_path / "tokens")
    volume.write({"tokens": f"{READ_A} read\n".encode()})
    path = volume.path("tokens")
    before = path.stat()
    check = TokenCheck(load_tokens(path))
    rotation = Rotation(tokens=check, token_file=path)
    assert check.role_of(READ_A) == "read"
    volume.write({"tokens": f"{READ_B} read\n".encode()})  # same length
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns
    rotation.poll()
    assert check.role_of(READ_A) is None and check.role_of(READ_B) == "read"


def test_unreadable_file_keeps_serving_and_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"{READ_A} read\n")
    check = TokenCheck(load_tokens(path))
    rotation = Rotation(tokens=check, token_file=path)
    path.unlink()
    with caplog.at_level(logging.ERROR):
        rotation.poll()
        rotation.poll()
    assert check.role_of(READ_A) == "read"
    assert [r.getMessage() for r in caplog.records if "cannot read" in r.getMessage()].__len__() == 1
    path.write_text(f"{READ_B} admin\n")
    rotation.poll()
    assert check.role_of(READ_B) == "admin" and check.role_of(READ_A) is None


def test_rotation_interval_is_checked() -> None:
    with pytest.raises(ValueError, match="--rotation-interval"):
        Rotation().start(-1)


def test_errors_carry_the_request_id(tables: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text(f"{READ_A} read\n")
    with running_server(tables, auth_token_file=token_file) as server:
        target = f"127.0.0.1:{server.port}"
        with Client(target, timeout=10, request_id="job-42") as c, pytest.raises(EmbserveError) as refused:
            c.get_vector("w1")
        assert refused.value.request_id == "job-42"
        with Client(target, timeout=10) as c, pytest.raises(EmbserveError) as made:
            c.get_vector("w1")
        assert made.value.request_id is not None and len(made.value.request_id) == 16


def test_async_client_errors_carry_the_request_id(tables: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text(f"{READ_A} read\n")

    async def refused(port: int) -> str | None:
        async with AsyncClient(f"127.0.0.1:{port}", timeout=10, request_id="async-7") as c:
            try:
                await c.get_vector("w1")
            except EmbserveError as exc:
                return exc.request_id
        return None

    with running_server(tables, auth_token_file=token_file) as server:
        assert asyncio.run(refused(server.port)) == "async-7"


def test_workers_and_their_parent_each_rotate_tokens(tables: Path, tmp_path: Path) -> None:
    """``--workers 2``: each worker and the parent's HTTP port re-read the token file on their own."""
    volume = SecretVolume(tmp_path / "tokens")
    volume.write({"tokens": f"{READ_A} read\n{READ_B} read\n".encode()})
    metrics_port = free_port()
    with two_workers(tables, tmp_path / "mp", "--auth-token-file", str(volume.path("tokens")), "--rotation-interval", str(POLL),
                     "--metrics-address", f"127.0.0.1:{metrics_port}", "--metrics-auth") as (proc, port, _pids):
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        assert fetch(url, READ_A)[0] == 200
        volume.write({"tokens": f"{READ_B} read\n".encode()})
        for _ in range(3):  # two workers and the parent
            wait_for_line(proc, "tokens reloaded")
        for _ in range(8):  # new connections land on either worker
            with Client(f"127.0.0.1:{port}", token=READ_A, timeout=10) as a, pytest.raises(AuthenticationError):
                a.get_vector("w1")
            with Client(f"127.0.0.1:{port}", token=READ_B, timeout=10) as b:
                assert b.get_vector("w1").shape == (8,)
        assert fetch(url, READ_A)[0] == 401 and fetch(url, READ_B)[0] == 200

"""TLS, mutual TLS, bearer tokens, reflection switch and path-safe table names, against real servers.

Certificates are made in the test with the ``openssl`` command line (the ``cryptography`` package
is not installed): a CA, a server certificate for 127.0.0.1/localhost and a client certificate.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import ADMIN, BIN, READ, make_table, rejected, running_server
from embserve_client import Client
from embserve_client.cli import main as client_cli
from embserve_client.errors import AuthenticationError, PermissionDeniedError, UnavailableError
from embserve_client.pb import embserve_pb2 as pb
from embserve_client.pb import embserve_pb2_grpc as pb_grpc
from embserve_server.app import Server
from embserve_server.auth import load_tokens
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from waiting import wait_for_line


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sec") / "tables"
    make_table(path, n=200, dim=8)
    return path


# ---------------------------------------------------------------------------------------------
# TLS


@pytest.fixture(scope="module")
def tls_server(tables: Path, pki: Path) -> Iterator[Server]:
    with running_server(tables, tls_cert=pki / "server.pem", tls_key=pki / "server.key") as s:
        yield s


def test_tls_client_with_ca_connects(tls_server: Server, pki: Path) -> None:
    with Client(f"127.0.0.1:{tls_server.port}", root_certificates=(pki / "ca.pem").read_bytes()) as c:
        assert c.get_vector("w1").shape == (8,)
    with Client(f"localhost:{tls_server.port}", root_certificates=(pki / "ca.pem").read_bytes()) as c:
        assert c.list_tables()[0].name == "t"


def test_tls_refuses_plaintext_and_unknown_ca(tls_server: Server, pki: Path) -> None:
    with Client(f"127.0.0.1:{tls_server.port}", timeout=5) as plain:
        with pytest.raises(UnavailableError):
            plain.get_vector("w1")
    with Client(f"127.0.0.1:{tls_server.port}", timeout=5, root_certificates=(pki / "other.pem").read_bytes()) as wrong:
        with pytest.raises(UnavailableError):
            wrong.get_vector("w1")


def test_mutual_tls(tables: Path, pki: Path) -> None:
    ca = (pki / "ca.pem").read_bytes()
    with running_server(tables, tls_cert=pki / "server.pem", tls_key=pki / "server.key", tls_client_ca=pki / "ca.pem") as s:
        target = f"127.0.0.1:{s.port}"
        with Client(target, root_certificates=ca, private_key=(pki / "client.key").read_bytes(),
                    certificate_chain=(pki / "client.pem").read_bytes()) as c:
            assert c.get_vector("w1").shape == (8,)
        with Client(target, timeout=5, root_certificates=ca) as no_cert:
            with pytest.raises(UnavailableError):
                no_cert.get_vector("w1")
        # A self-signed certificate from another CA is not accepted either.
        with Client(target, timeout=5, root_certificates=ca, private_key=(pki / "other.key").read_bytes(),
                    certificate_chain=(pki / "other.pem").read_bytes()) as stranger:
            with pytest.raises(UnavailableError):
                stranger.get_vector("w1")


def test_half_tls_configuration_is_refused(tables: Path, pki: Path) -> None:
    with pytest.raises(ValueError, match="both --tls-cert and --tls-key"):
        with running_server(tables, tls_cert=pki / "server.pem"):
            pass
    with pytest.raises(ValueError, match="--tls-key .*cannot read"):
        with running_server(tables, tls_cert=pki / "server.pem", tls_key=pki / "absent.key"):
            pass


# ---------------------------------------------------------------------------------------------
# Bearer tokens


@pytest.fixture(scope="module")
def auth_server(tables: Path, token_file: Path) -> Iterator[Server]:
    with running_server(tables, auth_token_file=token_file) as s:
        yield s


def test_tokens_and_roles(auth_server: Server) -> None:
    target = f"127.0.0.1:{auth_server.port}"
    unauth, denied = rejected(auth_server, "unauthenticated"), rejected(auth_server, "permission_denied")
    with Client(target) as anonymous:
        with pytest.raises(AuthenticationError, match="UNAUTHENTICATED: no bearer token"):
            anonymous.get_vector("w1")
        with pytest.raises(AuthenticationError):
            anonymous.reload()
    with Client(target, token="not-a-token") as wrong:
        with pytest.raises(AuthenticationError, match="invalid bearer token"):
            wrong.list_tables()
    with Client(target, token=READ) as reader:
        assert reader.get_vector("w1").shape == (8,)
        with pytest.raises(PermissionDeniedError, match="needs an admin token"):
            reader.reload()
    with Client(target, token=ADMIN) as admin:
        assert admin.get_vector("w1").shape == (8,)  # admin implies read
        assert admin.reload() == [("t", "unchanged", 1, "")]
    assert rejected(auth_server, "unauthenticated") - unauth == 3
    assert rejected(auth_server, "permission_denied") - denied == 1


def test_malformed_authorization_headers(auth_server: Server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{auth_server.port}") as ch:
        stub = pb_grpc.EmbeddingServiceStub(ch)
        for value in ("", "Bearer", "Bearer ", "Basic " + READ, READ, f"Bearer {READ}x", "bearer  " + READ):
            md = (("authorization", value),)
            try:
                stub.ListTables(pb.ListTablesRequest(), metadata=md, timeout=5)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
            expected = grpc.StatusCode.OK if value.lower().startswith("bearer ") and value.split()[-1] == READ else grpc.StatusCode.UNAUTHENTICATED
            assert code == expected, repr(value)


def test_health_stays_open_and_reflection_follows_read_access(auth_server: Server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{auth_server.port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(ch)
        request = [reflection_pb2.ServerReflectionRequest(list_services="")]
        with pytest.raises(grpc.RpcError) as info:
            list(reflect.ServerReflectionInfo(iter(request), timeout=5))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        answers = list(reflect.ServerReflectionInfo(iter(request), timeout=5, metadata=(("authorization", f"Bearer {READ}"),)))
        names = {s.name for s in answers[0].list_services_response.service}
        assert "embserve.v1.EmbeddingService" in names


def test_token_file_format(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.write_text("# comment\n\nabc read\ndef admin\n")
    assert sorted(load_tokens(good).values()) == ["admin", "read"]
    for text, message in (
        ("abc writer\n", "ROLE one of"),
        ("abc\n", "TOKEN ROLE"),
        ("abc read extra\n", "TOKEN ROLE"),
        ("abc read\nabc admin\n", "duplicate token"),
        ("# nothing\n", "holds no token"),
    ):
        bad = tmp_path / "bad"
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_tokens(bad)
    with pytest.raises(ValueError, match="cannot read"):
        load_tokens(tmp_path / "absent")


# ---------------------------------------------------------------------------------------------
# Table names on the filesystem path, reflection switch


@pytest.mark.parametrize("name", ["../x", "/etc", "a/../../b", "..", ".", "t/../t", "t/1", "~root", "t\x00", "-rf", " t"])
def test_reload_refuses_path_like_names(auth_server: Server, name: str) -> None:
    with Client(f"127.0.0.1:{auth_server.port}", token=ADMIN) as admin:
        with pytest.raises(ValueError, match="invalid table name"):
            admin.reload(name)
        assert admin.get_vector("w1").shape == (8,)


def test_reflection_can_be_switched_off(tables: Path) -> None:
    request = [reflection_pb2.ServerReflectionRequest(list_services="")]
    with running_server(tables, reflection=False) as s, grpc.insecure_channel(f"127.0.0.1:{s.port}") as ch:
        with pytest.raises(grpc.RpcError) as info:
            list(reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(iter(request), timeout=5))
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with running_server(tables) as s, grpc.insecure_channel(f"127.0.0.1:{s.port}") as ch:
        answers = list(reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(iter(request), timeout=5))
        assert answers[0].list_services_response.service


# ---------------------------------------------------------------------------------------------
# The command lines: embserve-server flags, embserve --tls --ca --token-file


def test_command_lines_with_tls_and_tokens(tables: Path, pki: Path, token_file: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [BIN / "embserve-server", "--tables", str(tables), "--address", "127.0.0.1:0", "--no-reflection",
         "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"), "--auth-token-file", str(token_file)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        port = re.search(r":(\d+)$", wait_for_line(proc, "listening on").strip()).group(1)  # type: ignore[union-attr]
        wait_for_line(proc, "serving t v1")
        target = f"127.0.0.1:{port}"
        read_file = tmp_path / "read-token"
        read_file.write_text(READ + "\n")
        common = ["--target", target, "--ca", str(pki / "ca.pem"), "--timeout", "10"]
        assert client_cli(["health", *common]) == 0  # probes need no token
        assert client_cli(["tables", *common, "--token-file", str(read_file)]) == 0
        assert client_cli(["tables", *common]) == 2  # no token
        assert client_cli(["tables", "--target", target, "--timeout", "5"]) == 2  # plaintext against TLS
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    bad = tmp_path / "bad-tokens"
    bad.write_text("onlytoken\n")
    out = subprocess.run([BIN / "embserve-server", "--tables", str(tables), "--address", "127.0.0.1:0", "--auth-token-file", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "TOKEN ROLE" in out.stderr

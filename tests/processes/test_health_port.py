"""``--health-address``: a plaintext port with grpc.health.v1 alone, for probes that cannot do TLS.

Kubernetes' native gRPC probes speak plaintext only; with TLS on the main port they probe this one.
It answers what the main port's health service says, and nothing else.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from conftest import make_pki, make_table, running_server
from embserve_client import Client
from embserve_client.pb import embserve_pb2 as pb
from embserve_client.pb import embserve_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_port_follows_the_main_port_and_serves_nothing_else(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    make_table(tables, n=100, dim=8)
    pki = make_pki(tmp_path)
    token_file = tmp_path / "tokens"
    token_file.write_text("health-port-token-0123 read\n")
    with running_server(tables, tls_cert=pki / "server.pem", tls_key=pki / "server.key", auth_token_file=token_file,
                        health_address="127.0.0.1:0") as server:
        assert server.health_server is not None and server.health_port not in (0, server.port)
        server.health_server.start()
        with grpc.insecure_channel(f"127.0.0.1:{server.health_port}") as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            assert check(health_pb2.HealthCheckRequest(service=""), timeout=10).status == SERVING
            with pytest.raises(grpc.RpcError) as other:
                pb_grpc.EmbeddingServiceStub(channel).ListTables(pb.ListTablesRequest(), timeout=10)
            assert other.value.code() == grpc.StatusCode.UNIMPLEMENTED  # no table data in plaintext
            with Client(f"127.0.0.1:{server.port}", root_certificates=(pki / "ca.pem").read_bytes(),
                        token="health-port-token-0123") as client:
                assert client.get_vector("w1").shape == (8,)
            server.set_serving(False)  # loading, or draining
            assert check(health_pb2.HealthCheckRequest(service=""), timeout=10).status == NOT_SERVING
            server.drain(0)
            with pytest.raises(grpc.RpcError):
                check(health_pb2.HealthCheckRequest(service=""), timeout=2)  # the drain closed it too


def test_health_port_is_off_by_default(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    make_table(tables, n=100, dim=8)
    with running_server(tables) as server:
        assert server.health_server is None and server.health_port == 0

"""Operations: health across start-up and drain, reflection, hot reload under load, metrics,
graceful shutdown on SIGTERM."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import threading
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import BIN, free_port, make_table, require_tool, running_server, seeded_table
from embserve_client import Client, EmbserveError, UnavailableError, UnknownKeyError
from embserve_format.bundle_writer import BundleSpec, write_bundle
from embserve_server.app import run_worker
from embserve_server.config import ServerConfig
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from waiting import wait_for_line, wait_until

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def publish(tables: Path, version: int, n: int = 500, dim: int = 8) -> np.ndarray:
    """Version v of table 't': rows = base + v, so every answer tells which version made it."""
    base, keys = seeded_table(n, dim, seed=11)
    vectors = base + version
    write_bundle(tables, "t", vectors, keys, BundleSpec(source={"kind": "test"}), version=version)
    return vectors


def test_health_not_serving_then_serving_then_not_serving_on_drain(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    tables.mkdir()
    port = free_port()
    stop = threading.Event()
    cfg = ServerConfig(tables_dir=tables, address=f"127.0.0.1:{port}", poll_interval=0.1, grace_period=1.0)
    thread = threading.Thread(target=run_worker, args=(cfg,), kwargs={"stop": stop}, daemon=True)
    thread.start()
    seen: list[int] = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = health_pb2_grpc.HealthStub(channel)
        assert stub.Check(health_pb2.HealthCheckRequest(service="")).status == NOT_SERVING
        with Client(f"127.0.0.1:{port}") as c, pytest.raises(UnavailableError, match="no table is loaded"):
            c.get_vector("w1", table="")
        watch = stub.Watch(health_pb2.HealthCheckRequest(service="embserve.v1.EmbeddingService"))
        publish(tables, 1)
        for response in watch:
            seen.append(response.status)
            if response.status == SERVING:
                stop.set()  # drain, as on SIGTERM
            if seen[-1] == NOT_SERVING and SERVING in seen:
                break
        watch.cancel()
    thread.join(timeout=30)
    assert not thread.is_alive()
    statuses = [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]
    assert statuses == [NOT_SERVING, SERVING, NOT_SERVING]


def test_reflection_lists_services_and_methods(server: object, client: Client) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    responses = list(stub.ServerReflectionInfo(iter([
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="embserve.v1.EmbeddingService"),
    ])))
    services = {s.name for s in responses[0].list_services_response.service}
    assert {"embserve.v1.EmbeddingService", "embserve.v1.AdminService", "grpc.health.v1.Health"} <= services
    from google.protobuf import descriptor_pb2

    fd = descriptor_pb2.FileDescriptorProto.FromString(responses[1].file_descriptor_response.file_descriptor_proto[0])
    methods = {m.name for s in fd.service if s.name == "EmbeddingService" for m in s.method}
    assert {"ListTables", "Lookup", "Search", "Similarity"} <= methods


def test_reflection_can_be_switched_off(tables: Path) -> None:
    with running_server(tables, reflection=False) as server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_hot_reload_under_load(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    versions = {1: publish(tables, 1)}
    errors: list[BaseException] = []
    seen_versions: set[int] = set()
    seen = threading.Condition()
    stop = threading.Event()

    def wait_seen(version: int) -> None:
        """Block until a load thread got an answer from ``version`` (or failed)."""
        with seen:
            assert seen.wait_for(lambda: version in seen_versions or bool(errors), timeout=60), f"version {version} never answered"

    with running_server(tables) as server:

        def hammer(seed: int) -> None:
            rng = np.random.default_rng(seed)
            with Client(f"127.0.0.1:{server.port}") as c:
                while not stop.is_set():
                    try:
                        keys = [f"w{i}" for i in rng.integers(0, 500, size=8)]
                        res = c.lookup(keys)
                        expected = versions.get(res.version)
                        if expected is None or not np.array_equal(res.vectors, expected[res.ids]):
                            raise AssertionError(f"answer does not match version {res.version}")
                        with seen:
                            seen_versions.add(res.version)
                            seen.notify_all()
                        c.most_similar(keys[0], topn=5)
                    except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                        with seen:
                            errors.append(exc)
                            seen.notify_all()
                        return

        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        try:
            with Client(f"127.0.0.1:{server.port}") as admin:
                wait_seen(1)  # the load is running before the first reload
                for v in (2, 3, 4):
                    if v == 3:  # corrupt: flip bytes in the vectors after the manifest recorded their sha256
                        publish(tables, 3)
                        path = tables / "t" / "3" / "vectors.npy"
                        data = bytearray(path.read_bytes())
                        data[-4:] = b"\xff\xff\xff\x7f"
                        path.write_bytes(bytes(data))
                    else:
                        versions[v] = publish(tables, v)
                    outcome = admin.reload()
                    assert [o[1] for o in outcome] == (["refused"] if v == 3 else ["loaded"])
                    if v != 3:
                        wait_seen(v)  # the load crossed this reload
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        registry = server.metrics.registry
        assert registry.get_sample_value("embserve_reloads_total", {"table": "t", "outcome": "refused"}) == 1.0
        assert registry.get_sample_value("embserve_reloads_total", {"table": "t", "outcome": "loaded"}) == 3.0  # 1, 2 and 4
        assert registry.get_sample_value("embserve_table_version", {"table": "t"}) == 4.0
        assert server.registry.get("t").version == 4
    assert not errors, errors[:3]
    assert seen_versions == {1, 2, 4}  # never 3, the version that was refused


def test_metrics_count_requests_keys_and_missing(server: object, client: Client) -> None:
    client.get_vectors(["w1", "w2", "w3"])
    client.lookup(["w1", "nope", "nada"], missing="skip")
    with pytest.raises(UnknownKeyError):
        client.get_vector("nope")
    client.most_similar_batch(["w1", "w2"])
    r = server.metrics.registry  # type: ignore[attr-defined]
    assert r.get_sample_value("embserve_requests_total", {"method": "Lookup", "code": "OK"}) == 2.0
    assert r.get_sample_value("embserve_requests_total", {"method": "Lookup", "code": "NOT_FOUND"}) == 1.0
    assert r.get_sample_value("embserve_requests_total", {"method": "Search", "code": "OK"}) == 1.0
    assert r.get_sample_value("embserve_requests_total", {"method": "Similarity", "code": "OK"}) == 0.0  # initialised
    assert r.get_sample_value("embserve_lookup_keys_sum") == 6.0
    assert r.get_sample_value("embserve_search_queries_sum") == 2.0
    assert r.get_sample_value("embserve_missing_keys_total", {"table": "t"}) == 2.0
    assert r.get_sample_value("embserve_request_duration_seconds_count", {"method": "Lookup"}) == 3.0
    assert r.get_sample_value("embserve_in_flight_requests") == 0.0
    assert r.get_sample_value("embserve_table_rows", {"table": "t"}) == 2000.0


@pytest.fixture
def metrics_server(tables: Path):  # type: ignore[no-untyped-def]
    mport = free_port()
    proc = subprocess.Popen(
        [BIN / "embserve-server", "--tables", str(tables), "--address", "127.0.0.1:0", "--metrics-address", f"127.0.0.1:{mport}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        port = re.search(r":(\d+)$", wait_for_line(proc, "listening on").strip()).group(1)  # type: ignore[union-attr]
        wait_for_line(proc, "serving t v1")
        yield f"127.0.0.1:{port}", f"http://127.0.0.1:{mport}/metrics"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_promtool_accepts_live_scrape(metrics_server: tuple[str, str]) -> None:
    promtool = require_tool("promtool", "Debian package prometheus, scripts/system-deps.sh")
    target, url = metrics_server
    with Client(target) as c:
        c.most_similar("w1")
        c.lookup(["w1", "zzz"], missing="zero")
    body = urllib.request.urlopen(url, timeout=10).read()
    assert b'embserve_requests_total{code="OK",method="Search"} 1.0' in body
    assert b"_created" not in body
    check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
    assert check.returncode == 0 and check.stdout.strip() == b"" and check.stderr.strip() == b"", (check.stdout, check.stderr)
    for line in body.decode().splitlines():  # labels never carry keys
        assert "zzz" not in line and "w1" not in line


class HeldCall:
    """One call the server has certainly accepted and that stays in progress until told to end.

    A reflection stream: the first answer proves the server accepted the call; each ``ask()`` sends
    one more request on it and waits for the answer; ``end()`` closes the stream.
    """

    def __init__(self, channel: grpc.Channel) -> None:
        self._requests: queue.Queue[reflection_pb2.ServerReflectionRequest | None] = queue.Queue()
        self._answers: queue.Queue[object] = queue.Queue()
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        self._thread = threading.Thread(target=self._run, args=(stub,), daemon=True)
        self._thread.start()
        self.ask()

    def _run(self, stub: reflection_pb2_grpc.ServerReflectionStub) -> None:
        try:
            for response in stub.ServerReflectionInfo(iter(self._requests.get, None), timeout=120):
                self._answers.put(response)
            self._answers.put("end")
        except grpc.RpcError as exc:
            self._answers.put(exc)

    def ask(self) -> list[str]:
        """Send a list-services request on the held stream; returns the services named in the answer."""
        self._requests.put(reflection_pb2.ServerReflectionRequest(list_services=""))
        answer = self._answers.get(timeout=60)
        if not isinstance(answer, reflection_pb2.ServerReflectionResponse):
            raise AssertionError(f"the held call did not answer: {answer!r}")
        return [s.name for s in answer.list_services_response.service]

    def end(self) -> object:
        """Close the stream from the client side; returns how it ended ('end' when cleanly)."""
        self._requests.put(None)
        self._thread.join(60)
        return self._answers.get(timeout=60)


def refuses_new_calls(target: str) -> bool:
    """True once a call on a fresh connection is refused: the server has begun to stop."""
    with grpc.insecure_channel(target) as ch:
        try:
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as exc:
            return exc.code() == grpc.StatusCode.UNAVAILABLE
    return False


def test_sigterm_during_load_finishes_accepted_calls(tables: Path) -> None:
    # A grace period no loaded machine outlasts: the calls in progress are ended by the test, not the clock.
    proc = subprocess.Popen(
        [BIN / "embserve-server", "--tables", str(tables), "--address", "127.0.0.1:0", "--grace-period", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    port = re.search(r":(\d+)$", wait_for_line(proc, "listening on").strip()).group(1)  # type: ignore[union-attr]
    wait_for_line(proc, "serving t v1")
    target = f"127.0.0.1:{port}"
    outcomes: list[str] = []
    details: list[str] = []
    answered = threading.Semaphore(0)
    stop = threading.Event()

    def load() -> None:
        with Client(target, timeout=30, options=[("grpc.enable_retries", 0)]) as c:
            while not stop.is_set():
                try:
                    near = c.most_similar_batch([f"w{i}" for i in range(64)], topn=10, exact=True)
                    assert [n[0].key for n in near[:2]] and all(len(n) == 10 for n in near)  # whole answers only
                    outcomes.append("OK")
                    answered.release()
                except EmbserveError as exc:
                    outcomes.append(exc.code.name if exc.code else type(exc).__name__)
                    details.append(str(exc))
                    stop.wait(0.01)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        with grpc.insecure_channel(target) as channel:
            held = HeldCall(channel)
            for _ in range(8):  # the load is running: 8 calls answered before the signal
                assert answered.acquire(timeout=60)
            proc.send_signal(signal.SIGTERM)
            wait_for_line(proc, "received SIGTERM: draining")
            wait_until("new calls refused after SIGTERM", lambda: refuses_new_calls(target), poll=0)
            # The call accepted before the signal is still served while the server drains ...
            assert "embserve.v1.EmbeddingService" in held.ask()
            assert proc.poll() is None  # ... and the server waits for it
            assert held.end() == "end"
        code = proc.wait(timeout=60)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        if proc.poll() is None:
            proc.kill()
    assert code == 0
    # Calls were answered whole or refused: UNAVAILABLE (stopping, then gone), or CANCELLED for a call
    # that reached grpc's queue during shutdown before a handler took it (no handler was cut off: the
    # grace period never ran out). Never an error from a half-run call.
    assert "OK" in outcomes and set(outcomes) <= {"OK", "UNAVAILABLE", "CANCELLED"}, set(details)
    wait_for_line(proc, "stopped")


def test_manifest_reports_tuned_recall(tmp_path: Path) -> None:
    path = make_table(tmp_path / "tables", n=3000, dim=8, factory="HNSW16,Flat")
    index = json.loads((path / "manifest.json").read_text())["index"]
    assert index["factory"] == "HNSW16,Flat" and index["recall_at_10"] >= 0.975 and index["ef_search"] >= 16


def test_refused_newest_falls_back_to_a_newer_valid_version(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    publish(tables, 1)
    with running_server(tables) as server:
        publish(tables, 2)
        publish(tables, 3)
        (tables / "t" / "3" / "keys.txt").write_text("broken\n")
        outcomes = {(o.version, o.outcome) for o in server.registry.reload()}
        assert outcomes == {(3, "refused"), (2, "loaded")}
        assert server.registry.get("t").version == 2


def test_pinned_version_is_served_even_when_newer_ones_exist(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    publish(tables, 1)
    publish(tables, 2)
    with running_server(tables, pinned=(("t", 1),)) as server, Client(f"127.0.0.1:{server.port}") as c:
        assert c.table_info("t").version == 1
        publish(tables, 3)
        c.reload()
        assert c.lookup(["w1"]).version == 1


def test_bad_pin_is_refused_by_the_cli(tables: Path) -> None:
    out = subprocess.run([BIN / "embserve-server", "--tables", str(tables), "--pin", "t=latest"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--pin 't=latest': expected TABLE=VERSION" in out.stderr

"""Load with faults on loopback, and overload control.

The load-and-fault test runs three client processes against one server while the test publishes
new versions, publishes corrupt ones, removes old and serving versions and reloads both by polling
and through the Reload RPC. Each step waits for events, not for the clock: every client has made
more calls since the step, and every client has been answered by each new version. Version v of
the table holds rows ``base + v``, so every answer can be checked against the version it names:
zero failed calls, no answer from a version other than the one named, and no client ever sees the
version go backwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import make_table, running_server
from embserve_client import Client
from embserve_client.errors import OverloadedError
from embserve_format.bundle import MANIFEST, VECTORS, sha256_file
from embserve_server.app import Server
from embserve_trainer.export import export_table
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from waiting import wait_until

N, DIM, SEED = 1500, 16, 7
CLIENTS = 3
CALLS_PER_STEP = 20  # calls every client makes between two steps (and after the last one)
PROGRESS_EVERY = 4  # a client reports "progress <calls> <newest version seen>" every few calls
WAIT = 120.0  # bound on any one wait for the clients (a loaded machine is slow, not stuck)

CLIENT_SCRIPT = r'''
import json, os, sys
import numpy as np
from embserve_client import Client
from embserve_client.pb import embserve_pb2 as pb

target, stop_file, seed, n, dim, base_seed, every = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:8])
base = np.random.default_rng(base_seed).normal(size=(n, dim)).astype(np.float32)
rows = lambda v: base + np.float32(v)
unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
rng = np.random.default_rng(seed)
calls, failures, mismatches, backwards, versions, last = 0, [], [], 0, set(), 0

def seen(v):
    global last, backwards
    versions.add(v)
    if v < last:
        backwards += 1
    last = max(last, v)

with Client(target, timeout=30) as c:
    while not os.path.exists(stop_file):
        if calls % every == 0:
            print(f"progress {calls} {last}", flush=True)
        kind = calls % 4
        calls += 1
        ids = rng.integers(0, n, size=16)
        try:
            if kind == 0:
                r = c.lookup([f"w{i}" for i in ids])
                seen(r.version)
                if not np.array_equal(r.vectors, rows(r.version)[ids]):
                    mismatches.append(("lookup", r.version))
            elif kind == 1:
                r = c.lookup(ids=ids.tolist())
                seen(r.version)
                if not np.array_equal(r.vectors, rows(r.version)[ids]) or list(r.ids) != ids.tolist():
                    mismatches.append(("lookup-ids", r.version))
            elif kind == 2:
                q = rng.normal(size=(2, dim)).astype(np.float32)
                r = c.search([c.query(vector=v) for v in q], topn=5, exact=True)
                seen(r.version)
                expect = np.einsum("qkd,qd->qk", unit(rows(r.version)[r.ids]), unit(q))
                best = (unit(rows(r.version)) @ unit(q).T).max(axis=0)
                keys_ok = all(k == f"w{i}" for krow, irow in zip(r.keys, r.ids) for k, i in zip(krow, irow))
                if not (np.allclose(r.scores, expect, atol=1e-4) and np.allclose(r.scores[:, 0], best, atol=1e-4) and keys_ok):
                    mismatches.append(("search", r.version))
            else:
                req = pb.SimilarityRequest(a=[f"w{i}" for i in ids[:8]], b=[f"w{i}" for i in ids[8:]])
                resp = c.stub.Similarity(req, timeout=30)
                seen(resp.version)
                r = rows(resp.version)
                expect = np.einsum("ij,ij->i", unit(r[ids[:8]]), unit(r[ids[8:]]))
                if not np.allclose(np.frombuffer(resp.scores, dtype="<f4"), expect, atol=1e-5):
                    mismatches.append(("similarity", resp.version))
        except Exception as exc:  # every failure of a valid request is reported
            failures.append(f"{type(exc).__name__}: {exc}")
print(json.dumps({"calls": calls, "failures": failures[:20], "failed": len(failures), "mismatches": mismatches[:20],
                  "backwards": backwards, "versions": sorted(versions)}))
'''


def base_rows() -> tuple[np.ndarray, list[str]]:
    base = np.random.default_rng(SEED).normal(size=(N, DIM)).astype(np.float32)
    return base, [f"w{i}" for i in range(N)]


def publish(tables: Path, v: int) -> Path:
    base, keys = base_rows()
    return export_table(tables, "t", base + np.float32(v), keys, source={"kind": "test"}, factory="Flat", version=v)


def publish_broken(tables: Path, staging: Path, v: int, how: str) -> None:
    """Build version ``v`` in a staging area, break it, then make it visible in one rename."""
    path = publish(staging, v)
    if how == "checksum":
        data = bytearray((path / VECTORS).read_bytes())
        data[-5] ^= 0x40
        (path / VECTORS).write_bytes(bytes(data))
    elif how == "truncate":
        with open(path / VECTORS, "r+b") as f:
            f.truncate(os.path.getsize(path / VECTORS) // 2)
    elif how == "extra-key":
        with open(path / "keys.txt", "a", encoding="utf-8") as f:
            f.write("extra\n")
        manifest = json.loads((path / MANIFEST).read_text())
        manifest["files"]["keys.txt"] = sha256_file(path / "keys.txt")  # consistent checksums: the count check must catch it
        (path / MANIFEST).write_text(json.dumps(manifest))
    else:
        raise ValueError(how)
    (tables / "t").mkdir(parents=True, exist_ok=True)
    os.rename(path, tables / "t" / str(v))


class LoadClients:
    """The client processes, and what their progress lines say (calls made, newest version seen)."""

    def __init__(self, script: Path, target: str, stop_file: Path, logs: Path) -> None:
        self.stop_file = stop_file
        self.progress = [(0, 0)] * CLIENTS
        self.results: list[dict[str, object] | None] = [None] * CLIENTS
        self.changed = threading.Condition()
        logs.mkdir()
        self.procs = [
            subprocess.Popen([sys.executable, str(script), target, str(stop_file), str(seed), str(N), str(DIM), str(SEED), str(PROGRESS_EVERY)],
                             stdout=subprocess.PIPE, stderr=open(logs / f"client{seed}.err", "w"), text=True)  # noqa: SIM115 - the child owns it
            for seed in range(CLIENTS)
        ]
        self.readers = [threading.Thread(target=self._read, args=(i,), daemon=True) for i in range(CLIENTS)]
        for r in self.readers:
            r.start()

    def _read(self, i: int) -> None:
        stdout = self.procs[i].stdout
        assert stdout is not None
        for line in stdout:
            with self.changed:
                if line.startswith("progress "):
                    calls, version = map(int, line.split()[1:])
                    self.progress[i] = (calls, version)
                elif line.startswith("{"):
                    self.results[i] = json.loads(line)
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait(self, what: str, ok: Callable[[int, int, int], bool]) -> None:
        """Block until ``ok(client, calls, newest version)`` holds for every client, or one has exited."""
        with self.changed:
            done = self.changed.wait_for(
                lambda: all(ok(i, *p) for i, p in enumerate(self.progress)) or any(p.poll() is not None for p in self.procs), WAIT)
            assert done and all(p.poll() is None for p in self.procs), f"clients stalled waiting for {what}: {self.progress}"

    def calls(self) -> list[int]:
        with self.changed:
            return [c for c, _ in self.progress]

    def finish(self) -> list[dict[str, object]]:
        self.stop_file.touch()
        for p, r in zip(self.procs, self.readers):
            p.wait(WAIT)
            r.join(WAIT)
        assert all(p.returncode == 0 for p in self.procs), [p.returncode for p in self.procs]
        assert all(r is not None for r in self.results), self.results
        return [r for r in self.results if r is not None]

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.slow
def test_load_with_publish_corrupt_remove(tmp_path: Path) -> None:
    tables, staging = tmp_path / "tables", tmp_path / "staging"
    publish(tables, 1)
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    stop = threading.Event()
    steps = ["publish", "checksum", "publish", "truncate", "vanish-serving", "publish", "extra-key",
             "remove-old", "publish", "vanish-table", "publish", "hidden-partial", "publish"]
    with running_server(tables, threads=4) as server:
        get = server.metrics.registry.get_sample_value

        def poller() -> None:  # what --poll-interval does, fast
            while not stop.wait(0.1):
                server.registry.reload()

        poll = threading.Thread(target=poller, daemon=True)
        poll.start()
        target = f"127.0.0.1:{server.port}"
        clients = LoadClients(script, target, tmp_path / "stop", tmp_path / "logs")
        v, served, broken, published = 1, 1, 0, [1]
        try:
            clients.wait("version 1", lambda i, calls, seen: seen >= 1)
            with Client(target) as admin:
                for n, step in enumerate(steps):
                    if step == "publish":
                        v += 1
                        publish(tables, v)
                        served = v
                        published.append(v)
                    elif step in ("checksum", "truncate", "extra-key"):
                        v += 1
                        publish_broken(tables, staging, v, step)
                        broken += 1
                    elif step == "vanish-serving":
                        shutil.rmtree(tables / "t" / str(served))
                    elif step == "vanish-table":
                        shutil.rmtree(tables / "t")
                    elif step == "remove-old":
                        for p in (tables / "t").iterdir():
                            if p.name.isdigit() and int(p.name) < served:
                                shutil.rmtree(p)
                    elif step == "hidden-partial":
                        partial = tables / "t" / f".tmp-{v + 1}-crashed"
                        partial.mkdir()
                        (partial / VECTORS).write_bytes(b"\x93NUMPY")
                    if n % 2:
                        admin.reload()  # the admin RPC, racing the poller
                    # The load runs on through every step, and every client is answered by each new version.
                    floor = [c + CALLS_PER_STEP for c in clients.calls()]
                    clients.wait(f"step {n} ({step})", lambda i, calls, seen, floor=floor: calls >= floor[i])  # type: ignore[misc]
                    clients.wait(f"version {served} after step {n} ({step})", lambda i, calls, seen, want=served: seen >= want)  # type: ignore[misc]
            results = clients.finish()
        finally:
            stop.set()
            clients.kill()
        poll.join(10)
        server.registry.reload()
        assert server.registry.get("t").version == served
        print("reloads:", {o: get("embserve_reloads_total", {"table": "t", "outcome": o}) for o in ("loaded", "unchanged", "refused")})
        assert (get("embserve_reloads_total", {"table": "t", "outcome": "refused"}) or 0) >= broken
        assert (get("embserve_reloads_total", {"table": "t", "outcome": "loaded"}) or 0) >= len(published)
    for r in results:
        assert r["failed"] == 0, r["failures"]
        assert r["mismatches"] == [], r["mismatches"]
        assert r["backwards"] == 0
        assert int(r["calls"]) >= len(steps) * CALLS_PER_STEP  # type: ignore[call-overload]
    print("clients:", [{k: r[k] for k in ("calls", "failed", "versions")} for r in results])
    # every client crossed every reload: each published version answered each client
    assert all(set(published) <= set(r["versions"]) for r in results), (published, [r["versions"] for r in results])  # type: ignore[call-overload]


# ---------------------------------------------------------------------------------------------
# Overload: admission limit, counted refusals, client retries with backoff


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Server]:
    tables = tmp_path / "tables"
    make_table(tables, n=100, dim=8)
    with running_server(tables, max_concurrent_rpcs=1, threads=4) as s:
        yield s


def hold_slot(channel: grpc.Channel) -> tuple[threading.Event, threading.Thread]:
    """Keep one RPC in progress (a reflection stream waiting for its next request)."""
    release, answered = threading.Event(), threading.Event()

    def requests() -> Iterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        release.wait(60)

    def run() -> None:
        for _ in reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(requests(), timeout=90):
            answered.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert answered.wait(30)
    return release, thread


def overloads(server: Server) -> float:
    return server.metrics.registry.get_sample_value("embserve_rejected_requests_total", {"reason": "overload"}) or 0.0


def test_overload_is_refused_counted_and_retried(limited: Server) -> None:
    target = f"127.0.0.1:{limited.port}"
    with grpc.insecure_channel(target) as ch, Client(target, timeout=30) as c:
        release, thread = hold_slot(ch)
        try:
            with pytest.raises(OverloadedError, match="RESOURCE_EXHAUSTED: server overloaded: 1 calls in progress, limit 1"):
                c.get_vector("w1")
            assert overloads(limited) == 4  # maxAttempts of the client's retry policy: 1 call + 3 retries
            code = limited.metrics.registry.get_sample_value("embserve_requests_total", {"method": "Lookup", "code": "RESOURCE_EXHAUSTED"})
            assert code == 4
            # Health checks are always admitted, so probes see SERVING under overload.
            status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        finally:
            release.set()
            thread.join(30)
        assert c.get_vector("w1").shape == (8,)  # the slot is free again


# The client's own retry policy with backoffs long enough that "the load drops" (the held call ends)
# surely happens before the attempts run out (~1.6, 4.8, 11 s after the first refusal at the
# earliest, with grpc's jitter), so the test waits on the release, not on a race with a 50 ms backoff.
PATIENT_RETRIES = {
    "methodConfig": [{
        "name": [{"service": "embserve.v1.EmbeddingService"}],
        "retryPolicy": {"maxAttempts": 4, "initialBackoff": "2s", "maxBackoff": "8s", "backoffMultiplier": 2,
                        "retryableStatusCodes": ["RESOURCE_EXHAUSTED"]},
    }]
}


def test_client_retry_succeeds_once_load_drops(limited: Server) -> None:
    target = f"127.0.0.1:{limited.port}"
    options = [("grpc.service_config", json.dumps(PATIENT_RETRIES))]
    with grpc.insecure_channel(target) as ch, Client(target, timeout=60, options=options) as c:
        release, thread = hold_slot(ch)
        result: dict[str, object] = {}
        caller = threading.Thread(target=lambda: result.update(vector=c.get_vector("w2")))
        caller.start()
        wait_until("the first attempt refused", lambda: overloads(limited) >= 1, WAIT, poll=0.005)
        release.set()  # load drops while the client is backing off
        thread.join(30)
        assert not thread.is_alive()  # the held call ended: its slot is free
        caller.join(60)
    assert 1 <= overloads(limited) < 4  # refused at least once, then a retry got through
    assert np.asarray(result["vector"]).shape == (8,)


def test_admission_slot_is_released_by_cancelled_and_failed_calls(limited: Server) -> None:
    """Calls that end without running a handler (cancelled, undecodable, erroring) free their slot.

    With a limit of 1 a leaked slot would refuse every later call for ever. (A call sent right after
    the previous one ended may still be refused: the slot is freed just after the status is sent.)
    """
    target = f"127.0.0.1:{limited.port}"
    with grpc.insecure_channel(target) as ch:
        raw = ch.unary_unary("/embserve.v1.EmbeddingService/Lookup")  # no service config: no retries
        for _ in range(20):
            for payload in (b"\x12\x02\xff\xfe", b"", b"\x12\x04nope"):
                try:
                    raw(payload, timeout=10)
                except grpc.RpcError:
                    pass
            raw.future(b"\x12\x02w1", timeout=10).cancel()

        def gets_in() -> bool:
            try:
                raw(b"\x12\x02w1", timeout=10)
                return True
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                return False

        # Once the cancelled calls have ended, calls get in.
        wait_until("the admission slot released", gets_in, WAIT, poll=0.01)
    with Client(target) as c:
        for _ in range(5):
            assert c.get_vector("w1").shape == (8,)

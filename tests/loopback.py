"""A loopback "cluster" of embserve-server replicas, like pods, for tests and bench/bench_cluster.py.

Each replica runs the container command of deploy/k8s/deployment.yaml (only paths and addresses
made local) on its own loopback address, 127.0.0.2, 127.0.0.3, 127.0.0.4, all on the same port,
and is ready when the manifest's gRPC probe (a grpc.health.v1 Check of its service, in plaintext on
the health port) says SERVING. As in the manifest, gRPC and /metrics are TLS and calls need a
bearer token: the cluster makes a CA, a certificate naming the hosts and the Services' DNS names
(conftest.make_pki), and a token file, which stand in for the mounted Secrets; clients connect with
:attr:`Cluster.client` (the CA, the token, the headless Service's name as the TLS name).
Each replica incarnation gets its own tables directory, as a pod's emptyDir that the init container
fills. Clients reach all of them through one target, ``ipv4:127.0.0.2:P,127.0.0.3:P,127.0.0.4:P``.

Load comes from a few spawned client processes, each bounded in calls and seconds and paced to a
fixed rate; each reports its calls, its failures and the table versions it saw, in order.
Every replica's calls are counted from its own /metrics. Traffic goes to 127.0.0.x only.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from waiting import wait_until

REPO = Path(__file__).resolve().parent.parent
DEPLOYMENT = REPO / "deploy" / "k8s" / "deployment.yaml"
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
CONTAINER = "embserve"
TABLE = "demo"
ROWS, DIM = 500, 16
PLAINTEXT_DROPS = ("--tls-cert", "--tls-key", "--auth-token-file")  # Cluster(secure=False)
SERVICE_NAME = "embserve-headless.embserve.svc"  # what clients in the cluster verify (certificate.yaml)
TOKEN = "loopback-read-token-0123456789"
READY_TIMEOUT = 90.0  # seconds for a replica to say SERVING (imports + load on a busy 2-core box)
PROBE_TIMEOUT = 1.0


# --- the manifest ---------------------------------------------------------------------------------

def deployment() -> dict[str, Any]:
    with open(DEPLOYMENT, encoding="utf-8") as f:
        return yaml.safe_load(f)  # type: ignore[no-any-return]


def container(name: str = CONTAINER) -> dict[str, Any]:
    """The named container of the Deployment's pod template."""
    spec = deployment()["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == name)


def argv_flags(argv: Sequence[str]) -> dict[str, str]:
    """{"--flag": value} of an argv of `--flag value` pairs and bare `--switch`es (value "")."""
    flags: dict[str, str] = {}
    args = list(argv[1:])
    i = 0
    while i < len(args):
        if not args[i].startswith("--"):
            raise ValueError(f"{argv}: {args[i]!r} is not a --flag")
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            flags[args[i]], i = args[i + 1], i + 2
        else:
            flags[args[i]], i = "", i + 1
    return flags


def server_argv(local: dict[str, str], drop: Sequence[str] = ()) -> list[str]:
    """The manifest's server command with the flags in ``local`` replaced (paths, addresses), those in ``drop`` left out."""
    command = container()["command"]
    program = Path(sys.executable).parent / command[0]
    argv = [str(program) if program.exists() else command[0]]
    for flag, value in argv_flags(command).items():
        if flag in drop:
            continue
        value = local.get(flag, value)
        argv += [flag, value] if value else [flag]
    return argv


def probe_service(kind: str = "readinessProbe") -> tuple[int, str]:
    """(port, service) of one of the manifest's native gRPC probes."""
    grpc_probe = container()[kind]["grpc"]
    return int(grpc_probe["port"]), str(grpc_probe.get("service", ""))


def container_port(name: str) -> int:
    """The container port named ``name`` in the manifest."""
    return next(int(p["containerPort"]) for p in container()["ports"] if p["name"] == name)


def probe(address: str, service: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """What the kubelet's gRPC probe does: one plaintext grpc.health.v1 Check; True when SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


# --- tables ---------------------------------------------------------------------------------------

def vectors_for(version: int) -> np.ndarray:
    """Rows of version ``version`` of the demo table: seeded, different per version."""
    rng = np.random.default_rng(version)
    return rng.normal(size=(ROWS, DIM)).astype(np.float32)


def keys() -> list[str]:
    return [f"w{i}" for i in range(ROWS)]


def publish(tables: Path, version: int) -> Path:
    """Publish version ``version`` of the demo table under ``tables`` (atomic, like a trainer)."""
    from embserve_trainer.export import export_table

    return export_table(tables, TABLE, vectors_for(version), keys(), source={"kind": "test", "seed": version},
                        seed=version, version=version)


def free_shared_port(hosts: Sequence[str] = HOSTS) -> int:
    """A port free on every host (the same port on each, like pods)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind((hosts[0], 0))
            port = int(s.getsockname()[1])
        try:
            for host in hosts[1:]:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {hosts}")


# --- replicas -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Secrets:
    """What the pods mount from the Secrets: the certificate (tls.crt, tls.key, ca.crt) and the tokens."""

    directory: Path

    @classmethod
    def make(cls, directory: Path, hosts: Sequence[str]) -> Secrets:
        pki = directory / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        names = ",".join([*(f"IP:{h}" for h in hosts), f"DNS:{SERVICE_NAME}"])
        from conftest import make_pki  # the tests' one PKI maker (openssl)

        make_pki(pki, server_names=names)
        tls = directory / "tls"
        tls.mkdir(exist_ok=True)
        for src, dst in (("server.pem", "tls.crt"), ("server.key", "tls.key"), ("ca.pem", "ca.crt")):
            (tls / dst).write_bytes((pki / src).read_bytes())
        (directory / "tokens").write_text(f"{TOKEN} read\n", encoding="utf-8")
        return cls(directory)

    @property
    def ca(self) -> Path:
        return self.directory / "tls" / "ca.crt"

    def local_flags(self) -> dict[str, str]:
        """The manifest's Secret paths, made local."""
        return {"--tls-cert": str(self.directory / "tls" / "tls.crt"), "--tls-key": str(self.directory / "tls" / "tls.key"),
                "--auth-token-file": str(self.directory / "tokens")}

    @property
    def client(self) -> dict[str, Any]:
        """Client keyword arguments of a client in the cluster: the CA, a read token, the Service's TLS name."""
        return {"root_certificates": self.ca.read_bytes(), "token": TOKEN,
                "options": [("grpc.ssl_target_name_override", SERVICE_NAME)]}


@dataclass
class Replica:
    """One embserve-server "pod": a loopback host, the shared gRPC and health ports, its own metrics port."""

    host: str
    port: int
    metrics_port: int
    workdir: Path
    secrets: Secrets | None  # None: plaintext and no tokens (bench/bench_cluster.py's capacity part)
    health_port: int
    process: subprocess.Popen[bytes] | None = None
    incarnation: int = 0
    logs: list[Path] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def tables(self) -> Path:
        return self.workdir / f"tables-{self.incarnation}"

    def start(self, versions: Sequence[int], *, tables: Path | None = None, table: str = TABLE) -> None:
        """A new incarnation whose tables (an emptyDir filled by the init container) hold ``versions``
        of the demo table, or serving an existing tables root ``tables`` (default table ``table``)."""
        self.incarnation += 1
        self.workdir.mkdir(parents=True, exist_ok=True)
        if tables is None:
            tables = self.tables()
            for version in versions:
                publish(tables, version)
        local = {"--tables": str(tables), "--address": self.address, "--health-address": f"{self.host}:{self.health_port}",
                 "--metrics-address": f"{self.host}:{self.metrics_port}", "--default-table": table}
        if self.secrets is None:
            argv = server_argv(local, drop=PLAINTEXT_DROPS)
        else:
            argv = server_argv({**local, **self.secrets.local_flags()})
        log = self.workdir / f"server-{self.incarnation}.log"
        self.logs.append(log)
        with open(log, "wb") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> float:
        """Poll the manifest's readiness probe until SERVING; returns the seconds it took."""
        port, service = probe_service("readinessProbe")
        assert port == container_port("health")  # the probe asks the plaintext health port
        assert self.process is not None, f"replica {self.host} was never started"
        t0 = time.monotonic()
        wait_until(f"replica {self.host} SERVING", lambda: probe(f"{self.host}:{self.health_port}", service), timeout, poll=0.1,
                   proc=self.process, detail=self.log_tail)
        return time.monotonic() - t0

    def kill(self) -> None:
        """SIGKILL, as a node or OOM kill: no drain."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, as the kubelet: the server drains (NOT_SERVING, in-flight calls finish)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise RuntimeError(f"replica {self.host} did not drain in {timeout}s:\n{self.log_tail()}") from None
        return int(self.process.returncode)

    def lookups(self) -> float:
        """OK Lookup calls this incarnation answered, from its own /metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.metrics_url, timeout=5, context=self.metrics_tls) as response:
            text = response.read().decode("utf-8")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "embserve_requests_total" and sample.labels == {"method": "Lookup", "code": "OK"}:
                    return float(sample.value)
        return 0.0

    @property
    def metrics_url(self) -> str:
        return f"{'http' if self.secrets is None else 'https'}://{self.host}:{self.metrics_port}/metrics"

    @property
    def metrics_tls(self) -> ssl.SSLContext | None:
        """What Prometheus checks the metrics port with (podmonitor.yaml): the Secret's CA."""
        return None if self.secrets is None else ssl.create_default_context(cafile=self.secrets.ca)

    @property
    def client(self) -> dict[str, Any]:
        """Keyword arguments for a Client of this replica (TLS, token)."""
        return {} if self.secrets is None else self.secrets.client

    def log_tail(self) -> str:
        return "".join(p.read_text(errors="replace")[-2000:] for p in self.logs[-1:])


class Cluster:
    """Three replicas on 127.0.0.2-4 sharing one port; ``target`` names them all."""

    def __init__(self, workdir: Path, hosts: Sequence[str] = HOSTS, *, secure: bool = True) -> None:
        port = free_shared_port(hosts)
        health_port = port
        while health_port == port:
            health_port = free_shared_port(hosts)
        self.secrets = Secrets.make(workdir / "secrets", hosts) if secure else None
        self.replicas = []
        for host in hosts:
            metrics_port = port
            while metrics_port in (port, health_port):
                with socket.socket() as s:
                    s.bind((host, 0))
                    metrics_port = int(s.getsockname()[1])
            self.replicas.append(Replica(host, port, metrics_port, workdir / host, self.secrets, health_port))

    @property
    def client(self) -> dict[str, Any]:
        """Keyword arguments for a Client of this cluster (TLS, token)."""
        return {} if self.secrets is None else self.secrets.client

    @property
    def target(self) -> str:
        return "ipv4:" + ",".join(r.address for r in self.replicas)

    def start(self, versions: Sequence[int] = (1,)) -> None:
        for r in self.replicas:
            r.start(versions)
        for r in self.replicas:
            r.wait_ready()

    def lookups(self) -> list[float]:
        return [r.lookups() for r in self.replicas]

    def stop(self) -> None:
        for r in self.replicas:
            with contextlib.suppress(Exception):
                if r.process is not None and r.process.poll() is None:
                    r.process.send_signal(signal.SIGTERM)
        for r in self.replicas:
            if r.process is not None:
                try:
                    r.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    r.process.kill()
                    r.process.wait()


@contextlib.contextmanager
def cluster(workdir: Path, versions: Sequence[int] = (1,)) -> Iterator[Cluster]:
    c = Cluster(workdir)
    try:
        c.start(versions)
        yield c
    finally:
        c.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# --- load -----------------------------------------------------------------------------------------

@dataclass
class LoadReport:
    """What one client process did: calls, failures (first few messages), versions in the order seen."""

    calls: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)  # run-length compressed: [1, 2] = 1s then 2s
    went_back: int = 0  # answers older than one already seen
    monotonic: bool = False  # this client used monotonic_reads


def _load_main(target: str, client_options: dict[str, Any], monotonic: bool, rate: float, max_calls: int, max_seconds: float,
               stop: Any, out: Any) -> None:
    """One client process: paced single-key lookups until ``stop``, ``max_calls`` or ``max_seconds``."""
    from embserve_client import Client, EmbserveError

    report = LoadReport(monotonic=monotonic)
    names = keys()
    rng = np.random.default_rng()
    highest = 0
    with Client(target, monotonic_reads=monotonic, **client_options) as client:
        t0 = time.monotonic()
        while not stop.is_set() and report.calls < max_calls and time.monotonic() - t0 < max_seconds:
            report.calls += 1
            try:
                version = client.lookup([names[int(rng.integers(len(names)))]], table=TABLE).version
            except EmbserveError as exc:
                report.failed += 1
                if len(report.errors) < 5:
                    report.errors.append(str(exc))
            else:
                if not report.versions or report.versions[-1] != version:
                    report.versions.append(version)
                report.went_back += version < highest
                highest = max(highest, version)
            pause = t0 + report.calls / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    out.put(report.__dict__)


class Load:
    """``clients`` spawned client processes with one target; ``monotonic``: those using monotonic_reads;
    ``client``: their other Client arguments (:attr:`Cluster.client`: TLS and token).

    Use as a context manager; ``reports`` holds one :class:`LoadReport` per process after exit.
    """

    def __init__(self, target: str, *, client: dict[str, Any] | None = None, clients: int = 3, monotonic: int = 0,
                 rate: float = 100.0, max_calls: int = 100_000, max_seconds: float = 300.0) -> None:
        ctx = mp.get_context("spawn")
        self._stop = ctx.Event()
        self._out = ctx.Queue()
        self._procs = [
            ctx.Process(target=_load_main, args=(target, client or {}, n < monotonic, rate, max_calls, max_seconds, self._stop, self._out), daemon=True)
            for n in range(clients)
        ]
        self.monotonic = monotonic
        self.max_seconds = max_seconds
        self.reports: list[LoadReport] = []

    def __enter__(self) -> Load:
        for p in self._procs:
            p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for _ in self._procs:
            self.reports.append(LoadReport(**self._out.get(timeout=self.max_seconds + 60)))
        for p in self._procs:
            p.join(timeout=30)

    @property
    def monotonic_reports(self) -> list[LoadReport]:
        return [r for r in self.reports if r.monotonic]


class VersionWatcher:
    """Per replica, the table versions its own answers carry, in order (a direct client to it).

    Calls that fail while the replica restarts are not recorded: this is an observer, not load.
    """

    def __init__(self, replicas: Sequence[Replica], max_seconds: float = 300.0) -> None:
        self.replicas = replicas
        self.seen: dict[str, list[int]] = {r.host: [] for r in replicas}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._watch, args=(r, max_seconds), daemon=True) for r in replicas]

    def _watch(self, replica: Replica, max_seconds: float) -> None:
        from embserve_client import Client, EmbserveError

        seen = self.seen[replica.host]
        # A short reconnect backoff: the replica comes back within seconds after a restart.
        options = [("grpc.max_reconnect_backoff_ms", 500), ("grpc.initial_reconnect_backoff_ms", 100)]
        credentials = dict(replica.client)
        options += credentials.pop("options", [])
        with Client(replica.address, load_balancing="pick_first", timeout=2.0, options=options, **credentials) as client:
            t0 = time.monotonic()
            while not self._stop.is_set() and time.monotonic() - t0 < max_seconds:
                try:
                    version = client.lookup(["w0"], table=TABLE).version
                except EmbserveError:
                    pass
                else:
                    if not seen or seen[-1] != version:
                        seen.append(version)
                self._stop.wait(0.05)

    def __enter__(self) -> VersionWatcher:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

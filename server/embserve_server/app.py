"""Building and running the gRPC server: ``create_server`` (wiring, no I/O) apart from ``serve``."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from types import FrameType

import faiss
import grpc
from embserve_client.pb import embserve_pb2 as pb
from embserve_index import CORES
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, disable_created_metrics

from embserve_server.admission import Admission, admission_for, hard_limit, rpc_executor
from embserve_server.auth import TokenCheck, token_check
from embserve_server.call_guard import CallGuard
from embserve_server.call_log import CallLog
from embserve_server.config import ServerConfig
from embserve_server.health_watch import HealthServicer
from embserve_server.interceptors import interceptors
from embserve_server.memory import MemoryBudget
from embserve_server.metrics import MetricsWrapper, ServerMetrics
from embserve_server.registry import TableRegistry
from embserve_server.rotation import Rotation
from embserve_server.service import AdminService, EmbeddingService
from embserve_server.tls import ServerTls, add_port, check_http_exposure, server_tls
from embserve_server.wrappers import add_servicer

logger = logging.getLogger(__name__)

EMBEDDING_SERVICE = pb.DESCRIPTOR.services_by_name["EmbeddingService"]
ADMIN_SERVICE = pb.DESCRIPTOR.services_by_name["AdminService"]
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"]
SERVICE_NAMES = (EMBEDDING_SERVICE.full_name, ADMIN_SERVICE.full_name)
FLUSH_SECONDS = 1.0  # the serving loop adds recorded calls to the metrics at least this often (metrics.py)
METHODS = tuple(m.name for s in pb.DESCRIPTOR.services_by_name.values() for m in s.methods)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def configure_faiss() -> None:
    """BLAS from micro-batches on: faiss 1.15 otherwise waits for nq * d >= 128000 (the per-call
    OpenMP thread count is set in index.VectorIndex.search)."""
    faiss.cvar.distance_compute_blas_threshold = 800 * CORES


@dataclass
class Server:
    """A running (or ready to start) embserve gRPC server and its parts."""

    grpc_server: grpc.Server
    port: int
    registry: TableRegistry
    health: health.HealthServicer
    metrics: ServerMetrics
    tokens: TokenCheck | None = None  # shared with the HTTP port: one token check, one refusal counter
    admission: Admission | None = None  # shared with the HTTP port's JSON API: one limit
    tls: ServerTls | None = None  # shared with the HTTP port: one certificate, rotated for both
    rotation: Rotation | None = None  # re-reads the TLS and token files; run_worker starts it
    health_server: grpc.Server | None = None  # --health-address: plaintext grpc.health.v1 only
    health_port: int = 0

    def start(self) -> None:
        """Start serving (the health-only port too)."""
        self.grpc_server.start()
        if self.health_server is not None:
            self.health_server.start()

    def set_serving(self, serving: bool) -> None:
        status = SERVING if serving else NOT_SERVING
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, status)

    def drain(self, grace: float) -> None:
        """Health to NOT_SERVING, refuse new calls, let in-flight ones finish within ``grace`` s."""
        self.set_serving(False)
        self.health.enter_graceful_shutdown()  # later set() calls cannot flip it back
        self.grpc_server.stop(grace).wait()
        if self.health_server is not None:
            self.health_server.stop(0).wait()  # probes saw NOT_SERVING for the whole drain


def grpc_options(config: ServerConfig) -> list[tuple[str, int]]:
    size = config.limits.max_message_bytes
    options = [("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size), ("grpc.so_reuseport", 1)]
    if config.max_connection_age is not None:
        if config.max_connection_age <= 0:
            raise ValueError(f"--max-connection-age: {config.max_connection_age} must be a positive number of seconds")
        # After the age, GOAWAY: the client re-resolves and opens a new connection (to new replicas
        # too); calls in flight on the old one get the same grace as a drain.
        options += [
            ("grpc.max_connection_age_ms", int(config.max_connection_age * 1000)),
            ("grpc.max_connection_age_grace_ms", int(config.grace_period * 1000)),
        ]
    return options


def create_server(
    config: ServerConfig,
    registry: TableRegistry,
    *,
    metrics: ServerMetrics | None = None,
) -> Server:
    """Wire servicers, health, reflection and metrics into a gRPC server bound to ``config.address``.

    Returns:
        The :class:`Server`, not started; ``port`` is the bound port (useful with port 0).

    Raises:
        RuntimeError: the address cannot be bound.
    """
    metrics = metrics or ServerMetrics(CollectorRegistry(), METHODS)
    tokens = token_check(config.auth_token_file, metrics.rejected)
    tls = server_tls(config)  # TLS when --tls-cert/--tls-key are set
    rotation = Rotation(tls=tls, tokens=tokens, token_file=config.auth_token_file if tokens is not None else None,
                        reloads=metrics.credential_reloads)
    admission = admission_for(config, metrics.rejected)
    calls, timed = CallLog(every_call=config.log_calls, rate=config.log_rate), MetricsWrapper(metrics)
    wrappers = [calls, timed, CallGuard(config.limits.max_message_bytes)]  # outermost first

    def counted(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return calls.refusal(method, timed.refusal(method, handler))

    server = grpc.server(
        rpc_executor(config, admission),
        interceptors=interceptors(tokens, admission, counted=counted),
        options=grpc_options(config),
        maximum_concurrent_rpcs=hard_limit(config),
    )
    add_servicer(server, EMBEDDING_SERVICE, EmbeddingService(registry, config.limits), wrappers)
    add_servicer(server, ADMIN_SERVICE, AdminService(registry), wrappers)
    health_servicer = HealthServicer()
    add_servicer(server, HEALTH_SERVICE, health_servicer, wrappers)
    if config.reflection:
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, HEALTH_SERVICE.full_name, reflection.SERVICE_NAME), server
        )
    port = add_port(server, config, tls)
    if port == 0:
        raise RuntimeError(f"cannot bind {config.address}")
    health_server, health_port = health_only_server(config, health_servicer)
    result = Server(server, port, registry, health_servicer, metrics, tokens, admission, tls, rotation, health_server, health_port)
    result.set_serving(False)
    return result


def health_only_server(config: ServerConfig, servicer: health.HealthServicer) -> tuple[grpc.Server | None, int]:
    """The plaintext port of ``--health-address`` serving only grpc.health.v1 (``servicer``, shared with
    the main port), for probes that cannot speak TLS (Kubernetes' native gRPC probes); (None, 0) when off.

    It carries no table data and no tokens: only SERVING / NOT_SERVING.

    Raises:
        RuntimeError: the address cannot be bound.
    """
    if not config.health_address:
        return None, 0
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="embserve-health"),
                         options=[("grpc.so_reuseport", 1)], maximum_concurrent_rpcs=64)
    add_servicer(server, HEALTH_SERVICE, servicer, [])  # no wrappers: probes are not calls to count or log
    port = server.add_insecure_port(config.health_address)
    if port == 0:
        raise RuntimeError(f"--health-address {config.health_address}: cannot bind")
    return server, port


def serve(config: ServerConfig, *, stop: threading.Event | None = None) -> int:
    """Run the server until SIGTERM/SIGINT (or ``stop``), then drain gracefully. Returns 0.

    With ``config.workers > 1`` the process forks that many workers sharing one port.
    """
    if config.explorer and (not config.metrics_address or config.workers > 1):
        raise ValueError("--explorer: needs --metrics-address (it shares that HTTP port) and a single worker")
    if config.metrics_auth and (not config.metrics_address or config.auth_token_file is None):
        raise ValueError("--metrics-auth: needs --metrics-address and --auth-token-file (the tokens /metrics accepts)")
    check_http_exposure(config)  # no bearer tokens over plaintext HTTP beyond loopback
    if config.workers > 1:
        from embserve_server.workers import serve_workers

        return serve_workers(config)
    return run_worker(config, stop=stop)


def table_registry(config: ServerConfig) -> TableRegistry:
    return TableRegistry(
        config.tables_dir,
        default_table=config.default_table,
        pinned=dict(config.pinned),
        keep_versions=config.keep_versions,
        mmap=config.mmap,
        verify_checksums=config.verify_checksums,
        budget=MemoryBudget(config.memory_limit),
    )


def run_worker(
    config: ServerConfig, *, stop: threading.Event | None = None, worker: int | None = None, registry: TableRegistry | None = None
) -> int:
    """One serving process: load tables, serve gRPC (and /metrics unless a parent does).

    ``registry``: tables a parent process loaded before forking (shared copy-on-write).
    """
    configure_faiss()
    disable_created_metrics()
    prom = CollectorRegistry()
    metrics = ServerMetrics(prom, METHODS)
    if registry is None:
        registry = table_registry(config)
    registry.on_change = metrics.table_changed
    metrics.memory_limit.set(registry.budget.limit or 0)
    if registry.budget.limit is not None:
        logger.info("memory limit %.1f MiB: table versions that would pass it are not loaded", registry.budget.limit / 2**20)
    for table in registry.all():
        metrics.publish_table(table)
    server = create_server(config, registry, metrics=metrics)
    http = None
    if config.metrics_address and worker is None:
        from embserve_server.http_port import start_http_port
        from embserve_server.openai_api import OpenAIApi

        explorer = None
        if config.explorer:
            from embserve_server.explorer import Explorer

            explorer = Explorer(registry, config.limits)
        openai = OpenAIApi(registry, config.limits, observe=metrics.observe_http) if config.openai_api else None
        http = start_http_port(config, prom, explorer=explorer, tokens=server.tokens, admission=server.admission, openai=openai,
                               tls=server.tls)
    server.start()
    if server.rotation is not None:
        server.rotation.start(config.rotation_interval)
    host = config.address.rsplit(":", 1)[0]
    who = "" if worker is None else f"worker {worker} (pid {os.getpid()}) "
    logger.info("%slistening on %s:%d", who, host, server.port)
    if server.health_server is not None and config.health_address:
        logger.info("%shealth checks (plaintext, grpc.health.v1 only) on %s:%d", who, config.health_address.rsplit(":", 1)[0], server.health_port)

    stop = stop or threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("%sreceived %s: draining", who, signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    registry.reload()
    if len(registry):
        server.set_serving(True)
        logger.info("%sserving %s", who, ", ".join(f"{t.name} v{t.version}" for t in registry.all()))
    else:
        logger.error("no valid table under %s: answering UNAVAILABLE until one appears", config.tables_dir)
    tick = min(config.poll_interval, FLUSH_SECONDS) if config.poll_interval > 0 else FLUSH_SECONDS
    next_poll = time.monotonic() + config.poll_interval
    while not stop.wait(tick):
        metrics.flush()  # the calls since the last pass (a worker's parent reads its metrics from files)
        if config.poll_interval > 0 and time.monotonic() >= next_poll:
            next_poll = time.monotonic() + config.poll_interval
            registry.reload()
            if len(registry):
                server.set_serving(True)
    if server.rotation is not None:
        server.rotation.stop()
    server.drain(config.grace_period)
    metrics.flush()
    if http is not None:
        http.close()
    logger.info("%sstopped", who)
    return 0

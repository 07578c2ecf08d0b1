"""``--workers N``: N serving processes on one port (the grpc multiprocessing pattern).

Python serves more than one core only with processes. The parent forks every worker before any
gRPC object exists (gRPC's threads do not survive fork), each worker binds the same port with
SO_REUSEPORT and serves the tables the parent loaded before forking (shared copy-on-write; the files
are memory-mapped; later reloads happen in each worker), and the parent serves one ``/metrics``
aggregating all workers through prometheus-client's multiprocess mode.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import socket
from dataclasses import replace
from pathlib import Path
from types import FrameType

from embserve_server.config import ServerConfig
from embserve_server.http_port import split_address

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def reserve_port(address: str) -> tuple[socket.socket, str]:
    """Pick the port once (port 0 allowed) with SO_REUSEPORT so every worker binds the same one."""
    host, port = split_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    return sock, f"{shown}:{bound}"


# <sys/prctl.h>: deliver a signal to this process when the thread that forked it dies.
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """In a freshly forked worker: get SIGTERM (a graceful drain) when the parent process dies.

    Without this, a parent killed by SIGKILL (the OOM killer, a supervisor without cgroups) leaves
    its workers serving on the SO_REUSEPORT port, so a restarted server shares the port with orphans
    answering from whatever they loaded.

    Args:
        parent: the pid of the parent, read before ``fork()``.

    Raises:
        OSError: prctl failed (not Linux).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    # The parent may have died between fork() and prctl(): then no signal will ever come.
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def _clear(directory: Path) -> None:
    for f in directory.glob("*.db"):
        f.unlink(missing_ok=True)


def serve_workers(config: ServerConfig) -> int:
    """Fork ``config.workers`` serving processes, aggregate their metrics, forward signals.

    Returns 0 when every worker exited cleanly, 1 otherwise.

    Raises:
        RuntimeError: ``PROMETHEUS_MULTIPROC_DIR`` was not set before prometheus_client was
            imported (the CLI sets it).
    """
    mp_dir = os.environ.get(MULTIPROC_ENV)
    if not mp_dir:
        raise RuntimeError(f"--workers needs {MULTIPROC_ENV} set before start-up (embserve-server sets it)")
    _clear(Path(mp_dir))
    from embserve_server.app import configure_faiss, table_registry

    # Load every table once, here, before forking: the workers share the key indexes and
    # index structures copy-on-write instead of building one copy each. gc.freeze() keeps the
    # workers' garbage collector from writing to (and so copying) every one of those objects.
    configure_faiss()
    registry = table_registry(config)
    registry.reload()
    gc.freeze()
    reservation, address = reserve_port(config.address)
    worker_config = replace(config, address=address, workers=1)
    children: dict[int, int] = {}
    parent = os.getpid()
    for n in range(config.workers):
        pid = os.fork()
        if pid == 0:  # child: nothing gRPC exists yet in this process
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                die_with_parent(parent)
                from embserve_server.app import run_worker

                code = run_worker(worker_config, worker=n, registry=registry)
            except BaseException:  # noqa: BLE001 - a worker must never return into the parent's code
                logger.exception("worker %d failed", n)
            finally:
                os._exit(code)
        children[pid] = n
    reservation.close()
    logger.info("listening on %s with %d workers (pids %s)", address, config.workers, ", ".join(map(str, children)))

    if config.metrics_address:
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        from embserve_server.auth import token_check
        from embserve_server.http_port import start_http_port
        from embserve_server.metrics import ServerMetrics
        from embserve_server.rotation import Rotation
        from embserve_server.tls import server_tls

        aggregate = CollectorRegistry()
        MultiProcessCollector(aggregate, path=mp_dir)
        # The parent's own refusals (/metrics with --metrics-auth) and credential reloads land in
        # the multiprocess files too; its HTTP port rotates its certificate and tokens like a worker.
        own = ServerMetrics(CollectorRegistry())
        tokens, tls = token_check(config.auth_token_file, own.rejected), server_tls(config)
        rotation = Rotation(tls=tls, tokens=tokens, token_file=config.auth_token_file if tokens is not None else None,
                            reloads=own.credential_reloads)
        start_http_port(config, aggregate, tokens=tokens, tls=tls)
        rotation.start(config.rotation_interval)

    def forward(signum: int, frame: FrameType | None) -> None:
        logger.info("received %s: stopping %d workers", signal.Signals(signum).name, len(children))
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    from prometheus_client import multiprocess

    failed = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        n = children.pop(pid, -1)
        if n < 0:
            continue  # not one of ours
        multiprocess.mark_process_dead(pid, mp_dir)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            failed += 1
            logger.error("worker %d (pid %d) exited with %d; stopping the others", n, pid, code)
            forward(signal.SIGTERM, None)
    _clear(Path(mp_dir))
    return 1 if failed else 0

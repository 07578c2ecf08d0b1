"""Shared fixtures: seeded tables built in tmp_path and real servers on 127.0.0.1:0."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import numpy as np
import pytest
from embserve_client import Client
from embserve_server.app import METHODS, Server, configure_faiss, create_server
from embserve_server.config import Limits, ServerConfig
from embserve_server.metrics import ServerMetrics
from embserve_server.registry import TableRegistry
from embserve_trainer.export import export_table
from ports import free_port  # noqa: F401  (re-exported for the tests)
from prometheus_client import CollectorRegistry

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

configure_faiss()

# Set by .ci/run: in CI a test that needs a tool or package must fail when it is missing, never skip.
REQUIRE_TOOLS_ENV = "EMBSERVE_REQUIRE_TOOLS"


def _missing(what: str) -> NoReturn:
    """Skip the calling test locally; fail it where ``EMBSERVE_REQUIRE_TOOLS=1`` (CI)."""
    if os.environ.get(REQUIRE_TOOLS_ENV) == "1":
        pytest.fail(f"{what} ({REQUIRE_TOOLS_ENV}=1: CI installs everything, so a missing tool is a failure)", pytrace=False)
    pytest.skip(what, allow_module_level=True)  # also valid at module level (a whole file needs the tool)


def require_tool(name: str, how: str = "scripts/system-deps.sh installs it") -> str:
    """Path of the executable ``name`` on PATH; skip the test without it (fail under CI's flag)."""
    path = shutil.which(name)
    if path is None:
        _missing(f"{name} is not installed ({how})")
    return path


def require_module(name: str, how: str = "make install installs it") -> ModuleType:
    """Import ``name``; skip the test without it (fail under CI's flag)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        _missing(f"Python package {name} is not installed ({how})")


def seeded_table(n: int = 2000, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """A clustered random table: keys 'w0'..; rows in 20 clusters so neighbours are meaningful."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(20, dim)).astype(np.float32)
    vectors = centers[rng.integers(0, 20, size=n)] + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)
    return vectors.astype(np.float32), [f"w{i}" for i in range(n)]


def make_table(tables: Path, name: str = "t", n: int = 2000, dim: int = 16, seed: int = 0, **kwargs: object) -> Path:
    vectors, keys = seeded_table(n, dim, seed)
    return export_table(tables, name, vectors, keys, source={"kind": "test", "seed": seed}, seed=seed, **kwargs)  # type: ignore[arg-type]


@contextlib.contextmanager
def running_server(tables: Path, *, limits: Limits | None = None, **config: object) -> Iterator[Server]:
    """A real gRPC server on 127.0.0.1:<free port>, tables loaded, SERVING."""
    cfg = ServerConfig(tables_dir=tables, address="127.0.0.1:0", **config)  # type: ignore[arg-type]
    if limits is not None:
        cfg = replace(cfg, limits=limits)
    metrics = ServerMetrics(CollectorRegistry(), METHODS)
    registry = TableRegistry(
        tables, default_table=cfg.default_table, pinned=dict(cfg.pinned), keep_versions=cfg.keep_versions, on_change=metrics.table_changed
    )
    server = create_server(cfg, registry, metrics=metrics)
    server.grpc_server.start()
    registry.reload()
    server.set_serving(True)
    try:
        yield server
    finally:
        server.grpc_server.stop(0).wait()


@pytest.fixture
def tables(tmp_path: Path) -> Path:
    path = tmp_path / "tables"
    make_table(path)
    return path


@pytest.fixture
def server(tables: Path) -> Iterator[Server]:
    with running_server(tables) as s:
        yield s


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(f"127.0.0.1:{server.port}") as c:
        yield c




def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float = 60.0) -> str:
    """Read the process' combined output until a line contains ``needle``; return that line."""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), True)
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line)
        if needle in line:
            return line
    raise AssertionError(f"{needle!r} not seen; output was:\n{''.join(lines)}")

"""Shared fixtures and helpers: seeded tables built in tmp_path, real servers on 127.0.0.1:0, test PKI.

Where a test file goes (by what it needs to run, so a quick `pytest tests/pure` needs nothing):

- ``tests/pure/``: no server, no subprocess, no socket, no external tool (formats, maths, the
  query core called in-process, the trainer on a tiny corpus).
- ``tests/processes/``: real gRPC/HTTP servers (in-process on 127.0.0.1:0, or ``embserve-server``
  as a subprocess), other subprocesses (CLIs, ``make``, trainers), signals, load.
- ``tests/browser_deploy/``: Chromium, Prometheus, docker-compose, checkov, the Kubernetes
  manifests and the loopback cluster that runs them.

A file that fits several goes to the heaviest. Helpers shared by several files live here or in the
stdlib-only modules beside this file (``waiting`` for every wait, ``ports``, ``loopback``,
``prometheus_helper``), never in a test file that a test file of another folder imports. Every wait goes through
``waiting.wait_until`` / ``waiting.wait_for_line``; every test has pytest-timeout's limit
(pyproject.toml; ``@pytest.mark.timeout(s)`` to raise it).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

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


@contextlib.contextmanager
def http_site(tables: Path, *, explorer: bool = True, openai: bool = False, **config: Any) -> Iterator[tuple[Server, str]]:
    """A gRPC server and its HTTP port, wired as ``run_worker`` wires them: the explorer and/or the
    OpenAI API on it, the gRPC port's tokens, admission and TLS. Yields (server, base URL)."""
    from embserve_server.explorer import Explorer
    from embserve_server.http_port import start_http_port
    from embserve_server.openai_api import OpenAIApi

    with running_server(tables, **config) as server:
        cfg = ServerConfig(tables_dir=tables, metrics_address="127.0.0.1:0", explorer=explorer, **config)
        port = start_http_port(
            cfg, server.metrics.registry, explorer=Explorer(server.registry, cfg.limits) if explorer else None,
            openai=OpenAIApi(server.registry, cfg.limits, observe=server.metrics.observe_http) if openai else None,
            tokens=server.tokens, admission=server.admission, tls=server.tls,
        )
        try:
            scheme = "https" if cfg.tls_cert is not None else "http"
            yield server, f"{scheme}://127.0.0.1:{port.port}"
        finally:
            port.close()


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


# --- shared test data: planted corpora and tables -------------------------------------------------

SMALL = dict(dim=16, window=3, min_count=2, epochs=10, workers=1, seed=7)


def planted_corpus(path: Path, n: int = 1500, seed: int = 0) -> Path:
    """Sentences where cat/kitten and car/truck are interchangeable, and the two groups never mix."""
    rng = np.random.default_rng(seed)
    animals, vehicles = ["cat", "kitten"], ["car", "truck"]
    pet_ctx = ["the {} purrs softly on the warm sofa", "a small {} drinks milk from the bowl",
               "my {} chased the mouse under the bed", "the fluffy {} sleeps in the sun"]
    road_ctx = ["the {} drives fast on the highway", "a red {} needs fuel at the station",
                "my {} has four wheels and an engine", "the heavy {} parked near the garage"]
    lines = []
    for _ in range(n):
        if rng.random() < 0.5:
            lines.append(pet_ctx[rng.integers(4)].format(animals[rng.integers(2)]))
        else:
            lines.append(road_ctx[rng.integers(4)].format(vehicles[rng.integers(2)]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


PLANTED = ["cat", "dog", "kitten", "man", "woman", "king", "queen"]


def make_planted_table(tables: Path, *, n: int = 2000, dim: int = 16, name: str = "t", extras: dict[str, Any] | None = None) -> Path:
    """A seeded clustered table with a few words planted where a reader expects them:
    "dog" and "kitten" right next to "cat", and king - man + woman = queen exactly."""
    vectors, keys = seeded_table(n, dim, seed=11)
    rng = np.random.default_rng(12)
    keys[: len(PLANTED)] = PLANTED
    cat = vectors[0]
    for row, distance in ((1, 0.3), (2, 0.4)):  # dog: cosine 1/sqrt(1 + 0.3^2) = 0.958; kitten: 0.928
        step = rng.normal(size=dim)
        step -= (step @ cat) / (cat @ cat) * cat  # orthogonal to cat: the cosine is exact
        vectors[row] = cat + distance * np.linalg.norm(cat) * step / np.linalg.norm(step)
    man, gender, royal = (3.0 * rng.normal(size=dim) for _ in range(3))
    vectors[3], vectors[4], vectors[5], vectors[6] = man, man + gender, man + royal, man + gender + royal
    return export_table(tables, name, vectors.astype(np.float32), keys, source={"kind": "test", "seed": 11}, seed=11, extras=extras)


# --- security: tokens, certificates, refusals (test_security.py, test_http_security.py, browser) -----

READ, ADMIN = "r3ad-token-0123456789", "adm1n-token-0123456789"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(d: Path, server_names: str = "IP:127.0.0.1,DNS:localhost") -> Path:
    """In ``d``: a test CA (ca.pem/key), server.pem/key for ``server_names`` (subjectAltName entries)
    signed by it, a client.pem/key for mutual TLS, and an unrelated self-signed other.pem/key. Returns ``d``."""
    for name, subject, ext in (
        ("server", "/CN=embserve-test-server", f"subjectAltName={server_names}"),
        ("client", "/CN=embserve-test-client", "extendedKeyUsage=clientAuth"),
    ):
        if not (d / "ca.pem").exists():
            openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
                    "-days", "2", "-subj", "/CN=embserve-test-ca", cwd=d)
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    # A second, unrelated CA: its clients must not get in.
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other.pem",
            "-days", "2", "-subj", "/CN=someone-else", cwd=d)
    return d


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test CA, server and client certificates (make_pki), made once per run."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "tokens"
    path.write_text(f"# embserve tokens\n{READ} read\n\n{ADMIN}   admin\n")
    return path


def rejected(server: Server, reason: str) -> float:
    return server.metrics.registry.get_sample_value("embserve_rejected_requests_total", {"reason": reason}) or 0.0

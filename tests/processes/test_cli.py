"""The command lines people use: embserve-server (subprocess on port 0) and embserve."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BIN
from embserve_client import Client, ClientClosedError
from waiting import lines_seen, wait_for_line


@pytest.fixture
def server_proc(tables: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [BIN / "embserve-server", "--tables", str(tables), "--address", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        line = wait_for_line(proc, "listening on")
        port = re.search(r"listening on 127\.0\.0\.1:(\d+)", line).group(1)  # type: ignore[union-attr]
        wait_for_line(proc, "serving t v1")
        yield proc, f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN / "embserve", *args], capture_output=True, text=True, timeout=60)


def test_similar_vector_tables_health(server_proc: tuple[subprocess.Popen[str], str]) -> None:
    _, target = server_proc
    with Client(target) as c:
        expected = [n.key for n in c.most_similar("w1", topn=3)]
    out = run("similar", "w1", "-n", "3", "--target", target)
    assert out.returncode == 0, out.stderr
    assert "nearest to w1:" in out.stdout
    assert [line.split()[1] for line in out.stdout.splitlines()[1:]] == expected
    out = run("vector", "w1", "--target", target)
    assert out.returncode == 0 and "w1 (t v1)" in out.stdout
    out = run("tables", "--target", target)
    assert re.search(r"^t\s+1\s+2000\s+16\s+cosine\s+Flat", out.stdout, re.M), out.stdout
    out = run("health", "--target", target)
    assert (out.returncode, out.stdout.strip()) == (0, f"{target}: SERVING")


def test_errors_are_readable(server_proc: tuple[subprocess.Popen[str], str]) -> None:
    _, target = server_proc
    out = run("similar", "no-such-key", "--target", target)
    assert out.returncode == 2
    assert "NOT_FOUND: Key 'no-such-key' not present in table 't'" in out.stderr


def test_health_fails_without_server() -> None:
    from conftest import free_port

    out = run("health", "--target", f"127.0.0.1:{free_port()}", "--timeout", "1")
    assert out.returncode == 1 and "UNAVAILABLE" in out.stdout


def test_sigterm_exits_zero(server_proc: tuple[subprocess.Popen[str], str]) -> None:
    proc, _ = server_proc
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_closed_client_refuses_reuse(client: Client) -> None:
    client.get_vector("w1")
    client.close()
    with pytest.raises(ClientClosedError):
        client.get_vector("w1")


@pytest.mark.parametrize(("level", "shown"), [("INFO", False), ("DEBUG", True)])
def test_faiss_loader_lines_only_at_debug(tables: Path, level: str, shown: bool) -> None:
    """faiss' loader reports each CPU build it tries ("ModuleNotFoundError" for the missing ones): not at INFO."""
    proc = subprocess.Popen(
        [BIN / "embserve-server", "--tables", str(tables), "--address", "127.0.0.1:0", "--log-level", level],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_for_line(proc, "serving t v1")
        loader = [line for line in lines_seen(proc) if "faiss.loader" in line]
        assert bool(loader) == shown, "".join(lines_seen(proc))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)

"""Disk faults, each made on disk for real, against a real server that is serving version 1.

A broken version 2 appears in one rename (as a finished bundle would); the Reload RPC must refuse
it with a message naming the problem, log it, count it once in
``embserve_reloads_total{outcome="refused"}``, and keep answering from version 1. A good version 3
afterwards loads: a fault never wedges the registry.

"Unreadable" files: the tests run as root, where ``chmod 000`` does not stop reads, so a file is
made unreadable by putting a FIFO, a directory or a dangling symlink in its place (a FIFO would
block a naive ``open()`` forever; the loader must not even try).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import BIN, make_table, running_server, seeded_table
from embserve_client import Client
from embserve_client.errors import UnavailableError
from embserve_format.bundle import INDEX, KEYS, MANIFEST, VECTORS, list_versions, sha256_file
from embserve_index import build_index, prepare_rows, save_index
from embserve_server.app import Server
from embserve_server.tables import TableRegistry

N, DIM = 300, 8


def rehash(path: Path, *names: str) -> None:
    """Make the manifest's checksums agree with the (broken) files, so a later check must catch it."""
    manifest = json.loads((path / MANIFEST).read_text())
    for name in names:
        manifest["files"][name] = sha256_file(path / name)
    (path / MANIFEST).write_text(json.dumps(manifest))


def truncate(path: Path) -> None:
    with open(path / VECTORS, "r+b") as f:
        f.truncate(os.path.getsize(path / VECTORS) // 2)


def flip_byte(path: Path) -> None:
    data = bytearray((path / VECTORS).read_bytes())
    data[len(data) // 2] ^= 0x01
    (path / VECTORS).write_bytes(bytes(data))


def edit_keys(path: Path, change: Callable[[list[str]], list[str]]) -> None:
    keys = (path / KEYS).read_text(encoding="utf-8").splitlines()
    (path / KEYS).write_text("\n".join(change(keys)) + "\n", encoding="utf-8")
    rehash(path, KEYS)


def replace_index(path: Path, rows: np.ndarray) -> None:
    save_index(build_index(prepare_rows(rows, "cosine"), "Flat"), path / INDEX)
    rehash(path, INDEX)


def replace_file(path: Path, name: str, make: Callable[[Path], None]) -> None:
    (path / name).unlink()
    make(path / name)


def write_manifest(path: Path, text: str) -> None:
    (path / MANIFEST).write_text(text)


FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated-vectors": (truncate, "does not match manifest"),
    "truncated-vectors-rehashed": (lambda p: (truncate(p), rehash(p, VECTORS)), "not a readable .npy"),
    "checksum-mismatch": (flip_byte, "sha256"),
    "missing-key-line": (lambda p: edit_keys(p, lambda k: k[:-1]), f"has {N - 1} keys, manifest says count={N}"),
    "extra-key-line": (lambda p: edit_keys(p, lambda k: [*k, "extra"]), f"has {N + 1} keys, manifest says count={N}"),
    "duplicate-key": (lambda p: edit_keys(p, lambda k: [*k[:-1], k[0]]), "duplicate key 'w0'"),
    "keys-invalid-utf8": (lambda p: ((p / KEYS).write_bytes((p / KEYS).read_bytes() + b"\xff\n"), rehash(p, KEYS)), "not valid UTF-8"),
    "index-dimension-mismatch": (lambda p: replace_index(p, seeded_table(N, DIM // 2)[0]), f"index holds {N} x {DIM // 2} rows"),
    "index-row-count-mismatch": (lambda p: replace_index(p, seeded_table(N + 5, DIM)[0]), f"index holds {N + 5} x {DIM} rows"),
    "index-from-other-table": (lambda p: replace_index(p, seeded_table(N, DIM, seed=99)[0]), "do not match vectors.npy"),
    "index-garbage": (lambda p: ((p / INDEX).write_bytes(os.urandom(4096)), rehash(p, INDEX)), "not a readable FAISS index"),
    "vectors-wrong-dimension": (
        lambda p: (np.save(p / VECTORS, np.zeros((N, DIM + 1), np.float32)), rehash(p, VECTORS)), f"manifest says float32 ({N}, {DIM})"),
    "vectors-float64": (lambda p: (np.save(p / VECTORS, np.zeros((N, DIM))), rehash(p, VECTORS)), "float64"),
    "vectors-pickle": (
        lambda p: (np.save(p / VECTORS, np.array([{"x": 1}] * N, dtype=object), allow_pickle=True), rehash(p, VECTORS)), "not a readable .npy"),
    "vectors-fifo": (lambda p: replace_file(p, VECTORS, lambda f: os.mkfifo(f)), "listed in the manifest but missing"),
    "vectors-dangling-symlink": (lambda p: replace_file(p, VECTORS, lambda f: f.symlink_to(p / "nowhere")), "missing"),
    "keys-directory": (lambda p: replace_file(p, KEYS, lambda f: f.mkdir()), "listed in the manifest but missing"),
    "index-missing": (lambda p: (p / INDEX).unlink(), "listed in the manifest but missing"),
    "manifest-directory": (lambda p: replace_file(p, MANIFEST, lambda f: f.mkdir()), "cannot read manifest"),
    "manifest-missing": (lambda p: (p / MANIFEST).unlink(), "cannot read manifest"),
    "manifest-not-json": (lambda p: write_manifest(p, '{"format": '), "not valid JSON"),
    "manifest-wrong-version": (
        lambda p: write_manifest(p, (p / MANIFEST).read_text().replace('"version": 2', '"version": 7')), "directory says version 2"),
}


def publish_broken(tables: Path, tmp: Path, break_it: Callable[[Path], None], version: int = 2) -> None:
    staging = tmp / "staging"
    path = make_table(staging, n=N, dim=DIM, seed=1, version=version)
    break_it(path)
    os.rename(path, tables / "t" / str(version))  # appears whole, like a finished bundle


def refused(server: Server) -> float:
    return server.metrics.registry.get_sample_value("embserve_reloads_total", {"table": "t", "outcome": "refused"}) or 0.0


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_broken_version_is_refused_and_v1_keeps_serving(tmp_path: Path, fault: str, caplog: pytest.LogCaptureFixture) -> None:
    tables = tmp_path / "tables"
    make_table(tables, n=N, dim=DIM)
    expected = seeded_table(N, DIM)[0]
    break_it, message = FAULTS[fault]
    with running_server(tables) as server, Client(f"127.0.0.1:{server.port}") as c:
        publish_broken(tables, tmp_path, break_it)
        with caplog.at_level(logging.ERROR, logger="embserve_server.tables"):
            outcomes = c.reload()
        assert [(t, o, v) for t, o, v, _ in outcomes] == [("t", "refused", 2)]
        assert message in outcomes[0][3]
        assert any("refused table t version 2" in r.getMessage() for r in caplog.records)
        assert refused(server) == 1
        got = c.lookup(["w0", "w299"])
        assert (got.table, got.version) == ("t", 1) and np.array_equal(got.vectors, expected[[0, 299]])
        # Refused once, not again on every reload while the files stay as they are.
        assert [(t, o, v) for t, o, v, _ in c.reload()] == [("t", "unchanged", 1)]
        assert refused(server) == 1
        # The next good version loads.
        make_table(tables, n=N, dim=DIM, seed=3, version=3)
        assert [(t, o, v) for t, o, v, _ in c.reload()] == [("t", "loaded", 3)]
        assert c.lookup(["w0"]).version == 3


def test_broken_newest_at_start_falls_back_to_older(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    make_table(tables, n=N, dim=DIM)
    publish_broken(tables, tmp_path, truncate)
    with running_server(tables) as server, Client(f"127.0.0.1:{server.port}") as c:
        assert c.lookup(["w1"]).version == 1
        assert refused(server) == 1


def test_only_broken_versions_means_unavailable_until_a_good_one(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    (tables / "t").mkdir(parents=True)
    publish_broken(tables, tmp_path, flip_byte, version=1)
    with running_server(tables) as server, Client(f"127.0.0.1:{server.port}", timeout=5) as c:
        with pytest.raises(UnavailableError, match="no table is loaded"):
            c.lookup(["w1"])
        make_table(tables, n=N, dim=DIM, version=2)
        server.registry.reload()  # what the poller does
        assert c.lookup(["w1"]).version == 2


@pytest.mark.parametrize("what", ["table-directory", "version-directory"])
def test_vanishing_directory_keeps_the_loaded_copy(tmp_path: Path, what: str, caplog: pytest.LogCaptureFixture) -> None:
    tables = tmp_path / "tables"
    make_table(tables, n=N, dim=DIM, seed=5, version=1)
    make_table(tables, n=N, dim=DIM, version=2)
    expected = seeded_table(N, DIM)[0]
    with running_server(tables) as server, Client(f"127.0.0.1:{server.port}") as c:
        assert c.lookup(["w7"]).version == 2
        shutil.rmtree(tables / "t" if what == "table-directory" else tables / "t" / "2")
        got = c.lookup(["w7", "w8"])  # memory-mapped pages outlive the unlinked files
        assert got.version == 2 and np.array_equal(got.vectors, expected[[7, 8]])
        with caplog.at_level(logging.ERROR, logger="embserve_server.tables"):
            server.registry.reload()  # the poller's scan
            c.reload()  # and the admin RPC
        assert sum("vanished" in r.getMessage() for r in caplog.records) == 1  # logged once
        assert refused(server) == 1
        got = c.lookup(["w7", "w8"])  # never a fallback to version 1: no mixed or older answers
        assert got.version == 2 and np.array_equal(got.vectors, expected[[7, 8]])
        assert c.most_similar("w7", topn=3, exact=True)
        make_table(tables, n=N, dim=DIM, seed=9, version=3)
        assert [(t, o, v) for t, o, v, _ in c.reload()] == [("t", "loaded", 3)]


# Runs the real ``embserve-train`` CLI, stopping itself (SIGSTOP) at a known point of the bundle write:
# the rename that would publish the hidden build directory, when every file is written and fsynced.
# The test kills it there: no timing, no polling for a half-written file.
STOP_BEFORE_PUBLISH = r"""
import os, signal, sys
from embserve_trainer.cli import main

rename = os.rename

def stop_then_rename(src, dst, **kwargs):
    if os.path.basename(src).startswith(".tmp-"):
        os.kill(os.getpid(), signal.SIGSTOP)
    rename(src, dst, **kwargs)

os.rename = stop_then_rename
sys.exit(main(sys.argv[1:]))
"""


def test_trainer_killed_mid_export_leaves_no_version(tmp_path: Path) -> None:
    """SIGKILL a real ``embserve-train import`` while it writes its bundle; then run it again."""
    tables, table_dir = tmp_path / "tables", tmp_path / "tables" / "big"
    rows, dim = 5000, 16
    np.save(tmp_path / "big.npy", np.random.default_rng(0).normal(size=(rows, dim)).astype(np.float32))
    (tmp_path / "big.vocab").write_text("".join(f"k{i}\n" for i in range(rows)))
    args = ["import", str(tmp_path / "big.npy"), "--format", "npy", "--vocab", str(tmp_path / "big.vocab"),
            "--tables", str(tables), "--name", "big", "--index", "Flat"]
    proc = subprocess.Popen([sys.executable, "-c", STOP_BEFORE_PUBLISH, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, status = os.waitpid(proc.pid, os.WUNTRACED)  # returns when it stops itself (or exits)
        assert os.WIFSTOPPED(status), f"the export ended without publishing: {proc.communicate()[1]!r}"
        building = list(table_dir.iterdir())
        assert len(building) == 1 and building[0].name.startswith(".tmp-")  # caught mid-write
        assert {MANIFEST, VECTORS, KEYS} <= {p.name for p in building[0].iterdir()}
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert list_versions(tables, "big") == []  # the half-written bundle is hidden
    registry = TableRegistry(tables)
    assert registry.reload() == [] and len(registry) == 0
    leftovers = [p.name for p in table_dir.iterdir()]
    assert leftovers and all(name.startswith(".tmp-") for name in leftovers)
    # The next run succeeds and publishes version 1.
    out = subprocess.run([str(BIN / "embserve-train"), *args], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith(str(table_dir / "1"))
    assert [(o.table, o.outcome, o.version) for o in registry.reload()] == [("big", "loaded", 1)]
    assert registry.get("big").count == rows

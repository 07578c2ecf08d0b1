"""Concurrent writers into one table: every one publishes, versions are consecutive and valid, no
hidden temp directory is left (bundle_writer.publish: the loser of a race takes the next version)."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import BIN
from embserve_format.bundle import list_versions, read_bundle
from embserve_format.bundle_writer import BundleSpec, write_bundle

WRITERS = 8


def _writer(tables: str, writer: int, barrier: mp.synchronize.Barrier) -> None:  # type: ignore[name-defined]
    rows = np.full((3, 4), writer, dtype=np.float32)

    def meet(path: Path) -> None:
        # Every writer has its files on disk before any of them picks a version: they all race for 1.
        barrier.wait(timeout=60)
        path.write_text(str(writer))

    write_bundle(tables, "t", rows, ["a", "b", "c"], BundleSpec(extras={"writer": writer}, files={"writer.txt": meet}))


def test_eight_writers_get_eight_consecutive_valid_versions(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(WRITERS)
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), i, barrier)) for i in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    assert list_versions(tmp_path, "t") == list(range(1, WRITERS + 1))
    writers = set()
    for version in range(1, WRITERS + 1):
        bundle = read_bundle(tmp_path / "t" / str(version))  # checksums, manifest version == directory
        writer = bundle.extras["writer"]
        assert bundle.version == version and (bundle.path / "writer.txt").read_text() == str(writer)
        assert np.all(bundle.vectors == writer)
        writers.add(writer)
    assert writers == set(range(WRITERS))
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == sorted(str(v) for v in range(1, WRITERS + 1))


def test_explicit_version_that_exists_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    write_bundle(tmp_path, "t", np.ones((1, 2), np.float32), ["a"], version=3)
    with pytest.raises(ValueError, match="already exists"):
        write_bundle(tmp_path, "t", np.ones((1, 2), np.float32), ["a"], version=3)
    assert [p.name for p in (tmp_path / "t").iterdir()] == ["3"]
    assert write_bundle(tmp_path, "t", np.ones((1, 2), np.float32), ["a"]).name == "4"


def test_concurrent_cli_imports_all_publish(tmp_path: Path) -> None:
    """The report in issue 17: four imports of one file at once; all four must publish."""
    src = tmp_path / "g.txt"
    src.write_text("cat 1 2\ndog 3 4\n")
    cmd = [str(BIN / "embserve-train"), "import", str(src), "--tables", str(tmp_path / "cw"), "--name", "s", "--no-progress"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in results]
    assert sorted(Path(out.strip().splitlines()[-1]).name for out, _ in results) == ["1", "2", "3", "4"]
    assert list_versions(tmp_path / "cw", "s") == [1, 2, 3, 4]
    assert not [p for p in (tmp_path / "cw" / "s").iterdir() if p.name.startswith(".")]

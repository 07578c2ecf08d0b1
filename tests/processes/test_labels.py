"""Version labels: labels.json beside the versions, read by label, relabelled under load, errors keep the old label."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import make_table, running_server, seeded_table
from embserve_client import (
    AsyncClient,
    Client,
    EmbserveError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RemoteKeyedVectors,
)
from embserve_client.cli import main as client_cli
from embserve_format import labels as bfmt_labels
from embserve_server.app import run_worker
from embserve_server.config import Limits, ServerConfig
from embserve_server.explorer import Explorer
from embserve_trainer import cli as train_cli
from ports import free_port
from waiting import wait_until

N, DIM = 300, 8
WAIT = 60.0  # seconds an awaited event may take on a loaded 2-core machine


def publish(tables: Path, version: int) -> np.ndarray:
    """Version ``version`` of table "t": same keys, rows from seed ``version``; returns the rows."""
    make_table(tables, n=N, dim=DIM, seed=version, version=version, factory="Flat")
    return seeded_table(N, DIM, seed=version)[0]


@contextlib.contextmanager
def polling_server(tables: Path, **config: object) -> Iterator[str]:
    """``run_worker`` (the real poll loop) in a thread on a free port; yields the target."""
    port = free_port()
    cfg = ServerConfig(tables_dir=tables, address=f"127.0.0.1:{port}", poll_interval=0.05, grace_period=1.0, **config)  # type: ignore[arg-type]
    stop = threading.Event()
    thread = threading.Thread(target=run_worker, args=(cfg,), kwargs={"stop": stop}, daemon=True)
    thread.start()
    target = f"127.0.0.1:{port}"
    try:
        with Client(target) as c:
            wait_until("the server to serve", c.list_tables, retry_on=(EmbserveError,))
        yield target
    finally:
        stop.set()
        thread.join(timeout=30)


# -- the file ------------------------------------------------------------------------------------


def test_labels_file_round_trip_validation_and_atomic_write(tmp_path: Path) -> None:
    publish(tmp_path, 1)
    assert bfmt_labels.read_labels(tmp_path, "t") == {}  # no file: no labels
    path = bfmt_labels.write_labels(tmp_path, "t", {"stable": 1, "canary": 1})
    assert json.loads(path.read_text()) == {"format": "embserve-labels/1", "labels": {"canary": 1, "stable": 1}}
    assert bfmt_labels.read_labels(tmp_path, "t") == {"canary": 1, "stable": 1}
    assert sorted(p.name for p in (tmp_path / "t").iterdir() if p.name.startswith(".labels.") and p.suffix == ".tmp") == []
    assert bfmt_labels.parse_assignments(["stable=3", "canary="], ["old"]) == {"stable": 3, "canary": None, "old": None}
    for bad, needle in [(["stable"], "LABEL=VERSION"), (["stable=0"], "LABEL=VERSION"), (["3=2"], "expected a letter"),
                        (["stable=1", "stable=2"], "given twice"), (["a b=1"], "expected a letter")]:
        with pytest.raises(ValueError, match=needle):
            bfmt_labels.parse_assignments(bad)
    assert bfmt_labels.apply_changes({"stable": 1, "canary": 2}, {"canary": None, "beta": 3}) == {"beta": 3, "stable": 1}
    for text, needle in [("{", "not JSON"), ('{"labels": {"stable": 1}}', "expected"),
                         ('{"format": "embserve-labels/1", "labels": {"stable": "1"}}', "not an integer"),
                         ('{"format": "embserve-labels/1", "labels": {"stable": -1}}', "version")]:
        path.write_text(text)
        with pytest.raises(bfmt_labels.LabelsFileError, match=needle):
            bfmt_labels.read_labels(tmp_path, "t")
    bfmt_labels.write_labels(tmp_path, "t", {})
    assert not path.exists()  # no labels: no file


def test_train_cli_labels_checks_versions_and_removes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for v in (1, 2, 3):
        publish(tmp_path, v)
    (tmp_path / "t" / "3" / "vectors.npy").write_bytes(b"broken")  # version 3: a server would refuse it
    run = lambda *argv: train_cli.main(["label", "t", *argv, "--tables", str(tmp_path)])  # noqa: E731
    assert run("stable=1", "canary=2") == 0
    assert capsys.readouterr().out.strip() == "t: canary=2, stable=1"
    assert run("stable=9") == 2 and "has no version 9; versions on disk: 1, 2, 3" in capsys.readouterr().err
    assert run("stable=3") == 2 and "vectors.npy" in capsys.readouterr().err  # refused bundle: not labelled
    assert run("stable") == 2 and "LABEL=VERSION" in capsys.readouterr().err
    assert bfmt_labels.read_labels(tmp_path, "t") == {"canary": 2, "stable": 1}  # every refusal left the file as it was
    assert run("canary=") == 0 and bfmt_labels.read_labels(tmp_path, "t") == {"stable": 1}
    assert run("--remove", "stable") == 0 and bfmt_labels.read_labels(tmp_path, "t") == {}
    capsys.readouterr()
    assert run() == 0 and capsys.readouterr().out.strip() == "t: no labels"


# -- serving -------------------------------------------------------------------------------------


def test_stable_and_canary_readers_see_their_own_versions_in_one_run(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    rows = {v: publish(tables, v) for v in (1, 2, 3)}
    bfmt_labels.write_labels(tables, "t", {"stable": 1, "canary": 2})
    with polling_server(tables) as target, Client(target) as c:  # keep_versions 1: labelled versions stay loaded anyway
        seen: dict[str, set[int]] = {"stable": set(), "canary": set(), "": set()}
        errors: list[BaseException] = []

        def reader(label: str) -> None:
            try:
                with Client(target) as own:
                    for i in range(30):
                        got = own.lookup([f"w{i}"], version_label=label or None)
                        seen[label].add(got.version)
                        assert np.array_equal(got.vectors[0], rows[got.version][i])
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=reader, args=(label,)) for label in seen]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=WAIT)
        assert not errors, errors
        assert seen == {"stable": {1}, "canary": {2}, "": {3}}
        # Every read request takes the label; answers name the version.
        unit = rows[1] / np.linalg.norm(rows[1], axis=1, keepdims=True)
        assert [n.id for n in c.most_similar("w5", topn=3, exact=True, version_label="stable")] == \
            [int(i) for i in np.argsort(-(unit @ unit[5]))[1:4]]
        assert c.similarity("w5", "w9", version_label="stable") == pytest.approx(float(unit[5] @ unit[9]), abs=1e-5)
        assert c.table_info("t").labels == {"canary": 2, "stable": 1}
        with RemoteKeyedVectors(target, table="t", version_label="canary") as kv:
            assert np.array_equal(kv["w7"], rows[2][7]) and len(kv) == N
        async def aio() -> int:
            async with AsyncClient(target) as ac:
                return (await ac.lookup(["w1"], version_label="canary")).version
        assert asyncio.run(aio()) == 2
        with pytest.raises(InvalidArgumentError, match="version 2 and version_label 'canary': give one or the other"):
            c.lookup(["w1"], version=2, version_label="canary")
        with pytest.raises(NotFoundError, match=r"no version label 'beta'; its labels: canary=2, stable=1"):
            c.lookup(["w1"], version_label="beta")
        with pytest.raises(InvalidArgumentError, match="expected a letter"):
            c.lookup(["w1"], version_label="9")


def test_labelled_versions_stay_loaded_whatever_keep_versions_says(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    for v in (1, 2, 3, 4):
        publish(tables, v)
    bfmt_labels.write_labels(tables, "t", {"stable": 1})
    with running_server(tables, keep_versions=2) as server:
        registry = server.registry
        assert [t.version for t in registry.versions("t")] == [1, 3, 4]  # newest two + the labelled one
        bfmt_labels.write_labels(tables, "t", {})
        registry.reload()
        assert [t.version for t in registry.versions("t")] == [3, 4]  # label gone: back to keep_versions
        bfmt_labels.write_labels(tables, "t", {"old": 2})
        assert [(o.outcome, o.version) for o in registry.reload()] == [("loaded", 2)]
        assert [t.version for t in registry.versions("t")] == [2, 3, 4] and registry.get("t", label="old").version == 2


def test_relabel_under_load_has_no_failed_calls(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    rows = {v: publish(tables, v) for v in (1, 2)}
    bfmt_labels.write_labels(tables, "t", {"canary": 1})
    with polling_server(tables) as target:
        answers: list[int] = []
        failures: list[BaseException] = []
        done = threading.Event()

        def load(until: int) -> None:
            with Client(target) as c:
                for i in range(20_000):  # bounded: stops at the first answer from the new version
                    try:
                        got = c.lookup([f"w{i % N}"], version_label="canary")
                        assert np.array_equal(got.vectors[0], rows[got.version][i % N])
                        answers.append(got.version)
                        if got.version == until:
                            break
                    except BaseException as exc:  # noqa: BLE001 - counted
                        failures.append(exc)
            done.set()

        # The file (what embserve-train label writes), picked up by the server's poll.
        thread = threading.Thread(target=load, args=(2,))
        thread.start()
        wait_until("answers from version 1", lambda: len(answers) >= 20)
        bfmt_labels.write_labels(tables, "t", {"canary": 2})
        assert done.wait(WAIT) and not failures, failures[:3]
        thread.join()
        assert answers[0] == 1 and answers[-1] == 2 and set(answers) == {1, 2}
        by_file = (len(answers), answers.count(1))
        # The admin RPC: loads first, then writes the file.
        answers.clear()
        done.clear()
        thread = threading.Thread(target=load, args=(1,))
        thread.start()
        wait_until("answers from version 2", lambda: len(answers) >= 20)
        with Client(target) as admin:
            assert admin.set_labels("t", {"canary": 1}, remove=["nothing"]) == {"canary": 1}
        assert done.wait(WAIT) and not failures, failures[:3]
        thread.join()
        assert answers[0] == 2 and answers[-1] == 1
        assert bfmt_labels.read_labels(tables, "t") == {"canary": 1}
        print(f"relabel under load: file {by_file[0]} calls ({by_file[1]} from the old version), "
              f"admin RPC {len(answers)} calls ({answers.count(2)} from the old version), 0 failed")


def test_label_errors_keep_the_previous_assignment(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="embserve_server")
    tables = tmp_path / "tables"
    for v in (1, 2):
        publish(tables, v)
    (tables / "t" / "2" / "vectors.npy").write_bytes(b"broken")  # refused by the server
    bfmt_labels.write_labels(tables, "t", {"stable": 1})
    logged = lambda needle: any(needle in r.getMessage() for r in caplog.records)  # noqa: E731
    with polling_server(tables) as target, Client(target) as c:
        assert c.lookup(["w1"], version_label="stable").version == 1
        # Written behind the CLI's back: a missing version, then a refused one. The label stays on 1.
        bfmt_labels.write_labels(tables, "t", {"stable": 9, "canary": 1})
        wait_until("the missing version logged", lambda: logged("label stable -> version 9 not applied: that version is not on disk"))
        assert c.table_info("t").labels == {"canary": 1, "stable": 1}  # canary applied, stable kept
        bfmt_labels.write_labels(tables, "t", {"stable": 2})
        wait_until("the refused version logged", lambda: logged("label stable -> version 2 not applied: that version was refused"))
        assert c.lookup(["w1"], version_label="stable").version == 1
        (tables / "t" / "labels.json").write_text("{not json")
        wait_until("the malformed file logged", lambda: logged("labels file refused, keeping its labels as they were"))
        assert c.table_info("t").labels == {"stable": 1}
        # The admin RPC refuses both, and leaves the file as it is.
        bfmt_labels.write_labels(tables, "t", {"stable": 1})
        with pytest.raises(FailedPreconditionError, match=r"no version 9 \(versions on disk: 1, 2\); labels unchanged"):
            c.set_labels("t", {"stable": 9})
        with pytest.raises(FailedPreconditionError, match="version 2 was refused .*vectors.npy.*; labels unchanged"):
            c.set_labels("t", {"stable": 2})
        with pytest.raises(InvalidArgumentError, match="expected a letter"):
            c.set_labels("t", {"-x": 1})
        assert bfmt_labels.read_labels(tables, "t") == {"stable": 1}
        assert c.lookup(["w1"], version_label="stable").version == 1


def test_only_an_admin_token_may_label(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    publish(tables, 1)
    tokens = tmp_path / "tokens"
    tokens.write_text("reader read\nboss admin\n")
    with running_server(tables, auth_token_file=tokens) as server:
        with Client(f"127.0.0.1:{server.port}", token="reader") as c, pytest.raises(PermissionDeniedError, match="admin token"):
            c.set_labels("t", {"stable": 1})
        assert not (tables / "t" / "labels.json").exists()
        with Client(f"127.0.0.1:{server.port}", token="boss") as c:
            assert c.set_labels("t", {"stable": 1}) == {"stable": 1}
            assert c.lookup(["w1"], version_label="stable").version == 1


def test_explorer_shows_labels_on_the_version_slider(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    for v in (1, 2, 3):
        publish(tables, v)
    bfmt_labels.write_labels(tables, "t", {"stable": 1, "canary": 3})
    with running_server(tables, keep_versions=2) as server:
        explorer = Explorer(server.registry, Limits())
        status, body = explorer.api("tables", "")
        assert status == 200 and body["tables"][0]["labels"] == {"canary": 3, "stable": 1} and body["tables"][0]["versions"] == [1, 2, 3]
        status, body = explorer.api("timeline", "key=w1")
        assert status == 200 and [(s["version"], s["labels"]) for s in body["steps"]] == [(1, ["stable"]), (2, []), (3, ["canary"])]
        status, body = explorer.api("neighbors", "key=w1&version_label=stable")
        assert status == 200 and body["version"] == 1
        status, body = explorer.api("neighbors", "key=w1&version_label=nope")
        assert status == 404 and "its labels: canary=3, stable=1" in body["error"]


def test_command_line_reads_by_label_and_shows_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tables = tmp_path / "tables"
    for v in (1, 2):
        publish(tables, v)
    bfmt_labels.write_labels(tables, "t", {"stable": 1})
    with running_server(tables) as server:
        common = ["--target", f"127.0.0.1:{server.port}"]
        assert client_cli(["vector", "w1", "--label", "stable", *common]) == 0
        assert "(t v1)" in capsys.readouterr().out
        assert client_cli(["tables", *common]) == 0
        assert capsys.readouterr().out.splitlines()[1].endswith(" stable=1")
        assert client_cli(["label", "canary=2", "--table", "t", *common]) == 0
        assert capsys.readouterr().out.strip() == "t: canary=2, stable=1"
        assert client_cli(["similar", "w1", "-n", "2", "--label", "canary", *common]) == 0
        assert client_cli(["vector", "w1", "--label", "beta", *common]) == 2
        assert "no version label 'beta'" in capsys.readouterr().err


def test_clients_take_version_label_wherever_they_take_version() -> None:
    for name, method in inspect.getmembers(Client, inspect.isfunction):
        params = inspect.signature(method).parameters
        if "version" in params:
            assert "version_label" in params and params["version_label"].kind is inspect.Parameter.KEYWORD_ONLY, name
            twin = inspect.signature(getattr(AsyncClient, name)).parameters
            # AsyncClient forwards **options to the same plans, or spells them out the same way.
            assert "options" in twin or list(twin) == list(params), name

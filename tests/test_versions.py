"""Version-addressed reads: the server keeps the newest K versions loaded and answers each from its own rows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from conftest import make_table, running_server, seeded_table
from embserve_client import AsyncClient, Client, NotFoundError

N, DIM = 300, 8


def publish(tables: Path, version: int) -> np.ndarray:
    """Version ``version`` of table "t": same keys, rows from seed ``version`` (like training snapshots)."""
    make_table(tables, n=N, dim=DIM, seed=version, version=version, factory="Flat")
    return seeded_table(N, DIM, seed=version)[0]


def test_each_loaded_version_answers_with_its_own_rows(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    rows = {v: publish(tables, v) for v in (1, 2, 3, 4)}
    with running_server(tables, keep_versions=3) as server, Client(f"127.0.0.1:{server.port}") as c:
        assert [t.version for t in server.registry.versions("t")] == [2, 3, 4]  # the newest three
        for v in (2, 3, 4):
            got = c.lookup(["w5", "w9"], version=v)
            assert got.version == v and np.array_equal(got.vectors, rows[v][[5, 9]])
            assert c.get_vector("w5", version=v).tolist() == rows[v][5].tolist()  # the single-key path too
            unit = rows[v] / np.linalg.norm(rows[v], axis=1, keepdims=True)
            best = [int(i) for i in np.argsort(-(unit @ unit[5]))[1:4]]  # oracle: brute force over that version
            assert [n.id for n in c.most_similar("w5", topn=3, exact=True, version=v)] == best
            assert c.similarity("w5", "w9", version=v) == pytest.approx(float(unit[5] @ unit[9]), abs=1e-5)
        assert c.lookup(["w5"]).version == 4  # no version: the newest
        with pytest.raises(NotFoundError, match=r"version 1 is not loaded; loaded versions: 2, 3, 4"):
            c.lookup(["w5"], version=1)
        with pytest.raises(NotFoundError, match="version 9 is not loaded"):
            c.most_similar("w5", version=9)
        # Snapshots of one vocabulary share one key index instead of one per version.
        loaded = server.registry.versions("t")
        assert all(t.key_to_id is loaded[0].key_to_id for t in loaded)


def test_a_new_version_evicts_the_oldest_loaded_one(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    for v in (1, 2):
        publish(tables, v)
    with running_server(tables, keep_versions=2) as server, Client(f"127.0.0.1:{server.port}") as c:
        assert c.lookup(["w1"], version=1).version == 1
        rows3 = publish(tables, 3)
        assert [(t, o, v) for t, o, v, _ in c.reload()] == [("t", "loaded", 3)]
        assert [t.version for t in server.registry.versions("t")] == [2, 3]
        assert np.array_equal(c.lookup(["w1"], version=3).vectors[0], rows3[1])
        with pytest.raises(NotFoundError, match="loaded versions: 2, 3"):
            c.lookup(["w1"], version=1)


def test_one_version_kept_by_default_and_async_client_names_versions(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    for v in (1, 2):
        publish(tables, v)
    with running_server(tables) as server:
        assert [t.version for t in server.registry.versions("t")] == [2]

        async def main() -> None:
            async with AsyncClient(f"127.0.0.1:{server.port}") as c:
                assert (await c.lookup(["w1"], version=2)).version == 2
                with pytest.raises(NotFoundError, match="loaded versions: 2"):
                    await c.most_similar("w1", version=1)

        asyncio.run(main())

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
        assert all(t.key_to_index is loaded[0].key_to_index for t in loaded)


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


def test_align_undoes_a_rotation_and_keeps_distances() -> None:
    from embserve_format.maplayout import MapPoint, NeighbourhoodMap, align

    rng = np.random.default_rng(3)
    xy = np.vstack([[0.0, 0.0], rng.normal(size=(9, 2))])
    theta = 2.1
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) @ np.diag([1.0, -1.0])  # with a flip

    def nmap(points: np.ndarray) -> NeighbourhoodMap:
        return NeighbourhoodMap("k0", "pca", [MapPoint(f"k{i}", float(x), float(y), "neighbour", 0.0) for i, (x, y) in enumerate(points)], [])

    turned = nmap(xy @ rot)
    back = align(turned, nmap(xy))
    assert np.allclose([(p.x, p.y) for p in back.points], xy, atol=1e-5)
    assert np.linalg.norm(np.asarray([(p.x, p.y) for p in turned.points]) - xy) > 1.0  # there was something to undo


def test_explorer_timeline_walks_the_loaded_versions(tmp_path: Path) -> None:
    from embserve_server.config import Limits
    from embserve_server.explorer import Explorer

    tables = tmp_path / "tables"
    for v in (1, 2, 3):
        publish(tables, v)
    with running_server(tables, keep_versions=3) as server:
        explorer = Explorer(server.registry, Limits())
        status, body = explorer.api("timeline", "key=w5&topn=5&second=0")
        assert status == 200 and [s["version"] for s in body["steps"]] == [1, 2, 3]
        with Client(f"127.0.0.1:{server.port}") as c:
            for step in body["steps"]:  # each step's neighbours are that version's own
                want = [n.key for n in c.most_similar("w5", topn=5, version=step["version"])]
                assert [n["key"] for n in step["neighbors"]] == want
        status, one = explorer.api("map", "key=w5&topn=5&second=0&version=2")
        assert status == 200 and one["version"] == 2
        # Step 2's map is step 2's own layout, only turned: distances between its points are unchanged.
        own = {p["key"]: (p["x"], p["y"]) for p in one["points"]}
        turned = {p["key"]: (p["x"], p["y"]) for p in body["steps"][1]["map"]["points"]}
        keys = sorted(own)
        a, b = np.array([own[k] for k in keys]), np.array([turned[k] for k in keys])
        assert np.allclose(np.linalg.norm(a[:, None] - a[None], axis=2), np.linalg.norm(b[:, None] - b[None], axis=2), atol=1e-4)
        status, err = explorer.api("map", "key=w5&version=7")
        assert status == 404 and "loaded versions: 1, 2, 3" in err["error"]

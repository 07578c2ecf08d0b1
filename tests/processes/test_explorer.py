"""The explorer's JSON API against a real server: same answers as gRPC, errors as HTTP statuses."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import BIN, make_planted_table, running_server
from embserve_client import Client
from embserve_client import neighbourhood as nb
from embserve_format import maplayout
from embserve_server.config import Limits
from embserve_server.explorer import Explorer
from embserve_server.http_port import HttpPort, start_http
from waiting import wait_for_line

LIMITS = Limits(max_topn=50)


@contextmanager
def explorer_http(tables: Path, *, limits: Limits = LIMITS, enabled: bool = True) -> Iterator[tuple[str, int]]:
    """A real gRPC server and the HTTP port with the explorer on it: yields (base URL, gRPC port)."""
    with running_server(tables, limits=limits) as server:
        explorer = Explorer(server.registry, limits) if enabled else None
        http = start_http("127.0.0.1:0", HttpPort(server.metrics.registry, explorer=explorer))
        try:
            yield f"http://127.0.0.1:{http.port}", server.port
        finally:
            http.close()


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(url: str) -> tuple[int, Any]:
    status, headers, body = get(url)
    assert headers["Content-Type"].startswith("application/json"), headers
    return status, json.loads(body)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tables = tmp_path_factory.mktemp("explorer") / "tables"
    make_planted_table(tables)
    return tables


@pytest.fixture(scope="module")
def site(planted: Path) -> Iterator[tuple[str, int]]:
    with explorer_http(planted) as s:
        yield s


def test_tables_endpoint(site: tuple[str, int]) -> None:
    base, _ = site
    status, body = get_json(f"{base}/api/tables")
    assert status == 200
    assert body["default"] == "t"
    assert body["tables"] == [{"name": "t", "version": 1, "count": 2000, "dim": 16, "metric": "cosine", "index": "Flat", "versions": [1]}]
    assert body["methods"][0] == "pca" and body["limits"]["topn"] == 50


@pytest.mark.parametrize("key", ["cat", "w100", "w1999"])
def test_neighbors_equal_grpc_search(site: tuple[str, int], key: str) -> None:
    base, port = site
    status, body = get_json(f"{base}/api/neighbors?key={key}&topn=12")
    assert status == 200 and (body["table"], body["version"], body["query"]) == ("t", 1, key)
    with Client(f"127.0.0.1:{port}") as c:
        expected = c.most_similar(key, topn=12)
    assert [(n["key"], n["id"]) for n in body["neighbors"]] == [(n.key, n.id) for n in expected]
    assert np.array_equal(np.float32([n["score"] for n in body["neighbors"]]), np.float32([n.score for n in expected]))
    if key == "cat":
        assert [n["key"] for n in body["neighbors"][:2]] == ["dog", "kitten"]


def test_analogy_equals_grpc(site: tuple[str, int]) -> None:
    base, port = site
    status, body = get_json(f"{base}/api/analogy?a=king&b=man&c=woman&topn=5")
    assert status == 200 and body["query"] == "king - man + woman"
    with Client(f"127.0.0.1:{port}") as c:
        expected = c.most_similar(["king", "woman"], ["man"], topn=5)
    assert [n["key"] for n in body["neighbors"]] == [n.key for n in expected]
    assert body["neighbors"][0]["key"] == "queen"
    assert np.allclose([n["score"] for n in body["neighbors"]], [n.score for n in expected], atol=1e-6)


def test_map_is_the_client_map(site: tuple[str, int]) -> None:
    """/api/map (query core) and fetch_map (gRPC) run the same layout on the same answers."""
    base, port = site
    status, body = get_json(f"{base}/api/map?key=cat&topn=8&second=4")
    assert status == 200 and (body["key"], body["table"], body["version"], body["method"]) == ("cat", "t", 1, "pca")
    points = {p["key"]: p for p in body["points"]}
    assert body["points"][0]["key"] == "cat" and body["points"][0]["role"] == "centre"
    assert (points["cat"]["x"], points["cat"]["y"]) == (0.0, 0.0)
    assert points["dog"]["role"] == "neighbour" and points["dog"]["rank"] == 1
    assert sum(p["role"] == "neighbour" for p in body["points"]) == 8
    assert 8 < len(points) <= 1 + 8 + 8 * 4
    assert max(np.hypot(p["x"], p["y"]) for p in body["points"]) == pytest.approx(1.0, abs=1e-5)
    # dog sits much closer to cat on the map than the average point does
    assert np.hypot(points["dog"]["x"], points["dog"]["y"]) < np.mean([np.hypot(p["x"], p["y"]) for p in body["points"][1:]])
    assert {"source": "cat", "target": "dog", "score": pytest.approx(points["dog"]["score"])} in body["edges"]
    with Client(f"127.0.0.1:{port}") as c:
        grpc_map = nb.fetch_map(c, "cat", topn=8, second=4)
    assert grpc_map.to_dict() == body


def test_unknown_key_is_404_with_message(site: tuple[str, int]) -> None:
    base, _ = site
    for path in ("neighbors?key=nope", "map?key=nope", "analogy?a=king&b=nope&c=woman"):
        status, body = get_json(f"{base}/api/{path}")
        assert status == 404, path
        assert body == {"error": "Key 'nope' not present in table 't'", "code": "NOT_FOUND"}


def test_unknown_table_is_404(site: tuple[str, int]) -> None:
    base, _ = site
    status, body = get_json(f"{base}/api/neighbors?key=cat&table=missing")
    assert status == 404 and body["code"] == "NOT_FOUND"
    assert "table 'missing' not found" in body["error"] and "available tables: t" in body["error"]


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("neighbors?key=cat&topn=51", "topn: 51 is over the limit of 50"),  # the server's Limits
        ("neighbors?key=cat&topn=0", "topn: 0 must be at least 1"),
        ("neighbors?key=cat&topn=ten", "topn: 'ten' is not an integer"),
        ("neighbors?key=cat&exact=maybe", "exact: 'maybe' is not a boolean"),
        ("neighbors?topn=3", "key: required"),
        ("neighbors?key=", "key: required"),
        ("neighbors?key=cat&key=dog", "key: given 2 times"),
        ("neighbors?key=cat&colour=red", "colour: unknown parameter"),
        ("neighbors?key=" + "x" * 1025, "key: a key of 1025 characters is over the limit of 1024"),
        ("map?key=cat&topn=101", "topn: 101 is over the limit of 100"),  # the explorer's map limit
        ("map?key=cat&second=21", "second: 21 is over the limit of 20"),
        ("map?key=cat&second=-1", "second: -1 must be at least 0"),
        ("map?key=cat&method=mds", "method: 'mds' is not available here"),
        ("analogy?a=king&b=man", "c: required"),
    ],
)
def test_bad_parameters_are_400_naming_them(site: tuple[str, int], query: str, needle: str) -> None:
    base, _ = site
    status, body = get_json(f"{base}/api/{query}")
    assert status == 400, body
    assert body["code"] == "INVALID_ARGUMENT" and needle in body["error"]


def test_unknown_endpoint_404_and_metrics_still_served(site: tuple[str, int]) -> None:
    base, _ = site
    status, body = get_json(f"{base}/api/nothing")
    assert status == 404 and "no API endpoint 'nothing'" in body["error"]
    status, headers, text = get(f"{base}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert b"embserve_requests_total" in text


def test_page_and_static_files(site: tuple[str, int]) -> None:
    base, _ = site
    status, headers, page = get(f"{base}/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert b'src="/static/explorer.js"' in page and b"://" not in page  # nothing from elsewhere
    status, headers, js = get(f"{base}/static/explorer.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript") and b"api(\"map\"" in js
    for bad in ("/static/../explorer.py", "/static/%2e%2e/explorer.py", "/static/nope.js", "/explorer.py"):
        assert get(f"{base}{bad}")[0] == 404, bad


def test_explorer_is_off_by_default(planted: Path) -> None:
    with explorer_http(planted, enabled=False) as (base, _):
        assert get(f"{base}/")[0] == 404
        assert get(f"{base}/api/tables")[0] == 404
        assert get(f"{base}/metrics")[0] == 200


def test_pca_2d_oracle() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)) * np.array([5.0, 2.0, 0.1, 0.1, 0.1, 0.1])  # variance along axes 0, 1
    xy, explained = maplayout.pca_2d(x)
    # Independent oracle: eigenvectors of the covariance matrix (pca_2d uses an SVD of the data),
    # signs fixed by the documented rule (each component's largest loading positive).
    centred = x - x.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)  # ascending
    top = eigenvectors[:, ::-1][:, :2].T  # (2, d)
    top *= np.sign(top[np.arange(2), np.argmax(np.abs(top), axis=1)])[:, None]
    assert np.allclose(xy, centred @ top.T, atol=1e-9)
    assert np.allclose(explained, eigenvalues[::-1][:2] / eigenvalues.sum())
    assert explained[0] > explained[1] > 0 and sum(explained) > 0.95
    assert maplayout.pca_2d(x[:1])[0].tolist() == [[0.0, 0.0]]


def test_cli_flag_serves_the_explorer(planted: Path) -> None:
    """`embserve-server --explorer` wires the explorer onto the --metrics-address port."""
    cmd = [str(BIN / "embserve-server"), "--tables", str(planted), "--address", "127.0.0.1:0", "--metrics-address", "127.0.0.1:0"]
    refused = subprocess.run([*cmd[:-2], "--explorer"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--explorer: needs --metrics-address" in refused.stderr
    proc = subprocess.Popen([*cmd, "--explorer"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = wait_for_line(proc, "explorer on http://")
        base = line.split("explorer on ")[1].strip().rstrip("/")
        wait_for_line(proc, "serving t v1")
        status, body = get_json(f"{base}/api/neighbors?key=cat&topn=3")
        assert status == 200 and body["neighbors"][0]["key"] == "dog"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


if __name__ == "__main__":  # pragma: no cover - handy when debugging
    sys.exit(pytest.main([__file__, "-q"]))

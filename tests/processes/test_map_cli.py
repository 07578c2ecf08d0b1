"""`embserve map KEY` draws the neighbourhood map (gRPC calls + the shared layout) to a file."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import BIN, make_planted_table, running_server
from embserve_client.cli import main


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tables = tmp_path_factory.mktemp("map") / "tables"
    make_planted_table(tables)
    with running_server(tables) as server:
        yield f"127.0.0.1:{server.port}"


def test_map_cat_writes_a_png(target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from matplotlib import image

    out = tmp_path / "map.png"
    assert main(["map", "cat", "--target", target, "--out", str(out), "--topn", "8"]) == 0
    assert "points around 'cat' (t v1, pca)" in capsys.readouterr().out
    pixels = image.imread(out)  # (H, W, 4) float in [0, 1]
    assert pixels.shape == (7 * 120, 9 * 120, 4)  # figsize 9 x 7 in at 120 dpi
    rgb = pixels[..., :3]
    assert rgb.std() > 0.05  # not blank
    ink = (rgb.min(axis=2) < 0.6).mean()  # share of pixels that are drawn on
    assert 0.002 < ink < 0.5
    # the key is drawn in red, its neighbours in blue
    red = (rgb[..., 0] > 0.7) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3)
    blue = (rgb[..., 2] > 0.6) & (rgb[..., 0] < 0.3)
    assert red.sum() > 30 and blue.sum() > 8 * 10


def test_map_svg_names_the_neighbours(target: str, tmp_path: Path) -> None:
    out = tmp_path / "map.svg"
    assert main(["map", "cat", "--target", target, "--out", str(out), "--topn", "5", "--second", "0"]) == 0
    svg = out.read_text(encoding="utf-8")
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert ">dog 0.96<" in svg and ">kitten 0.93<" in svg and ">cat<" in svg  # labels kept as text


def test_console_script(target: str, tmp_path: Path) -> None:
    out = tmp_path / "m.png"
    done = subprocess.run(
        [str(BIN / "embserve"), "map", "dog", "--target", target, "-o", str(out), "-n", "4", "--second", "2"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["map", "nope"], "Key 'nope' not present"),
        (["map", "cat", "--table", "other"], "table 'other' not found"),
        (["map", "cat", "--out", "map.gif"], "should end in .png, .svg or .pdf"),
        (["map", "cat", "--method", "mds"], "method: 'mds' is not available"),
        (["map", "cat", "--topn", "5000"], "topn: 5000 is over the limit of 1000"),
    ],
)
def test_map_errors(target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([*args, "--target", target]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written


def test_without_matplotlib_says_which_extra(target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the extra were not installed
    assert main(["map", "cat", "--target", target, "--out", str(tmp_path / "m.png")]) == 2
    assert "pip install 'embserve-client[map]'" in capsys.readouterr().err


def test_map_layout_matches_numpy_pca(target: str) -> None:
    """The client-side map: PCA of the unit vectors of exactly the points the searches returned."""
    from embserve_client import Client
    from embserve_client.neighbourhood import fetch_map

    with Client(target) as c:
        nmap = fetch_map(c, "cat", topn=6, second=3)
        keys = [p.key for p in nmap.points]
        first = [n.key for n in c.most_similar("cat", topn=6)]
        unit = c.get_vectors(keys, normalize=True).astype(np.float64)
    assert keys[0] == "cat" and keys[1:7] == first and len(set(keys)) == len(keys)
    xy = np.array([(p.x, p.y) for p in nmap.points])
    centred = unit - unit.mean(axis=0)
    expected = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
    expected -= expected[0]
    expected /= np.linalg.norm(expected, axis=1).max()
    assert np.allclose(np.abs(xy), np.abs(expected), atol=1e-5)  # up to the sign of each axis
    assert (nmap.table, nmap.version, nmap.method) == ("t", 1, "pca")

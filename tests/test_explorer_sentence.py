"""The explorer's sentence map: ``/api/map?text=...`` places a sentence's ``Embed`` vector among the
tokens nearest it, over a real server; and the page does it in a real headless Chromium.

Oracle: brute-force cosine (numpy) of the bundle's rows against ``Client.embed``'s vector.
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import numpy as np
from conftest import running_server
from embserve_client import Client
from embserve_format.bundle import read_bundle
from embserve_format.text import Tokenizer
from test_explorer import explorer_http, get, make_planted_table
from test_explorer_browser import assert_real_png, chromium, explorer_server, wait_for

WORDS = {"tokenizer": Tokenizer().settings()}
SENTENCE = "The Cat and the DOG"  # "the" and "and" are not keys: skipped


def test_api_map_of_a_sentence(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    make_planted_table(tables, extras=WORDS)
    rows = read_bundle(tables / "t" / "1").vectors
    unit_rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    with running_server(tables) as server, Client(f"127.0.0.1:{server.port}") as c:
        vec = c.embed([SENTENCE])[0]
    want = [read_bundle(tables / "t" / "1").keys[i] for i in np.argsort(-(unit_rows @ vec))[:5]]
    with explorer_http(tables) as (base, _):
        status, _, body = get(f"{base}/api/map?" + urllib.parse.urlencode({"text": SENTENCE, "topn": 5, "second": 2}))
        assert status == 200, body
        m = json.loads(body)
        assert m["text"] == SENTENCE and m["key"] == f"“{SENTENCE}”"
        centre = [p for p in m["points"] if p["role"] == "centre"]
        assert len(centre) == 1 and (centre[0]["x"], centre[0]["y"]) == (0.0, 0.0)
        assert [p["key"] for p in sorted((p for p in m["points"] if p["role"] == "neighbour"), key=lambda p: p["rank"])] == want
        assert {"cat", "dog"} <= set(want)
        status, _, body = get(f"{base}/api/map?text=zebra+yak")
        assert status == 400 and "has no token in table 't'" in json.loads(body)["error"]
        status, _, body = get(f"{base}/api/map?text=cat&key=cat")
        assert status == 400 and "give one or the other" in json.loads(body)["error"]


def test_page_maps_a_sentence(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    make_planted_table(tables, extras=WORDS)
    with explorer_server(tables) as base, chromium(tmp_path) as b:
        b.get(f"{base}/")
        wait_for("the table list", lambda: b.js("return document.body.dataset.ready === '1'"))
        b.js("const s = document.getElementById('mode'); s.value = 'text'; s.dispatchEvent(new Event('change'));")
        assert b.text("#key-label").lower() == "sentence"  # CSS upper-cases labels
        b.type("#key", SENTENCE)
        b.click("#go")
        label = f"“{SENTENCE}”"
        wait_for("the sentence's map", lambda: b.find_all(f'#map g.pt.centre[data-key="{label}"]'))
        assert b.find_all('#map g.pt.neighbour[data-key="cat"]') and b.find_all('#map g.pt.neighbour[data-key="dog"]')
        assert b.text("#centre-key") == label and "text=" in b.js("return location.hash")
        b.hover(f'#map g.pt.centre[data-key="{label}"] circle')
        tip = wait_for("the tooltip", lambda: b.js("const t = document.getElementById('tooltip'); return t.hidden ? '' : t.textContent"))
        assert "the sentence" in tip
        png = b.screenshot(tmp_path / "explorer-sentence.png")
        viewport = b.js("return [innerWidth * devicePixelRatio, innerHeight * devicePixelRatio]")
        assert_real_png(png, (int(viewport[0]), int(viewport[1])))
        # A neighbour's dot re-centres on that key, as on a key's map.
        b.click('#map g.pt[data-key="dog"] circle')
        wait_for("re-centred on dog", lambda: b.find_all('#map g.pt.centre[data-key="dog"]'))
        assert b.js("return document.getElementById('mode').value") == "key"

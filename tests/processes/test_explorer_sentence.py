"""The explorer's sentence map: ``/api/map?text=...`` places a sentence's ``Embed`` vector among the
tokens nearest it, over a real server (the page: tests/browser_deploy/test_explorer_sentence_browser.py).

Oracle: brute-force cosine (numpy) of the bundle's rows against ``Client.embed``'s vector.
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import numpy as np
from conftest import make_planted_table, running_server
from embserve_client import Client
from embserve_format.bundle import read_bundle
from embserve_format.text import Tokenizer
from test_explorer import explorer_http, get

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


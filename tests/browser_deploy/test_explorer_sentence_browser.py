"""The explorer's sentence map in a real headless Chromium: choose "a sentence", type one, see it
placed among its nearest tokens, hover it, re-centre on a token (a screenshot is checked too)."""

from __future__ import annotations

from pathlib import Path

from conftest import make_planted_table
from embserve_format.text import Tokenizer
from test_explorer_browser import assert_real_png, chromium, explorer_server, wait_for

WORDS = {"tokenizer": Tokenizer().settings()}
SENTENCE = "The Cat and the DOG"


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

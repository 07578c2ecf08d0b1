"""The manual's site: built strictly by scripts/build-docs.sh (what `make docs` runs), failing on a broken
link, anchor or lost public name, and readable from file:// in a real headless Chromium without a server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_module
from docs_text import DOCS, REPO
from test_explorer_browser import assert_real_png, chromium, wait_for

require_module("sphinx", "docs/requirements.txt (make install installs it)")
require_module("myst_parser", "docs/requirements.txt (make install installs it)")

BUILD = REPO / "scripts" / "build-docs.sh"
PAGES = ["index", "getting-started", "training", "language-model", "embeddings", "explorer", "operations", "security",
         "performance", "capacity", "bundle-format", "grpc-api", "development", "reference/client", "reference/cli", "reference/proto"]


def build(out: Path, src: Path = DOCS) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(BUILD), str(out), str(src)], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site") / "html"
    proc = build(out)
    assert proc.returncode == 0, f"the docs build failed:\n{proc.stdout}\n{proc.stderr}"
    assert proc.stderr.strip() == "", f"the docs build warned:\n{proc.stderr}"
    return out


def test_every_page_and_the_generated_reference_are_built(site: Path) -> None:
    for page in PAGES:
        assert (site / f"{page}.html").is_file(), f"{page}.html was not built"
    client = (site / "reference" / "client.html").read_text(encoding="utf-8")
    for name in ("Client", "AsyncClient", "RemoteKeyedVectors", "UnknownKeyError", "LookupResult"):
        assert f'id="embserve_client.{name}"' in client
    assert 'id="embserve_client.Client.most_similar"' in client  # members, from the docstrings
    proto = (site / "reference" / "proto.html").read_text(encoding="utf-8")
    assert 'id="lookuprequest"' in proto and "MISSING_POLICY_SUBWORD" in proto
    cli = (site / "reference" / "cli.html").read_text(encoding="utf-8")
    assert "usage: embserve-train import" in cli and "--max-connection-age" in cli


def test_a_broken_link_anchor_or_lost_public_name_fails_the_build(tmp_path: Path) -> None:
    # A copy of the tree's docs with three faults; the code and the proto it documents are this tree's.
    root = tmp_path / "tree"
    shutil.copytree(DOCS, root / "docs", ignore=shutil.ignore_patterns("_build"))
    for part in ("proto", "client", "index", "server", "trainer", "format"):
        if (REPO / part).is_dir():
            (root / part).symlink_to(REPO / part)
    page = root / "docs" / "getting-started.md"
    page.write_text(page.read_text(encoding="utf-8") + "\nSee [nowhere](nowhere.md) and [limits](security.md#no-such-anchor).\n")
    ref = root / "docs" / "reference" / "client.md"
    ref.write_text(re.sub(r"^\.\. autoclass:: embserve_client\.Tokenized\n", "", ref.read_text(encoding="utf-8"), flags=re.M))
    proc = build(tmp_path / "html", root / "docs")
    assert proc.returncode != 0
    assert "nowhere.md" in proc.stderr
    assert "no-such-anchor" in proc.stderr
    assert "embserve_client.Tokenized is in embserve_client.__all__ but no reference page documents it" in proc.stderr


def test_the_site_opens_from_file_urls_without_a_server(site: Path, tmp_path: Path) -> None:
    with chromium(tmp_path) as b:
        b.get((site / "index.html").as_uri())
        wait_for("the index page", lambda: b.js("return document.readyState === 'complete'"))
        assert b.js("return document.title").startswith("embserve")
        # The theme's style sheets and the page's images load from disk.
        assert b.js("return [...document.querySelectorAll('link[rel=stylesheet]')].every(l => l.sheet !== null)")
        assert b.js("return [...document.images].every(i => i.complete && i.naturalWidth > 0)")
        assert b.js("return getComputedStyle(document.querySelector('div.sphinxsidebar')).display") != "none"
        png = b.screenshot(tmp_path / "docs-index.png")
        assert_real_png(png, (1360, int.from_bytes(png[20:24], "big")))  # the viewport: window less the browser's frame
        # Links between pages are relative files: follow one into the generated reference.
        b.click('a[href="reference/client.html"]')
        wait_for("the client reference", lambda: b.js("return document.getElementById('embserve_client.Client') !== null"))
        # Search runs in the page (searchindex.js), no server needed.
        b.get((site / "search.html").as_uri() + "?q=RemoteKeyedVectors")
        wait_for("search results", lambda: b.js("return document.querySelectorAll('ul.search li').length") > 0, timeout=60)


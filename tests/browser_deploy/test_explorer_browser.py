"""The explorer in a real headless Chromium, driven over WebDriver (chromedriver) with the stdlib.

The server is the real ``embserve-server --explorer`` process on 127.0.0.1.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from conftest import BIN, READ, free_port, make_planted_table, require_tool
from waiting import wait_for_line, wait_until

# Found on PATH, as scripts/system-deps.sh looks for them (`command -v chromium`, `command -v chromedriver`).
CHROMIUM = Path(require_tool("chromium", "Debian package chromium, scripts/system-deps.sh"))
CHROMEDRIVER = Path(require_tool("chromedriver", "Debian package chromium-driver, scripts/system-deps.sh"))
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C WebDriver element reference key
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T = TypeVar("T")



class WebDriverError(RuntimeError):
    pass


class Browser:
    """The few W3C WebDriver commands the tests need, over HTTP to a local chromedriver."""

    def __init__(self, driver_url: str, profile: Path, *, size: tuple[int, int] = (1360, 880)) -> None:
        self.driver_url = driver_url
        args = [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", f"--window-size={size[0]},{size[1]}", f"--user-data-dir={profile}",
        ]
        caps = {"browserName": "chrome", "goog:chromeOptions": {"binary": str(CHROMIUM), "args": args}}
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        req = urllib.request.Request(self.driver_url + path, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return json.loads(resp.read())["value"]
        except urllib.error.HTTPError as exc:
            raise WebDriverError(f"{method} {path}: {exc.code} {exc.read()[:500]!r}") from None

    def cmd(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self.cmd("POST", "/url", {"url": url})

    def find_all(self, css: str) -> list[str]:
        return [e[ELEMENT] for e in self.cmd("POST", "/elements", {"using": "css selector", "value": css})]

    def find(self, css: str) -> str:
        return str(self.cmd("POST", "/element", {"using": "css selector", "value": css})[ELEMENT])

    def type(self, css: str, text: str) -> None:
        el = self.find(css)
        self.cmd("POST", f"/element/{el}/clear")
        self.cmd("POST", f"/element/{el}/value", {"text": text})

    def click(self, css: str) -> None:
        self.cmd("POST", f"/element/{self.find(css)}/click")

    def text(self, css: str) -> str:
        return str(self.cmd("GET", f"/element/{self.find(css)}/text"))

    def hover(self, css: str) -> None:
        move = {"type": "pointerMove", "duration": 0, "origin": {ELEMENT: self.find(css)}, "x": 0, "y": 0}
        self.cmd("POST", "/actions", {"actions": [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": [move]}]})

    def js(self, script: str, *args: Any) -> Any:
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def screenshot(self, path: Path) -> bytes:
        png = base64.b64decode(self.cmd("GET", "/screenshot"))
        path.write_bytes(png)
        return png

    def quit(self) -> None:
        try:
            self._call("DELETE", f"/session/{self.session}")
        except (WebDriverError, OSError):
            pass


def wait_for(what: str, condition: Callable[[], T], timeout: float = 30.0, retry_on: tuple[type[Exception], ...] = (WebDriverError,)) -> T:
    """``wait_until`` for a page that renders asynchronously: a WebDriver error means "not there yet"."""
    return wait_until(what, condition, timeout, poll=0.1, retry_on=retry_on)


@contextmanager
def chromium(tmp: Path) -> Iterator[Browser]:
    port = free_port()
    driver = subprocess.Popen([str(CHROMEDRIVER), f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    browser = None
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for("chromedriver", lambda: json.loads(urllib.request.urlopen(f"{url}/status", timeout=5).read())["value"]["ready"], retry_on=(OSError,))
        browser = Browser(url, tmp / "chromium-profile")
        yield browser
    finally:
        if browser is not None:
            browser.quit()
        driver.terminate()
        driver.wait(timeout=30)


@contextmanager
def explorer_server(tables: Path, *extra: str) -> Iterator[str]:
    """``embserve-server --explorer`` as users start it; yields the explorer's base URL."""
    cmd = [str(BIN / "embserve-server"), "--tables", str(tables), "--address", "127.0.0.1:0", "--metrics-address", "127.0.0.1:0",
           "--explorer", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = wait_for_line(proc, "explorer on http://")
        wait_for_line(proc, " serving ")
        yield line.split("explorer on ")[1].strip().rstrip("/")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def search_in_page(b: Browser, base: str, key: str) -> None:
    b.get(f"{base}/")
    wait_for("the table list", lambda: b.js("return document.body.dataset.ready === '1'"))
    b.type("#key", key)
    b.click("#go")
    wait_for(f"the map of {key!r}", lambda: b.find_all(f'#map g.pt.centre[data-key="{key}"]'))


def assert_real_png(png: bytes, size: tuple[int, int]) -> None:
    assert png[:8] == PNG_MAGIC
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == size
    from matplotlib import image

    pixels = image.imread(io.BytesIO(png), format="png")[..., :3]
    assert pixels.std() > 0.05  # not a blank page
    assert len({tuple(p) for p in pixels[::8, ::8].reshape(-1, 3).round(2).tolist()}) > 20  # many colours: drawn


def test_search_cat_shows_dog_in_list_and_map(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    make_planted_table(tables)
    with explorer_server(tables) as base, chromium(tmp_path) as b:
        search_in_page(b, base, "cat")

        # The neighbour list (DOM): dog first, with its score
        items = b.find_all("#neighbors li")
        assert len(items) == 12  # the page's default number of neighbours
        first = b.text("#neighbors li:first-child")
        assert first.split()[:2] == ["1", "dog"]
        assert b.find_all('#neighbors li[data-key="dog"]') and b.find_all('#neighbors li[data-key="kitten"]')

        # The map (SVG): the key, dog as a neighbour point, more points from the second ring, edges
        assert b.find_all('#map g.pt.neighbour[data-key="dog"]')
        assert len(b.find_all("#map g.pt.second")) > 0 and len(b.find_all("#map line")) > 12
        assert "t v1" in b.text("#status") and "PCA" in b.text("#status")

        # Hover: a tooltip with dog's scores
        b.hover('#map g.pt[data-key="dog"] circle')
        tip = wait_for("the tooltip", lambda: b.js("const t = document.getElementById('tooltip'); return t.hidden ? '' : t.textContent"))
        assert "dog" in tip and "#1 neighbour" in tip and "cosine to cat" in tip

        png = b.screenshot(tmp_path / "explorer-cat.png")
        viewport = b.js("return [innerWidth * devicePixelRatio, innerHeight * devicePixelRatio]")
        assert_real_png(png, (int(viewport[0]), int(viewport[1])))

        # Click a point: the map re-centres on it
        b.click('#map g.pt[data-key="dog"] circle')
        wait_for("re-centred on dog", lambda: b.find_all('#map g.pt.centre[data-key="dog"]'))
        assert b.text("#centre-key") == "dog" and b.find_all('#neighbors li[data-key="cat"]')
        assert "key=dog" in b.js("return location.hash")

        # The analogy box: king - man + woman = queen
        for field, word in (("#a", "king"), ("#b", "man"), ("#c", "woman")):
            b.type(field, word)
        b.click("#analogy-go")
        wait_for("analogy results", lambda: b.find_all("#analogy-results li"))
        assert b.find("#analogy-results li:first-child") and b.js(
            "return document.querySelector('#analogy-results li').dataset.key"
        ) == "queen"


def test_errors_are_shown(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    make_planted_table(tables)
    with explorer_server(tables) as base, chromium(tmp_path) as b:
        b.get(f"{base}/#key=nope")
        message = wait_for("the error banner", lambda: b.js("const e = document.getElementById('error'); return e.hidden ? '' : e.textContent"))
        assert message == "Key 'nope' not present in table 't'"
        assert not b.find_all("#map g.pt")


def test_token_is_asked_once_and_kept_in_the_tab(tmp_path: Path) -> None:
    """With --auth-token-file the page asks for the token, keeps it in session storage (no URL, no
    cookie) and sends it with its API calls; a reload does not ask again."""
    tables = tmp_path / "tables"
    make_planted_table(tables)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{READ} read\n")
    with explorer_server(tables, "--auth-token-file", str(tokens)) as base, chromium(tmp_path) as b:
        b.get(f"{base}/#key=cat")
        wait_for("the token form", lambda: b.js("return !document.getElementById('token-form').hidden"))
        assert not b.js("return document.body.dataset.ready") and not b.find_all("#map g.pt")
        b.type("#token", "not-the-token")
        b.click("#token-go")
        message = wait_for("the refusal", lambda: b.js("const e = document.getElementById('error'); return e.hidden ? '' : e.textContent"))
        assert message.startswith("invalid bearer token")
        assert b.js("return !document.getElementById('token-form').hidden")
        b.type("#token", READ)
        b.click("#token-go")
        wait_for("the map of cat", lambda: b.find_all('#map g.pt.centre[data-key="cat"]'))
        assert b.js("return document.getElementById('token-form').hidden")
        assert b.js("return sessionStorage.getItem('embserve-token')") == READ
        assert b.js("return document.cookie") == "" and READ not in b.js("return location.href")
        # A reload keeps the token (same tab): no form, straight to the neighbours.
        search_in_page(b, base, "dog")
        assert b.js("return document.getElementById('token-form').hidden")
        assert b.text("#neighbors li:first-child").split()[:2] == ["1", "cat"]

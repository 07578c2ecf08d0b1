"""The HTTP side port: ``/metrics`` for Prometheus and, opt-in, the web explorer.

One stdlib :class:`ThreadingHTTPServer` in a daemon thread serves::

    /metrics                      Prometheus text format from the injected registry
    /  and /static/<name>         the explorer page and its files   (only with an Explorer)
    /api/<endpoint>?...           the explorer's JSON API            (only with an Explorer)

GET (and HEAD) only; everything else is 404/405. The explorer does the work; this module only
routes and writes bytes.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

if TYPE_CHECKING:
    from embserve_server.explorer import Explorer

logger = logging.getLogger(__name__)

# The page runs only its own files: no CDN, no inline script, no framing.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"address {address!r}: expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry
    explorer: Explorer | None


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "embserve"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
        url = urlsplit(self.path)
        path, explorer = url.path, self.server.explorer
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.server.registry), send_body)
        elif explorer is not None and path.startswith("/api/"):
            status, body = explorer.api(path[len("/api/") :], url.query)
            data = json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
            self._send(status, "application/json; charset=utf-8", data, send_body, {"Cache-Control": "no-store"})
        elif explorer is not None and (path in ("/", "/index.html") or path.startswith("/static/")):
            page = explorer.page("index.html" if not path.startswith("/static/") else path[len("/static/") :])
            if page is None:
                self._send(404, "text/plain; charset=utf-8", b"not found\n", send_body)
            else:
                self._send(200, page.content_type, page.body, send_body, PAGE_HEADERS)
        else:
            hint = b"" if explorer is not None else b" (the explorer is off: start the server with --explorer)"
            self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics" + hint + b"\n", send_body)

    def _send(self, status: int, content_type: str, body: bytes, send_body: bool, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if send_body:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away; nothing to tell it

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        logger.debug("%s %s", self.address_string(), format % args)


def start_http(address: str, registry: CollectorRegistry, *, explorer: Explorer | None = None) -> ThreadingHTTPServer:
    """Bind ``address`` and serve in a daemon thread; returns the server (``shutdown()`` stops it).

    Raises:
        ValueError: ``address`` is not HOST:PORT.
        OSError: the address cannot be bound.
    """
    host, port = split_address(address)
    cls = _IPv6Server if ":" in host else _Server
    server = cls((host, port), _Handler)
    server.registry = registry
    server.explorer = explorer
    threading.Thread(target=server.serve_forever, name="embserve-http", daemon=True).start()
    return server


def start_metrics_http(address: str, registry: CollectorRegistry, *, explorer: Explorer | None = None) -> int:
    """Serve ``/metrics`` (and the explorer, when given) on ``address`` in a daemon thread.

    Returns:
        The bound port (useful with port 0).
    """
    server = start_http(address, registry, explorer=explorer)
    host, bound = split_address(address)[0], int(server.server_address[1])
    shown = f"[{host}]" if ":" in host else host
    logger.info("metrics on http://%s:%d/metrics", shown, bound)
    if explorer is not None:
        logger.info("explorer on http://%s:%d/", shown, bound)
    return bound

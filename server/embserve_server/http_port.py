"""The HTTP port: ``/metrics`` for Prometheus, the OpenAI-shaped embeddings API and, opt-in, the web
explorer (routes, auth, admission).

Routes (GET and HEAD, and POST on /v1/embeddings; other methods 405)::

    /metrics                      Prometheus text format from the injected registry
    /v1/embeddings, /v1/models    OpenAI's embeddings API (openai_api.py), with bearer tokens,
                                  admission and the API threads as /api/*; a POST body over
                                  HttpLimits.max_body_bytes is refused 413 unread
    /  and /index.html            the explorer page                    (only with an Explorer)
    /static/<name>                the page's script and style sheet     (only with an Explorer)
    /api/<endpoint>?...           the explorer's JSON API               (only with an Explorer)

With ``--auth-token-file`` the port keeps gRPC's promises, through the same
:class:`~embserve_server.auth.TokenCheck` and refusal counter: every ``/api/*`` answer and the page
need ``Authorization: Bearer <read or admin token>`` (401 otherwise; the page's 401 answer is the
page itself, which asks for the token and sends it with its API calls); ``/metrics`` needs one only
with ``--metrics-auth`` (Prometheus' convention is an open scrape). The page's script and style
sheet stay open: they are the package's own files and carry no table data. API calls are admitted
through the shared :class:`~embserve_server.admission.Admission` (429 beyond it) and run on their
own small thread pool, so the event loop (http_server.py) stays free for ``/metrics`` and for
accepting connections. Every refusal's HTTP status and body come from the one map, ``errors.http_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from embserve_server.config import HttpLimits, ServerConfig
from embserve_server.errors import AuthError, ConnectionLimitError, OverloadedError, http_error
from embserve_server.explorer import INDEX_PAGE
from embserve_server.http_server import HttpServer, Request, Response, plain

if TYPE_CHECKING:
    from embserve_server.admission import Admission
    from embserve_server.auth import TokenCheck
    from embserve_server.explorer import Explorer
    from embserve_server.openai_api import OpenAIApi
    from embserve_server.tls import ServerTls

logger = logging.getLogger(__name__)

# The page runs only its own files: no CDN, no inline script, no framing.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
JSON = "application/json; charset=utf-8"
NO_STORE = {"Cache-Control": "no-store"}


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"address {address!r}: expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    data = json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
    return Response(status, JSON, data, {**NO_STORE, **(headers or {})})


def _challenge(exc: AuthError) -> dict[str, str]:
    """RFC 6750's ``WWW-Authenticate`` for a 401 (none for 403: the token was fine, the role is not)."""
    if exc.denied:
        return {}
    error = ', error="invalid_token"' if exc.args[0].startswith("invalid") else ""
    return {"WWW-Authenticate": f'Bearer realm="embserve"{error}'}


class HttpPort:
    """Routes one request of the side port (the ``Handler`` of :class:`HttpServer`).

    Args:
        registry: what ``/metrics`` exposes.
        explorer: serve the explorer page and API (None: ``/metrics`` only).
        tokens: the gRPC port's token check (None: no auth).
        metrics_auth: ``/metrics`` needs a token too.
        admission: the gRPC port's admission count (None: no limit).
        api_threads: threads for the JSON API.
        openai: answer ``/v1/*`` (None: 404 there).
    """

    def __init__(self, registry: CollectorRegistry, *, explorer: Explorer | None = None, tokens: TokenCheck | None = None,
                 metrics_auth: bool = False, admission: Admission | None = None, api_threads: int = HttpLimits.api_threads,
                 openai: OpenAIApi | None = None, max_body_bytes: int = HttpLimits.max_body_bytes) -> None:
        self.registry = registry
        self.max_body_bytes = max_body_bytes
        self.explorer = explorer
        self.openai = openai
        self.tokens = tokens
        self.metrics_auth = metrics_auth
        self.admission = admission
        # One thread for scrapes (a multiprocess scrape reads many files: not on the loop), a few for the API.
        self.scrapes = ThreadPoolExecutor(1, thread_name_prefix="embserve-http-metrics")
        self.api_pool = ThreadPoolExecutor(max(1, api_threads), thread_name_prefix="embserve-http-api") if (explorer or openai) else None

    def busy(self) -> Response:
        """The answer to a connection over the cap (503, from the status map)."""
        status, body = http_error(ConnectionLimitError("server busy: too many open HTTP connections; retry shortly"))
        return Response(status, "text/plain; charset=utf-8", f"{body['error']}\n".encode(), {"Retry-After": "1"})

    def close(self) -> None:
        self.scrapes.shutdown(wait=False, cancel_futures=True)
        if self.api_pool is not None:
            self.api_pool.shutdown(wait=False, cancel_futures=True)

    def _authenticate(self, request: Request) -> AuthError | None:
        if self.tokens is None:
            return None
        try:
            self.tokens.authenticate(request.header("authorization"))
        except AuthError as exc:
            return exc
        return None

    async def __call__(self, request: Request) -> Response:
        if self.openai is not None and request.path.startswith("/v1/"):
            return await self._openai(request)
        if request.method not in ("GET", "HEAD"):
            return plain(405, f"method {request.method} not allowed: this port answers GET and HEAD\n", {"Allow": "GET, HEAD"})
        path, explorer = request.path, self.explorer
        if path == "/metrics":
            return await self._metrics(request)
        if explorer is not None and path.startswith("/api/"):
            return await self._api(request, path[len("/api/"):])
        if explorer is not None and (path in ("/", f"/{INDEX_PAGE}") or path.startswith("/static/")):
            name = INDEX_PAGE if not path.startswith("/static/") else path[len("/static/"):]
            page = explorer.page(name)
            if page is None:
                return plain(404, "not found\n")
            status, headers = 200, PAGE_HEADERS
            if name == INDEX_PAGE:
                refused = self._authenticate(request)
                if refused is not None:
                    # The page itself, with the refusal's status: it asks for the token and sends
                    # it with every API call (the API, not the page, carries table data).
                    status, headers = http_error(refused)[0], {**PAGE_HEADERS, **NO_STORE, **_challenge(refused)}
            return Response(status, page.content_type, page.body, headers)
        hint = "" if explorer is not None else " (the explorer is off: start the server with --explorer)"
        return plain(404, f"not found: try /metrics{hint}\n")

    async def _metrics(self, request: Request) -> Response:
        if self.metrics_auth:
            refused = self._authenticate(request)
            if refused is not None:
                status, body = http_error(refused)
                return plain(status, f"{body['code']}: {body['error']}\n", _challenge(refused))
        data = await asyncio.get_running_loop().run_in_executor(self.scrapes, generate_latest, self.registry)
        return Response(200, CONTENT_TYPE_LATEST, data)

    async def _openai(self, request: Request) -> Response:
        from embserve_server.openai_api import error_body, openai_error

        api, pool = self.openai, self.api_pool
        assert api is not None and pool is not None  # routed here only with the API on
        if request.refused_length is not None:
            message = (f"request body of {request.refused_length} bytes is over the limit of {self.max_body_bytes} bytes; "
                       "send fewer or shorter inputs per request")
            return _json(413, error_body(413, message, code="request_too_large"), {"Connection": "close"})
        refused = self._authenticate(request)
        if refused is not None:
            status, body = openai_error(refused)
            return _json(status, body, _challenge(refused))
        loop = asyncio.get_running_loop()
        try:
            with self.admission.http_call() if self.admission is not None else contextlib.nullcontext():
                status, body = await loop.run_in_executor(pool, api.answer, request.method, request.path, request.body)
        except OverloadedError as exc:
            status, body = openai_error(exc)
            return _json(status, body, {"Retry-After": "1"})
        return _json(status, body)

    async def _api(self, request: Request, endpoint: str) -> Response:
        explorer, pool = self.explorer, self.api_pool
        assert explorer is not None and pool is not None  # routed here only with an explorer
        refused = self._authenticate(request)
        if refused is not None:
            status, body = http_error(refused)
            return _json(status, body, _challenge(refused))
        loop = asyncio.get_running_loop()
        if self.admission is None:
            status, body = await loop.run_in_executor(pool, explorer.api, endpoint, request.query)
            return _json(status, body)
        try:
            with self.admission.http_call():
                status, body = await loop.run_in_executor(pool, explorer.api, endpoint, request.query)
        except OverloadedError as exc:
            status, body = http_error(exc)
            return _json(status, body, {"Retry-After": "1"})
        return _json(status, body)


def start_http(address: str, port: HttpPort, limits: HttpLimits | None = None, *, ssl_context: Any = None, log_rate: float = 10.0) -> HttpServer:
    """Bind ``address`` and serve ``port`` in a daemon thread; ``close()`` stops it.

    Raises:
        ValueError: ``address`` is not HOST:PORT, or a limit out of range.
        OSError: the address cannot be bound.
    """
    host, number = split_address(address)
    server = HttpServer(port, limits or HttpLimits(), ssl_context=ssl_context, busy=port.busy(), log_rate=log_rate)
    server.start(host, number)
    return server


def start_http_port(config: ServerConfig, registry: CollectorRegistry, *, explorer: Explorer | None = None,
                    tokens: TokenCheck | None = None, admission: Admission | None = None, openai: OpenAIApi | None = None,
                    tls: ServerTls | None = None) -> HttpServer:
    """Serve ``/metrics`` (and the explorer, when given) on ``config.metrics_address``, as configured.

    Token checks on ``/metrics`` (``metrics_auth``) and the timeouts come from ``config``;
    ``tokens``, ``admission`` and ``tls`` (None: plaintext) are the gRPC port's, so both ports
    share them: a rotated certificate or token file reaches both.

    Returns:
        The running server (``.port`` is the bound port, useful with port 0).

    Raises:
        ValueError: a bad address, TLS files or limits; ``--metrics-auth`` without tokens.
        OSError: the address cannot be bound.
    """
    assert config.metrics_address is not None  # callers start the port only when it is configured
    if config.metrics_auth and tokens is None:
        raise ValueError("--metrics-auth needs --auth-token-file (the tokens /metrics would accept)")
    context = tls.http_context() if tls is not None else None
    port = HttpPort(registry, explorer=explorer, tokens=tokens, metrics_auth=config.metrics_auth,
                    admission=admission, api_threads=config.http.api_threads, openai=openai, max_body_bytes=config.http.max_body_bytes)
    server = start_http(config.metrics_address, port, config.http, ssl_context=context, log_rate=config.log_rate)
    host = split_address(config.metrics_address)[0]
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if context is not None else "http"
    logger.info("metrics on %s://%s:%d/metrics", scheme, shown, server.port)
    if explorer is not None:
        logger.info("explorer on %s://%s:%d/", scheme, shown, server.port)
    if openai is not None:
        logger.info("OpenAI-shaped embeddings on %s://%s:%d/v1/embeddings", scheme, shown, server.port)
    if tokens is not None and (explorer is not None or config.metrics_auth):
        logger.info("the HTTP port asks for a bearer token on %s", "/metrics and the explorer" if explorer is not None and config.metrics_auth
                    else "the explorer" if explorer is not None else "/metrics")
    return server

"""The HTTP side port's server: asyncio connections, h11 for HTTP/1.1, bounded in time and number.

One event-loop thread holds every connection, so a client that connects and stalls costs a file
descriptor and a little memory, never a thread. Per connection (:class:`~embserve_server.config.HttpLimits`):

- ``header_timeout``: from connect (TLS handshake included) to the complete head of the first
  request, and from the first byte of each later request to its complete head; also each write.
  A client that sends half a request line and stalls is closed when it runs out.
- ``idle_timeout``: how long a keep-alive connection may wait for its next request.
- ``max_connections``: at the cap a new connection closes the longest-waiting connection that has
  not sent a complete request (a stalled or idle one) and takes its place, so a flood of stalled
  connections cannot lock out a scrape; when every connection is busy with a request, the new one
  is answered 503 at once.

The request handler is a coroutine (``Handler``); work that takes CPU is sent to a thread pool
by the handler, not run on the loop. h11 does the parsing (request line, headers, framing,
keep-alive); nothing here reads or writes sockets directly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import ssl
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus

import h11

from embserve_server.call_log import HttpRefusals
from embserve_server.config import HttpLimits

logger = logging.getLogger(__name__)

READ_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024  # any method but POST: a request body is never needed


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]  # lower-case names, in order
    body: bytes = b""
    # The Content-Length declared over the body limit: the body was left unread, the handler
    # answers 413 and the connection closes.
    refused_length: int | None = None

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


def _content_length(request: h11.Request) -> int | None:
    """The declared body size (h11 has checked it is one valid number), or None (chunked, none)."""
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)
    return None


def plain(status: int, text: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, "text/plain; charset=utf-8", text.encode("utf-8"), headers or {})


class HttpServer:
    """Serve ``handler`` on one address from a daemon thread running an asyncio loop.

    Args:
        handler: answers one request.
        limits: timeouts and the connection cap.
        ssl_context: serve HTTPS only (None: plaintext).
        busy: the response for a connection over the cap when no connection can make room.
        log_rate: refusal lines (401, 403, 429, 503) per second at most (call_log.py).

    Raises:
        ValueError: a timeout or cap below its minimum.
    """

    def __init__(self, handler: Handler, limits: HttpLimits, *, ssl_context: ssl.SSLContext | None = None,
                 busy: Response | None = None, log_rate: float = 10.0) -> None:
        for name in ("header_timeout", "idle_timeout"):
            if not getattr(limits, name) > 0:
                raise ValueError(f"http {name}: {getattr(limits, name)} must be > 0 seconds")
        if limits.max_connections < 1:
            raise ValueError(f"http max_connections: {limits.max_connections} must be at least 1")
        self.handler = handler
        self.limits = limits
        self.ssl_context = ssl_context
        self.busy = busy or plain(503, "server busy: too many open connections; retry shortly\n", {"Retry-After": "1"})
        self.refusals = HttpRefusals(log_rate)  # 401/403/429/503 lines, rate-limited like gRPC's
        self.port = 0
        # Connections are ended by aborting their transport, never by cancelling their task: the
        # task then finishes by itself (asyncio's stream callback logs a cancelled task as an error).
        self._connections: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}
        self._waiting: dict[asyncio.StreamWriter, None] = {}  # no complete request yet, oldest first
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def connections(self) -> int:
        """Open connections now."""
        return len(self._connections)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, host: str, port: int) -> int:
        """Bind ``host:port`` and serve in a daemon thread; returns the bound port.

        Raises:
            OSError: the address cannot be bound.
        """
        ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(host, port, ready), name="embserve-http", daemon=True)
        self._thread.start()
        self.port = ready.result()
        return self.port

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting, close every connection and end the thread (then the handler's ``close()``, if any)."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
        close_handler = getattr(self.handler, "close", None)
        if callable(close_handler):
            close_handler()  # e.g. the thread pools the handler sends work to

    def _run(self, host: str, port: int, ready: concurrent.futures.Future[int]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(host, port, ready))
        finally:
            loop.close()

    async def _main(self, host: str, port: int, ready: concurrent.futures.Future[int]) -> None:
        self._stop = asyncio.Event()
        try:
            server = await asyncio.start_server(
                self._connection, host, port, ssl=self.ssl_context, backlog=1024,
                ssl_handshake_timeout=self.limits.header_timeout if self.ssl_context is not None else None,
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that called start()
            ready.set_exception(exc)
            return
        ready.set_result(int(server.sockets[0].getsockname()[1]))
        async with server:
            await self._stop.wait()
            server.close()
            tasks = list(self._connections.values())
            for writer in list(self._connections):
                writer.transport.abort()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- one connection -------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # always inside the task asyncio made for this connection
        if len(self._connections) >= self.limits.max_connections and not self._make_room():
            self.refusals.refused("-", "-", self.busy.status, writer.get_extra_info("peername"))
            await self._refuse(writer)
            return
        self._connections[writer] = task
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)
        clean = False
        try:
            first = True
            while True:
                self._waiting[writer] = None
                try:
                    request = await self._read_request(conn, reader, first)
                finally:
                    self._waiting.pop(writer, None)
                if request is None:
                    clean = True
                    break
                response = await self._answer(request)
                self.refusals.refused(request.method, request.path, response.status, writer.get_extra_info("peername"))
                await self._send(conn, writer, response, head_only=request.method == "HEAD")
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    clean = True
                    break
                conn.start_next_cycle()
                first = False
        except h11.RemoteProtocolError as exc:
            clean = await self._protocol_error(conn, writer, exc)  # close gracefully after an answer
        except (TimeoutError, OSError, h11.LocalProtocolError, asyncio.IncompleteReadError):
            pass  # a stalled, vanished or misbehaving client: drop the connection
        finally:
            self._connections.pop(writer, None)
            if clean:
                writer.close()
            else:
                writer.transport.abort()  # release the descriptor now, flush nothing

    def _make_room(self) -> bool:
        """Close the longest-waiting connection that has no request in progress; False if none."""
        for victim in self._waiting:
            del self._waiting[victim]
            self._connections.pop(victim, None)
            victim.transport.abort()  # its read ends; its task closes the rest
            return True
        return False

    async def _refuse(self, writer: asyncio.StreamWriter) -> None:
        r = self.busy
        head = [f"HTTP/1.1 {r.status} {HTTPStatus(r.status).phrase}", f"Content-Type: {r.content_type}",
                f"Content-Length: {len(r.body)}", "Connection: close", *(f"{k}: {v}" for k, v in r.headers.items())]
        writer.write("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + r.body)
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(self.limits.header_timeout):
                await writer.drain()
        writer.transport.abort()

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader, first: bool) -> Request | None:
        """The next complete request, or None when the client closed or stayed idle too long.

        Raises:
            TimeoutError: the head did not arrive within ``header_timeout``.
            h11.RemoteProtocolError: not HTTP/1.1, or a head over ``max_header_bytes``.
        """
        loop = asyncio.get_running_loop()
        limits = self.limits
        started = first  # the header clock runs from connect, or from a later request's first byte
        request: h11.Request | None = None
        body = bytearray()
        body_limit = MAX_BODY_BYTES
        try:
            async with asyncio.timeout(limits.header_timeout if first else limits.idle_timeout) as clock:
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await reader.read(READ_BYTES)
                        if data and not started:
                            started = True
                            clock.reschedule(loop.time() + limits.header_timeout)
                        conn.receive_data(data)
                    elif isinstance(event, h11.Request):
                        # h11 bounds a head that arrives in pieces; one that arrives whole is measured here.
                        size = len(event.method) + len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
                        if size > limits.max_header_bytes:
                            raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
                        request = event
                        body_limit = limits.max_body_bytes if event.method == b"POST" else MAX_BODY_BYTES
                        declared = _content_length(event)
                        if declared is not None and declared > body_limit:
                            return self._request(event, b"", refused_length=declared)  # refused before it is read
                    elif isinstance(event, h11.Data):
                        body += event.data
                        if len(body) > body_limit:
                            raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                        return None
        except TimeoutError:
            if started:
                raise
            return None  # idle keep-alive connection: close quietly
        assert request is not None  # h11 yields Request before EndOfMessage
        return self._request(request, bytes(body))

    @staticmethod
    def _request(request: h11.Request, body: bytes, *, refused_length: int | None = None) -> Request:
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers)
        return Request(request.method.decode("ascii", "replace"), path, query, headers, body, refused_length)

    async def _answer(self, request: Request) -> Response:
        try:
            return await self.handler(request)
        except Exception:  # noqa: BLE001 - a bug in a handler answers 500, the port keeps serving
            logger.exception("HTTP handler failed on %s %s", request.method, request.path)
            return plain(500, "internal error\n")

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, response: Response, *, head_only: bool) -> None:
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("Server", "embserve"),
            *response.headers.items(),
        ]
        data = conn.send(h11.Response(status_code=response.status, headers=headers, reason=HTTPStatus(response.status).phrase))
        if not head_only and response.body:
            data += conn.send(h11.Data(data=response.body))
        data += conn.send(h11.EndOfMessage())
        writer.write(data)
        async with asyncio.timeout(self.limits.header_timeout):
            await writer.drain()

    async def _protocol_error(self, conn: h11.Connection, writer: asyncio.StreamWriter, exc: h11.RemoteProtocolError) -> bool:
        """Tell a client that spoke bad HTTP what was wrong, when the protocol still allows an answer.

        Returns True when the answer was sent.
        """
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE) or writer.transport.is_closing():
            return False  # nothing may be said now, or nobody is listening (e.g. a closed or evicted connection)
        status = exc.error_status_hint
        try:
            await self._send(conn, writer, plain(status, f"bad request: {exc}\n", {"Connection": "close"}), head_only=False)
        except (h11.LocalProtocolError, TimeoutError, OSError):
            return False
        return True

"""The call log and request ids: one line per failed or refused call (every call with ``--log-calls``).

Every unary call gets a request id: the client's ``x-request-id`` metadata when it sends one
(printable ASCII, at most :data:`MAX_REQUEST_ID` characters), else a new random one. It goes
back to the client in the trailing metadata under the same key, whatever the outcome, so a user
can quote it and an operator can find the call's line.

A line carries, as the ``call`` attribute of its ``LogRecord`` (the JSON format of logformat.py
writes them as keys of the line's object; the text format has them in the message): ``method``,
``table``, ``version`` (0: newest), ``code`` (the gRPC status name), ``duration`` (seconds),
``peer``, ``request_id``, and for a failure its ``details``.

Lines of calls that did not end OK (auth and overload refusals from the interceptors, requests over
a limit, unknown keys, bugs) are written at most ``rate`` a second (:class:`RateLimit`), so a flood
of bad calls cannot fill a disk; the next line written says how many were left out
(``suppressed``). Lines of OK calls (``--log-calls``) are not limited: the operator asked for them.
The HTTP port's refusals (401, 403, 429, 503) are logged the same way by :class:`HttpRefusals`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from embserve_server.wrappers import UnaryWrapper, status_name

logger = logging.getLogger(__name__)

REQUEST_ID = "x-request-id"  # metadata key, both directions
MAX_REQUEST_ID = 128
MAX_FIELD = 256  # characters of a method name or details kept in a line
SERVER_ERRORS = frozenset({"INTERNAL", "UNKNOWN", "DATA_LOSS"})


def request_id(metadata: Any) -> str:
    """The client's ``x-request-id`` when it is usable, else a new random id (16 hex digits)."""
    for key, value in metadata or ():
        if key == REQUEST_ID:
            if isinstance(value, str) and 0 < len(value) <= MAX_REQUEST_ID and value.isprintable() and value.isascii():
                return value
            break  # unusable (binary, too long, control characters): make one, do not echo it
    return os.urandom(8).hex()


class RateLimit:
    """At most ``per_second`` events a second (a token bucket holding one second's worth).

    Args:
        per_second: the sustained rate; 0 refuses every event.
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        if per_second < 0:
            raise ValueError(f"--log-rate: {per_second} must be >= 0 lines per second")
        self.per_second = per_second
        self.clock = clock
        self._tokens = max(per_second, 1.0) if per_second > 0 else 0.0
        self._last = clock()
        self._suppressed = 0
        self._lock = threading.Lock()

    def allow(self) -> int | None:
        """None when the event must be left out (it is counted), else how many were left out before it."""
        with self._lock:
            now = self.clock()
            capacity = max(self.per_second, 1.0)
            self._tokens = min(capacity, self._tokens + (now - self._last) * self.per_second)
            self._last = now
            if self._tokens < 1.0:
                self._suppressed += 1
                return None
            self._tokens -= 1.0
            suppressed, self._suppressed = self._suppressed, 0
            return suppressed


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value)[:MAX_FIELD]


class CallLog(UnaryWrapper):
    """Gives each call its request id and logs it (see the module docstring).

    Args:
        every_call: log OK calls too (INFO), not only failed and refused ones.
        rate: failed/refused call lines per second at most.
    """

    def __init__(self, *, every_call: bool = False, rate: float = 10.0) -> None:
        self.every_call = every_call
        self.limit = RateLimit(rate)

    def wrap(self, method: str, handler: Any) -> Any:
        behavior = handler.unary_unary
        name = _text(method.rsplit("/", 1)[-1])
        every_call = self.every_call

        def logged(request: Any, context: grpc.ServicerContext) -> Any:
            t0 = time.perf_counter()
            rid = request_id(context.invocation_metadata())
            context.set_trailing_metadata(((REQUEST_ID, rid),))
            code, response = "UNKNOWN", None
            try:
                response = behavior(request, context)
                code = status_name(context, "OK")
                return response
            except Exception:
                code = status_name(context, "UNKNOWN")
                raise
            finally:
                if code != "OK" or every_call:
                    self._emit(name, request, response, context, code, time.perf_counter() - t0, rid)

        return grpc.unary_unary_rpc_method_handler(
            logged, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )

    refusal = wrap  # an interceptor's refusal handler is logged like a call (unknown method names too)

    def _emit(self, method: str, request: Any, response: Any, context: grpc.ServicerContext, code: str, seconds: float, rid: str) -> None:
        fields: dict[str, Any] = {"method": method}
        if code == "OK":
            level = logging.INFO
        else:
            suppressed = self.limit.allow()
            if suppressed is None:
                return
            level = logging.ERROR if code in SERVER_ERRORS else logging.WARNING
            if suppressed:
                fields["suppressed"] = suppressed
        source = response if response is not None else request  # the answer names the version that served
        fields["table"] = _text(getattr(source, "table", "") or "")
        fields["version"] = int(getattr(source, "version", 0) or 0)
        fields.update(code=code, duration=round(seconds, 6), peer=_text(context.peer()), request_id=rid)
        details = context.details() if code != "OK" else None
        if details:
            fields["details"] = _text(details)
        extra = "".join(f" {k}={fields[k]}" for k in ("details", "suppressed") if k in fields)
        logger.log(level, "%s %s table=%s version=%s %.2f ms peer=%s request_id=%s%s", method, code, fields["table"] or "-",
                   fields["version"], seconds * 1e3, fields["peer"], rid, extra, extra={"call": fields})


HTTP_REFUSALS = frozenset({401, 403, 429, 503})


class HttpRefusals:
    """The HTTP port's refusals (bad or missing token, overload, connection cap), at most ``rate`` lines a second."""

    def __init__(self, rate: float = 10.0) -> None:
        self.limit = RateLimit(rate)

    def refused(self, method: str, path: str, status: int, peer: Any) -> None:
        """Log one refusal (``status`` in :data:`HTTP_REFUSALS`; others are not refusals and are ignored)."""
        if status not in HTTP_REFUSALS:
            return
        suppressed = self.limit.allow()
        if suppressed is None:
            return
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else _text(peer)
        fields: dict[str, Any] = {"method": _text(f"HTTP {method} {path}"), "code": str(status), "peer": where}
        if suppressed:
            fields["suppressed"] = suppressed
        extra = f" suppressed={suppressed}" if suppressed else ""
        logger.warning("%s %d peer=%s%s", fields["method"], status, where, extra, extra={"call": fields})

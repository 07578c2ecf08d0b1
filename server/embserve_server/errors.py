"""Domain exceptions of the server core and the ONE map from them to statuses, for gRPC and HTTP.

The core raises these and knows nothing of gRPC or HTTP. Every exception that ends a call, on
either port, becomes a status here and nowhere else: :func:`grpc_status` gives the gRPC code and
details (``context.abort(*grpc_status(exc))``: call_guard.py for every handler, interceptors.py for
refusals), :func:`http_error` the HTTP status and JSON body (http_port.py, explorer.py). Both shape
the message the same way (:func:`details_for`: bounded, INTERNAL logged and never quoted).

Exception tree::

    LookupError
    ├── UnknownTableError        NOT_FOUND          no such table
    ├── UnknownVersionError      NOT_FOUND          that version of the table is not loaded
    ├── EndpointNotFoundError    NOT_FOUND          an HTTP API path that names no endpoint
    └── KeyError
        └── MissingKeyError      NOT_FOUND          key absent under missing policy "error"
    ValueError                   INVALID_ARGUMENT   bad argument or over a limit
    ├── LimitExceededError       INVALID_ARGUMENT
    └── BundleError              FAILED_PRECONDITION / DATA_LOSS (ChecksumError)
    TableUnavailableError        UNAVAILABLE        nothing loaded yet, or draining
    FailedPreconditionError      FAILED_PRECONDITION table lacks what the call needs (tokenizer, subwords)
    OverloadedError              RESOURCE_EXHAUSTED too many concurrent calls (admission.py)
    DeadlinePassedError          DEADLINE_EXCEEDED  the caller gave up while the call was queued
    ConnectionLimitError         UNAVAILABLE        the HTTP port holds its maximum of connections
    AuthError                    UNAUTHENTICATED / PERMISSION_DENIED   (auth.py)
    anything else                INTERNAL           a bug
"""

from __future__ import annotations

import logging

import grpc
from embserve_format.bundle import BundleError, ChecksumError

logger = logging.getLogger(__name__)

MAX_DETAILS = 1_000  # characters of an error message (grpc's metadata limit is 8 KiB by default)

# gRPC status -> HTTP status, as Google's APIs map them (google/rpc/code.proto).
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class UnknownTableError(LookupError):
    def __init__(self, name: str, available: list[str]) -> None:
        self.name = name
        shown = ", ".join(available[:20]) or "none loaded"
        super().__init__(f"table {name!r} not found; available tables: {shown}")

    def __str__(self) -> str:
        return str(self.args[0])


class UnknownVersionError(LookupError):
    def __init__(self, name: str, version: int, loaded: list[int]) -> None:
        self.name = name
        self.version = version
        shown = ", ".join(map(str, loaded)) or "none"
        super().__init__(f"table {name!r} version {version} is not loaded; loaded versions: {shown} (the server keeps the newest --keep-versions)")

    def __str__(self) -> str:
        return str(self.args[0])


class EndpointNotFoundError(LookupError):
    """A path under the HTTP port's /api/ that names no endpoint."""


class MissingKeyError(KeyError):
    """A key that is not in the table (gensim: ``KeyError: "Key 'x' not present"``)."""

    def __init__(self, key: str, table: str) -> None:
        self.key = key
        self.table = table
        super().__init__(f"Key {key!r} not present in table {table!r}")

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message again
        return str(self.args[0])


class LimitExceededError(ValueError):
    """A request over a configured limit; the message names the field, the value and the limit."""


class TableUnavailableError(Exception):
    """No table can answer now (still loading, or draining)."""


class FailedPreconditionError(Exception):
    """The table cannot answer this kind of call (e.g. it carries no tokenizer)."""


class OverloadedError(Exception):
    """More concurrent calls than the server admits (the caller retries with backoff)."""


class DeadlinePassedError(Exception):
    """The call's deadline passed before a worker picked it up (the work is not done)."""


class ConnectionLimitError(Exception):
    """More open HTTP connections than the port accepts (try again shortly, or another replica)."""


class AuthError(Exception):
    """No, or an unknown, bearer token; or a token whose role does not allow the call (``denied``)."""

    def __init__(self, message: str, *, denied: bool = False) -> None:
        super().__init__(message)
        self.denied = denied  # True: authenticated but not allowed (PERMISSION_DENIED)


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status code for an exception raised by the core."""
    if isinstance(exc, (MissingKeyError, UnknownTableError, UnknownVersionError, EndpointNotFoundError)):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, ChecksumError):
        return grpc.StatusCode.DATA_LOSS
    if isinstance(exc, BundleError):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(exc, ValueError):  # includes LimitExceededError and UnicodeError
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, TableUnavailableError):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, FailedPreconditionError):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(exc, OverloadedError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, DeadlinePassedError):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if isinstance(exc, ConnectionLimitError):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, AuthError):
        return grpc.StatusCode.PERMISSION_DENIED if exc.denied else grpc.StatusCode.UNAUTHENTICATED
    return grpc.StatusCode.INTERNAL


def details_for(exc: BaseException, code: grpc.StatusCode) -> str:
    """The message a caller sees: the exception's own, bounded; a bug is logged and only named."""
    if code == grpc.StatusCode.INTERNAL:
        logger.error("internal error: %s", type(exc).__name__, exc_info=exc)
        return f"internal error: {type(exc).__name__}"
    message = str(exc)  # bounded: a message quotes request values (table names are not length-checked)
    if len(message) > MAX_DETAILS:  # keep both ends: the value quoted first, the reason after it
        message = message[: MAX_DETAILS // 2] + " … " + message[-(MAX_DETAILS // 2 - 3) :]
    return message


def grpc_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """(code, details) for ``context.abort``: the one exception -> gRPC status step."""
    code = status_for(exc)
    return code, details_for(exc, code)


def http_error(exc: BaseException) -> tuple[int, dict[str, str]]:
    """(HTTP status, JSON body ``{"error": message, "code": gRPC code name}``) for the HTTP port."""
    code = status_for(exc)
    return HTTP_STATUS.get(code, 500), {"error": details_for(exc, code), "code": code.name}

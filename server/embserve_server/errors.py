"""Domain exceptions of the server core and the ONE map from them to gRPC status codes.

Exception tree (core raises these; only :func:`status_for` knows about gRPC; the HTTP port turns
the gRPC code into an HTTP status with ``explorer.HTTP_STATUS``)::

    LookupError
    ├── UnknownTableError        NOT_FOUND          no such table
    ├── UnknownVersionError      NOT_FOUND          that version of the table is not loaded
    └── KeyError
        └── UnknownKeyError      NOT_FOUND          key absent under missing policy "error"
    ValueError                   INVALID_ARGUMENT   bad argument or over a limit
    ├── LimitExceededError       INVALID_ARGUMENT
    └── BundleError              FAILED_PRECONDITION / DATA_LOSS (ChecksumError)
    TableUnavailableError        UNAVAILABLE        nothing loaded yet, or draining
    FailedPreconditionError      FAILED_PRECONDITION table lacks what the call needs (tokenizer, subwords)
    OverloadedError              RESOURCE_EXHAUSTED too many concurrent calls (admission.py)
    ConnectionLimitError         UNAVAILABLE        the HTTP port holds its maximum of connections
    AuthError                    UNAUTHENTICATED / PERMISSION_DENIED   (auth.py)
    anything else                INTERNAL           a bug
"""

from __future__ import annotations

import grpc
from embserve_format.bundle import BundleError, ChecksumError


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


class UnknownKeyError(KeyError):
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


class ConnectionLimitError(Exception):
    """More open HTTP connections than the port accepts (try again shortly, or another replica)."""


class AuthError(Exception):
    """No, or an unknown, bearer token; or a token whose role does not allow the call (``denied``)."""

    def __init__(self, message: str, *, denied: bool = False) -> None:
        super().__init__(message)
        self.denied = denied  # True: authenticated but not allowed (PERMISSION_DENIED)


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status code for an exception raised by the core."""
    if isinstance(exc, (UnknownKeyError, UnknownTableError, UnknownVersionError)):
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
    if isinstance(exc, ConnectionLimitError):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, AuthError):
        return grpc.StatusCode.PERMISSION_DENIED if exc.denied else grpc.StatusCode.UNAUTHENTICATED
    return grpc.StatusCode.INTERNAL

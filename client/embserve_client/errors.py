"""Client exceptions: every ``grpc.RpcError`` becomes one of these (``raise ... from exc``).

::

    EmbserveError                      base of everything this client raises
    ├── InvalidArgumentError(ValueError)   INVALID_ARGUMENT, OUT_OF_RANGE
    ├── NotFoundError(LookupError)         NOT_FOUND
    │   ├── UnknownTableError              table not served
    │   └── UnknownKeyError(KeyError)      key not in the table (policy "error")
    ├── FailedPreconditionError            FAILED_PRECONDITION (e.g. table has no tokenizer)
    ├── UnavailableError                   UNAVAILABLE (not loaded yet, draining, unreachable)
    ├── OverloadedError                    RESOURCE_EXHAUSTED
    ├── DeadlineExceededError(TimeoutError) DEADLINE_EXCEEDED
    ├── AuthenticationError                UNAUTHENTICATED
    ├── PermissionDeniedError              PERMISSION_DENIED
    ├── DataLossError                      DATA_LOSS
    └── ServerError                        INTERNAL, UNKNOWN and anything else
    ClientClosedError(RuntimeError)        a closed client was used again
"""

from __future__ import annotations

import grpc


class EmbserveError(Exception):
    """Base class; ``code`` is the gRPC status code (None for client-side errors), ``request_id`` the
    id the server logged the call under (its ``x-request-id`` trailing metadata; None when absent)."""

    code: grpc.StatusCode | None = None
    request_id: str | None = None

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None, request_id: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.request_id = request_id

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidArgumentError(EmbserveError, ValueError):
    pass


class NotFoundError(EmbserveError, LookupError):
    pass


class UnknownTableError(NotFoundError):
    pass


class UnknownKeyError(NotFoundError, KeyError):
    pass


class FailedPreconditionError(EmbserveError):
    pass


class UnavailableError(EmbserveError):
    pass


class OverloadedError(EmbserveError):
    pass


class DeadlineExceededError(EmbserveError, TimeoutError):
    pass


class AuthenticationError(EmbserveError):
    pass


class PermissionDeniedError(EmbserveError):
    pass


class DataLossError(EmbserveError):
    pass


class ServerError(EmbserveError):
    pass


class ClientClosedError(RuntimeError):
    pass


_BY_CODE: dict[grpc.StatusCode, type[EmbserveError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: OverloadedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.DATA_LOSS: DataLossError,
}


def from_rpc_error(exc: grpc.RpcError) -> EmbserveError:
    """The client exception for a failed call (details kept as the message)."""
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    cls = _BY_CODE.get(code, ServerError) if code is not None else ServerError
    if cls is NotFoundError:
        cls = UnknownKeyError if details.startswith("Key ") else UnknownTableError
    return cls(f"{code.name if code else 'ERROR'}: {details}", code=code, request_id=_request_id(exc))


REQUEST_ID = "x-request-id"  # the server's call log names each call by it (both directions)


def _request_id(exc: grpc.RpcError) -> str | None:
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == REQUEST_ID and isinstance(value, str):
            return value
    return None

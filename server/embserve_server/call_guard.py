"""CallGuard: the wrapper around every unary handler that turns whatever ends a call into its status.

Applied to every unary method at registration (wrappers.py)::

    undecodable request bytes (e.g. invalid UTF-8 in a string field) -> INVALID_ARGUMENT instead
        of grpc's INTERNAL
    deadline already passed when a worker picks the call up -> DEADLINE_EXCEEDED without doing the work
    any exception the handler raises -> its status, through the one map (errors.grpc_status)
    a response over the message limit -> INVALID_ARGUMENT (not an opaque transport error that the
        client would retry)

Every refusal is a domain exception (``ValueError``, ``LimitExceededError``, ``DeadlinePassedError``)
given its code and message by :func:`embserve_server.errors.grpc_status`, like the handlers' own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from embserve_server.errors import DeadlinePassedError, LimitExceededError, grpc_status
from embserve_server.wrappers import UnaryWrapper


class _Undecodable:
    """Stands in for a request whose bytes do not parse; the guard answers INVALID_ARGUMENT."""

    __slots__ = ("error",)

    def __init__(self, error: ValueError) -> None:
        self.error = error


def _safe_deserializer(deserialize: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
    message_type = getattr(getattr(deserialize, "__self__", None), "__name__", f"{method} request")

    def safe(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and anything a parser raises
            return _Undecodable(ValueError(f"request: {len(raw)} bytes are not a valid {message_type} ({exc})"))

    return safe


class CallGuard(UnaryWrapper):
    """Statuses for exceptions, undecodable requests and over-limit responses; skip expired calls."""

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes

    def applies(self, handler: Any) -> bool:
        return handler.unary_unary is not None and handler.request_deserializer is not None

    def wrap(self, name: str, handler: Any) -> Any:
        behavior = handler.unary_unary
        limit = self.max_message_bytes

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                if isinstance(request, _Undecodable):
                    raise request.error
                remaining = context.time_remaining()
                if remaining is not None and remaining <= 0:
                    # The caller has given up while the call waited in the queue: do not do the work.
                    raise DeadlinePassedError("deadline passed before the call was handled")
                response = behavior(request, context)
                size = response.ByteSize() if hasattr(response, "ByteSize") else 0
                if size > limit:
                    raise LimitExceededError(
                        f"response: {size} bytes is over the limit of {limit} (--max-message-bytes); ask for fewer rows per call"
                    )
                return response
            except Exception as exc:  # noqa: BLE001 - the one exception -> status boundary of the gRPC port
                if context.code() is not None:
                    raise  # the handler set its own status (context.abort): keep it
                context.abort(*grpc_status(exc))

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=_safe_deserializer(handler.request_deserializer, name.rsplit("/", 1)[-1]),
            response_serializer=handler.response_serializer,
        )

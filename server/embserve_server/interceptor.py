"""The shape every embserve server interceptor shares: wrap a method's unary handler, once.

grpc calls ``intercept_service`` for every RPC and hands out the same inner handler object for
every call of a method, so a subclass's wrapper is built on the first call and reused after.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc


class UnaryWrapper(grpc.ServerInterceptor):
    """Base class: subclasses implement :meth:`wrap` (and may narrow :meth:`applies`)."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Any, Any]] = {}  # full method -> (inner handler, wrapped)

    def applies(self, handler: grpc.RpcMethodHandler) -> bool:
        return handler.unary_unary is not None

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """A handler that runs ``handler`` for the short method name ``method``."""
        raise NotImplementedError

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or not self.applies(handler):
            return handler
        full = handler_call_details.method
        cached = self._wrapped.get(full)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap(full.rsplit("/", 1)[-1], handler)
        self._wrapped[full] = (handler, wrapped)  # bounded: only registered methods get here
        return wrapped

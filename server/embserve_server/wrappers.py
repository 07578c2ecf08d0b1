"""Per-method handler wrappers (metrics, safe decoding), applied once when a servicer is registered.

grpc's server interceptors run on its single polling thread for every call, before the call is
queued (a Python pipeline per call: ~15-30 us of that thread's time in a busy server). The
wrappers here need nothing from the call's metadata, so they are applied to the method handlers
themselves, once, at registration: a call then pays only for the wrapper code it runs.

    add_servicer(server, pb_grpc.add_EmbeddingServiceServicer_to_server, servicer, [metrics, decode])

Interceptors remain for what must decide before a handler is chosen (auth, admission: interceptors.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc


class UnaryWrapper:
    """Base class: subclasses implement :meth:`wrap` (and may narrow :meth:`applies`)."""

    def applies(self, handler: grpc.RpcMethodHandler) -> bool:
        return handler.unary_unary is not None

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """A handler that runs ``handler`` for ``method`` (full name, ``/package.Service/Method``)."""
        raise NotImplementedError


def wrap_handler(method: str, handler: Any, wrappers: Sequence[UnaryWrapper]) -> Any:
    """``handler`` inside every applicable wrapper; ``wrappers`` are listed outermost first."""
    for wrapper in reversed(wrappers):
        if wrapper.applies(handler):
            handler = wrapper.wrap(method, handler)
    return handler


class _Registrations:
    """Stands in for the grpc server while generated ``add_*_to_server`` code registers handlers."""

    def __init__(self) -> None:
        self.services: list[tuple[str, dict[str, Any]]] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # the same handlers also arrive through add_registered_method_handlers

    def add_registered_method_handlers(self, service: str, method_handlers: dict[str, Any]) -> None:
        self.services.append((service, method_handlers))


def add_servicer(
    server: grpc.Server,
    add_to_server: Callable[[Any, Any], None],
    servicer: Any,
    wrappers: Sequence[UnaryWrapper],
) -> None:
    """Register ``servicer`` through its generated ``add_to_server`` with every handler wrapped.

    Raises:
        ValueError: ``add_to_server`` registered nothing (generated code older than grpcio 1.62).
    """
    captured = _Registrations()
    add_to_server(servicer, captured)
    if not captured.services:
        raise ValueError(f"{getattr(add_to_server, '__name__', add_to_server)!r} registered no method handlers")
    for service, handlers in captured.services:
        wrapped = {name: wrap_handler(f"/{service}/{name}", handler, wrappers) for name, handler in handlers.items()}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, wrapped),))
        server.add_registered_method_handlers(service, wrapped)

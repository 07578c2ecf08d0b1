"""Per-method handler wrappers (metrics, the call guard), applied once when a servicer is registered.

    add_servicer(server, pb.DESCRIPTOR.services_by_name["EmbeddingService"], servicer, [metrics, guard])

builds each method's handler from the service's descriptor (what grpc's generated
``add_*_to_server`` does), wraps every unary one in the wrappers, outermost first, and registers
the result both ways grpc looks handlers up (registered methods and the generic handler).

Why two mechanisms for cross-cutting work, wrappers here and interceptors (interceptors.py):
grpc runs server interceptors on its single polling thread for every call, before the call is
queued (a Python pipeline per call: ~15-30 us of that thread in a busy server), while a wrapper
costs a call only the code it runs, on the worker thread. So everything that needs no decision
before queueing is a wrapper; only auth and admission, which must refuse a call before it takes a
place in the queue, are interceptors, and they are installed only when configured.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import methodcaller
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass

serialize = methodcaller("SerializeToString")  # every response: a message, or pack.Encoded's bytes as they are

_HANDLER_KINDS = {  # (client streaming, server streaming) -> grpc's handler factory
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


class UnaryWrapper:
    """Base class: subclasses implement :meth:`wrap` (and may narrow :meth:`applies`)."""

    def applies(self, handler: grpc.RpcMethodHandler) -> bool:
        return handler.unary_unary is not None

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """A handler that runs ``handler`` for ``method`` (full name, ``/package.Service/Method``)."""
        raise NotImplementedError


def status_name(context: grpc.ServicerContext, default: str) -> str:
    """The status a handler set on ``context`` (its name), else ``default``: "OK" for a call that
    returned, "UNKNOWN" for one that raised. The one reading of a call's outcome for the wrappers."""
    code = context.code()
    return code.name if code is not None else default


def wrap_handler(method: str, handler: Any, wrappers: Sequence[UnaryWrapper]) -> Any:
    """``handler`` inside every applicable wrapper; ``wrappers`` are listed outermost first."""
    for wrapper in reversed(wrappers):
        if wrapper.applies(handler):
            handler = wrapper.wrap(method, handler)
    return handler


def method_handlers(service: ServiceDescriptor, servicer: Any) -> dict[str, grpc.RpcMethodHandler]:
    """Method name -> handler calling ``servicer``'s method of that name, with the messages' (de)serializers."""
    return {
        m.name: _HANDLER_KINDS[(m.client_streaming, m.server_streaming)](
            getattr(servicer, m.name),
            request_deserializer=GetMessageClass(m.input_type).FromString,
            response_serializer=serialize,
        )
        for m in service.methods
    }


def add_servicer(server: grpc.Server, service: ServiceDescriptor, servicer: Any, wrappers: Sequence[UnaryWrapper]) -> None:
    """Register ``servicer`` as ``service`` with every unary handler wrapped.

    Raises:
        ValueError: the service defines no method.
    """
    if not service.methods:
        raise ValueError(f"service {service.full_name!r} defines no method")
    wrapped = {name: wrap_handler(f"/{service.full_name}/{name}", h, wrappers) for name, h in method_handlers(service, servicer).items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, wrapped),))
    server.add_registered_method_handlers(service.full_name, wrapped)

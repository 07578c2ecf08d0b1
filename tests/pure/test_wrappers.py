"""Handler wrappers are applied once, at registration, and still see every call of every method."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from embserve_client.pb import embserve_pb2 as pb
from embserve_client.pb import embserve_pb2_grpc as pb_grpc
from embserve_server.app import EMBEDDING_SERVICE, METHODS
from embserve_server.call_guard import CallGuard
from embserve_server.metrics import MetricsWrapper, ServerMetrics
from embserve_server.wrappers import UnaryWrapper, add_servicer, wrap_handler
from prometheus_client import CollectorRegistry


class Recorder:
    """Collects what add_servicer registers on the real server."""

    def __init__(self) -> None:
        self.generic: list[Any] = []
        self.registered: dict[str, dict[str, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.registered[service] = handlers


class Tag(UnaryWrapper):
    def __init__(self, tag: str) -> None:
        self.tag = tag

    def wrap(self, method: str, handler: Any) -> Any:
        inner = handler.unary_unary
        return grpc.unary_unary_rpc_method_handler(
            lambda request, context: [self.tag, method, *inner(request, context)],
            request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer,
        )


def test_every_unary_method_is_wrapped_once_in_order_and_registered_both_ways() -> None:
    class Servicer(pb_grpc.EmbeddingServiceServicer):
        def Lookup(self, request: Any, context: Any) -> list[str]:
            return ["lookup"]

    server = Recorder()
    add_servicer(server, EMBEDDING_SERVICE, Servicer(), [Tag("outer"), Tag("inner")])  # type: ignore[arg-type]
    handlers = server.registered["embserve.v1.EmbeddingService"]
    assert {"Lookup", "Search", "Similarity", "ListTables"} <= set(handlers)
    method = "/embserve.v1.EmbeddingService/Lookup"
    assert handlers["Lookup"].unary_unary(None, None) == ["outer", method, "inner", method, "lookup"]
    # the (de)serializers are the messages' own, as grpc's generated registration would set them
    assert handlers["Lookup"].request_deserializer(pb.LookupRequest(keys=["a"]).SerializeToString()) == pb.LookupRequest(keys=["a"])
    assert handlers["Lookup"].response_serializer(pb.LookupResponse(rows=2)) == pb.LookupResponse(rows=2).SerializeToString()
    # the generic handler (used for unregistered lookups) serves the very same wrapped handler
    (generic,) = server.generic
    assert generic.service(SimpleNamespace(method=method)) is handlers["Lookup"]


def test_a_stream_handler_is_left_alone_and_empty_registration_is_refused() -> None:
    stream = grpc.unary_stream_rpc_method_handler(lambda request, context: iter(()))
    assert wrap_handler("/s/Watch", stream, [Tag("t")]) is stream
    empty = SimpleNamespace(methods=[], full_name="made.up.Empty")
    with pytest.raises(ValueError, match="defines no method"):
        add_servicer(Recorder(), empty, object(), [Tag("t")])  # type: ignore[arg-type]


def test_refusals_are_counted_only_for_registered_methods() -> None:
    metrics = ServerMetrics(CollectorRegistry(), METHODS)
    timed = MetricsWrapper(metrics)
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: b"", request_deserializer=bytes, response_serializer=bytes)
    timed.wrap("/embserve.v1.EmbeddingService/Lookup", handler)
    refusal = grpc.unary_unary_rpc_method_handler(lambda request, context: None)
    assert timed.refusal("/embserve.v1.EmbeddingService/Lookup", refusal) is not refusal
    assert timed.refusal("/made.up.Service/Lookup", refusal) is refusal  # no series for invented names
    guard = CallGuard(1 << 20)
    assert guard.applies(handler) and not guard.applies(refusal)  # nothing to decode in a refusal

"""The interceptors wrap each method's handler once and reuse it, and still see every call."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
from embserve_server.app import METHODS
from embserve_server.guard import DecodeInterceptor
from embserve_server.metrics import MetricsInterceptor, ServerMetrics
from prometheus_client import CollectorRegistry


def test_wrappers_are_built_once_per_handler() -> None:
    inner = grpc.unary_unary_rpc_method_handler(lambda request, context: request, request_deserializer=bytes, response_serializer=bytes)
    other = grpc.unary_unary_rpc_method_handler(lambda request, context: request, request_deserializer=bytes, response_serializer=bytes)
    details = SimpleNamespace(method="/embserve.v1.EmbeddingService/Lookup")
    for interceptor in (MetricsInterceptor(ServerMetrics(CollectorRegistry(), METHODS)), DecodeInterceptor(1 << 20)):
        first = interceptor.intercept_service(lambda d: inner, details)
        assert first is not inner and first.unary_unary is not inner.unary_unary
        assert interceptor.intercept_service(lambda d: inner, details) is first
        # a different inner handler (e.g. a per-call refusal from the auth interceptor) is wrapped anew
        assert interceptor.intercept_service(lambda d: other, details) is not first
        assert interceptor.intercept_service(lambda d: None, details) is None

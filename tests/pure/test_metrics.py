"""The metrics wrapper records calls in plain Python; the Prometheus metrics show them whenever they are read.

A call is recorded on the handler's thread and added to the metrics by ``ServerMetrics.flush``: first
thing whenever the registry is collected, and on the spot when ``MAX_PENDING`` calls wait.
"""

from __future__ import annotations

import threading
from concurrent import futures
from types import SimpleNamespace
from typing import Any

import grpc
from embserve_server import metrics as m
from embserve_server.app import METHODS
from embserve_server.metrics import MetricsWrapper, ServerMetrics
from prometheus_client import CollectorRegistry, generate_latest

LOOKUP = "/embserve.v1.EmbeddingService/Lookup"


class Context:
    def __init__(self, code: grpc.StatusCode | None = None) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode | None:
        return self._code


def wrapped(metrics: ServerMetrics, behavior: Any, method: str = LOOKUP) -> Any:
    handler = grpc.unary_unary_rpc_method_handler(behavior, request_deserializer=bytes, response_serializer=bytes)
    return MetricsWrapper(metrics).wrap(method, handler).unary_unary


def test_a_call_shows_in_flight_then_counted_at_the_next_read() -> None:
    metrics = ServerMetrics(CollectorRegistry(), METHODS)
    value = metrics.registry.get_sample_value
    entered, release = threading.Event(), threading.Event()

    def slow(request: Any, context: Any) -> Any:
        entered.set()
        assert release.wait(30)
        return SimpleNamespace(found=b"\x01\x00\x01\x00", table="t")  # four keys, two missing

    call = wrapped(metrics, slow)
    with futures.ThreadPoolExecutor(1) as pool:
        done = pool.submit(call, b"", Context())
        assert entered.wait(30)
        assert value("embserve_in_flight_requests") == 1.0
        assert value("embserve_requests_total", {"method": "Lookup", "code": "OK"}) == 0.0
        release.set()
        done.result(timeout=30)
    assert value("embserve_in_flight_requests") == 0.0
    assert value("embserve_requests_total", {"method": "Lookup", "code": "OK"}) == 1.0
    assert value("embserve_request_duration_seconds_count", {"method": "Lookup"}) == 1.0
    assert value("embserve_lookup_keys_sum") == 4.0 and value("embserve_lookup_keys_count") == 1.0
    assert value("embserve_missing_keys_total", {"table": "t"}) == 2.0
    assert b'embserve_requests_total{code="OK",method="Lookup"} 1.0' in generate_latest(metrics.registry)  # a scrape reads the same


def test_failed_calls_are_counted_by_their_status() -> None:
    metrics = ServerMetrics(CollectorRegistry(), METHODS)

    def refused(request: Any, context: Any) -> Any:
        raise ValueError("bad request")

    call = wrapped(metrics, refused, "/embserve.v1.EmbeddingService/Search")
    for context in (Context(grpc.StatusCode.INVALID_ARGUMENT), Context()):
        try:
            call(b"", context)
        except ValueError:
            pass
    value = metrics.registry.get_sample_value
    assert value("embserve_requests_total", {"method": "Search", "code": "INVALID_ARGUMENT"}) == 1.0
    assert value("embserve_requests_total", {"method": "Search", "code": "UNKNOWN"}) == 1.0  # raised, no status set
    assert value("embserve_search_queries_count") == 0.0  # sizes only of calls that answered
    assert value("embserve_in_flight_requests") == 0.0


def test_waiting_calls_are_bounded_without_a_reader() -> None:
    """No scrape and no serving loop: the calls still reach the metrics, at most MAX_PENDING wait."""
    metrics = ServerMetrics(CollectorRegistry(), METHODS)
    call = wrapped(metrics, lambda request, context: SimpleNamespace(found=b"\x01", table="t"))
    for _ in range(m.MAX_PENDING + 10):
        call(b"", Context())
        assert len(metrics.pending) < m.MAX_PENDING
    assert len(metrics.pending) == 10

    def counted() -> float:  # the metric's own samples: collecting it alone does not flush
        (family,) = metrics.requests.collect()
        return next(s.value for s in family.samples if s.name.endswith("_total") and s.labels == {"method": "Lookup", "code": "OK"})

    assert counted() == m.MAX_PENDING  # flushed on the spot, before any read
    metrics.flush()
    assert counted() == m.MAX_PENDING + 10 and not metrics.pending

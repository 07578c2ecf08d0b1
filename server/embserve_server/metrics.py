"""Prometheus metrics: defined once against an injected registry, recorded by one handler wrapper.

All names share the ``embserve_`` prefix and use base units. Labels carry only bounded values
(method, status code, table name, outcome), never keys or free text; every label set that is
known at start-up is initialised so series exist (at 0) before the first request.

The wrapper records each call in plain Python (a tuple on a deque, a number from a counter) and
:meth:`ServerMetrics.flush` adds the calls to the Prometheus metrics later: first thing whenever the
registry is collected (a scrape, ``get_sample_value``), every second in the serving loop
(app.run_worker: the worker processes of ``--workers``, whose metrics the parent reads from files), and when
:data:`MAX_PENDING` calls wait. Why: every prometheus-client update takes a lock and runs its own
Python, ~5-8 us each with the cold CPU caches a busy server runs every call in; the five updates
of a call cost ~14 us of a single-key Lookup's ~60 us (measured in docs/performance-lookup.md).
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from embserve_server import __version__
from embserve_server.registry import ReloadOutcome
from embserve_server.tables import Table
from embserve_server.wrappers import UnaryWrapper, status_name

PREFIX = "embserve"
# ~100 µs .. 2.5 s: a cached single-key lookup is a few hundred µs, an exact batch seconds.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)
CODES = tuple(c.name for c in grpc.StatusCode)
RELOAD_OUTCOMES = ("loaded", "unchanged", "refused")
MAX_PENDING = 4096  # calls recorded but not yet added to the metrics; one more flushes them on the spot

# A recorded call: its status counter, its latency histogram, seconds, and its payload sizes
# (the size histogram, the size, the table and its missing keys) or None.
Call = tuple[Any, Any, float, "tuple[Any, int, str, int] | None"]


class _FlushFirst:
    """A collector that collects nothing: it adds the recorded calls to the metrics before the
    others are collected (a registry collects its collectors in the order they were registered)."""

    def __init__(self, flush: Callable[[], None]) -> None:
        self.flush = flush

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        self.flush()
        return iter(())


class ServerMetrics:
    """Every server metric. ``methods`` are the short RPC names whose series are pre-created."""

    def __init__(self, registry: CollectorRegistry, methods: Iterable[str] = ()) -> None:
        self.registry = registry
        self.pending: collections.deque[Call] = collections.deque()  # append and popleft are atomic
        self.started = itertools.count()  # next() on every call: one atomic step, no lock
        self._reads = 0  # numbers flush() took from ``started`` itself
        self._finished = 0  # calls added to the metrics
        self._flush_lock = threading.Lock()
        registry.register(_FlushFirst(self.flush))  # before every metric below
        self.requests = Counter(f"{PREFIX}_requests", "RPCs handled, by method and status code", ["method", "code"], registry=registry)
        self.latency = Histogram(
            f"{PREFIX}_request_duration_seconds", "RPC handling time", ["method"], buckets=LATENCY_BUCKETS, registry=registry
        )
        self.lookup_keys = Histogram(f"{PREFIX}_lookup_keys", "Keys or ids per Lookup call", buckets=SIZE_BUCKETS, registry=registry)
        self.search_queries = Histogram(f"{PREFIX}_search_queries", "Queries per Search call", buckets=SIZE_BUCKETS, registry=registry)
        self.missing_keys = Counter(f"{PREFIX}_missing_keys", "Requested keys not in the table", ["table"], registry=registry)
        self.in_flight = Gauge(f"{PREFIX}_in_flight_requests", "RPCs being handled now", registry=registry, multiprocess_mode="livesum")
        self.table_version = Gauge(f"{PREFIX}_table_version", "Serving version of each table", ["table"], registry=registry, multiprocess_mode="max")
        self.table_rows = Gauge(f"{PREFIX}_table_rows", "Rows of the serving version", ["table"], registry=registry, multiprocess_mode="max")
        self.table_dims = Gauge(f"{PREFIX}_table_dimensions", "Vector size of the serving version", ["table"], registry=registry, multiprocess_mode="max")
        self.table_bytes = Gauge(
            f"{PREFIX}_table_bytes", "Bytes of the serving version by part (rows, index, keys, extras)", ["table", "part"], registry=registry, multiprocess_mode="max"
        )
        self.table_load = Gauge(
            f"{PREFIX}_table_load_seconds", "Seconds to load, validate and warm the serving version", ["table"], registry=registry, multiprocess_mode="max"
        )
        self.reloads = Counter(f"{PREFIX}_reloads", "Table load attempts by outcome", ["table", "outcome"], registry=registry)
        self.memory_refusals = Counter(
            f"{PREFIX}_memory_refusals", "Table versions not loaded because the process would pass --memory-limit", ["table"], registry=registry
        )
        self.memory_limit = Gauge(
            f"{PREFIX}_memory_limit_bytes", "The memory limit table loads are checked against (0: none)", registry=registry, multiprocess_mode="max"
        )
        self.http_requests = Counter(
            f"{PREFIX}_http_requests", "HTTP API requests (/v1/*), by route and HTTP status", ["route", "status"], registry=registry
        )
        self.http_latency = Histogram(
            f"{PREFIX}_http_request_duration_seconds", "HTTP API handling time", ["route"], buckets=LATENCY_BUCKETS, registry=registry
        )
        self.rejected = Counter(f"{PREFIX}_rejected_requests", "RPCs refused before handling", ["reason"], registry=registry)
        self.credential_reloads = Counter(
            f"{PREFIX}_credential_reloads", "Re-reads of changed TLS and token files (rotation.py), by result", ["what", "result"], registry=registry
        )
        # A gauge, not an Info: Info does not work in prometheus-client's multiprocess mode.
        self.build = Gauge(f"{PREFIX}_build_info", "Server build information", ["version"], registry=registry, multiprocess_mode="max")
        self.build.labels(__version__).set(1)
        self._children: dict[str, tuple[dict[str, Any], Any]] = {}
        for method in methods:
            self._method(method)
        for reason in ("overload", "unauthenticated", "permission_denied"):
            self.rejected.labels(reason)
        for what in ("tls", "tokens"):
            for result in ("ok", "error"):
                self.credential_reloads.labels(what, result)

    def _method(self, method: str) -> tuple[dict[str, Any], Any]:
        """Cached label children of one method (label lookups cost more than the increments)."""
        children = self._children.get(method)
        if children is None:
            children = ({code: self.requests.labels(method, code) for code in CODES}, self.latency.labels(method))
            self._children[method] = children
        return children

    def record(self, call: Call) -> None:
        """A finished call, added to the metrics at the next :meth:`flush`."""
        pending = self.pending
        pending.append(call)
        if len(pending) >= MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        """Add every recorded call to the metrics and set the in-flight gauge."""
        with self._flush_lock:
            pending, finished = self.pending, 0
            while pending:
                counter, latency, seconds, payload = pending.popleft()
                counter.inc()
                latency.observe(seconds)
                if payload is not None:
                    histogram, size, table, missing = payload
                    histogram.observe(size)
                    if missing:
                        self.missing_keys.labels(table).inc(missing)
                finished += 1
            self._finished += finished
            # Started calls: the count's next number, less the numbers taken here (one a flush).
            self._reads += 1
            self.in_flight.set(next(self.started) + 1 - self._reads - self._finished)

    def observe_http(self, route: str, status: int, seconds: float) -> None:
        """One answered HTTP API request (routes are a fixed set: openai_api's)."""
        self.http_requests.labels(route, str(status)).inc()
        self.http_latency.labels(route).observe(seconds)

    def table_changed(self, table: Table | None, outcome: ReloadOutcome) -> None:
        """Registry callback: count the reload outcome and publish the serving table's gauges."""
        for o in RELOAD_OUTCOMES:
            self.reloads.labels(outcome.table, o)
        self.reloads.labels(outcome.table, outcome.outcome).inc()
        self.memory_refusals.labels(outcome.table)
        if outcome.reason == "memory":
            self.memory_refusals.labels(outcome.table).inc()
        self.missing_keys.labels(outcome.table)
        if table is not None:
            self.publish_table(table)

    def publish_table(self, table: Table) -> None:
        """Set the gauges of the version now serving ``table.name``."""
        self.table_version.labels(table.name).set(table.version)
        self.table_rows.labels(table.name).set(table.count)
        self.table_dims.labels(table.name).set(table.dim)
        for part, size in table.memory_parts.items():
            self.table_bytes.labels(table.name, part).set(size)
        self.table_load.labels(table.name).set(table.load_seconds)


def _payload_sizes(metrics: ServerMetrics, method: str) -> Callable[[Any, Any], tuple[Any, int, str, int]] | None:
    """Per-method sizes taken from the messages themselves (keys per lookup, missing keys...)."""
    if method == "Lookup":
        keys = metrics.lookup_keys

        def lookup_sizes(request: Any, response: Any) -> tuple[Any, int, str, int]:
            found = response.found  # bytes, one per requested item, whichever field carried them
            return keys, len(found), response.table, found.count(0)

        return lookup_sizes
    if method == "Search":
        queries = metrics.search_queries
        return lambda request, response: (queries, len(request.queries), "", 0)
    return None


class MetricsWrapper(UnaryWrapper):
    """Times every unary RPC and counts it by method and final status code."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics
        self.methods: set[str] = set()  # full names of the wrapped (registered) methods

    def wrap(self, method: str, handler: Any) -> Any:
        self.methods.add(method)
        return self._timed(method, handler)

    def refusal(self, method: str, handler: Any) -> Any:
        """An interceptor's refusal of ``method``, counted like its calls if it is a registered method.

        Made-up method names (refused before auth) get no series: label values stay bounded.
        """
        return self._timed(method, handler) if method in self.methods else handler

    def _timed(self, method: str, handler: Any) -> Any:
        behavior = handler.unary_unary
        metrics = self.metrics
        name = method.rsplit("/", 1)[-1]
        counters, latency = metrics._method(name)
        sizes = _payload_sizes(metrics, name)
        started, record = metrics.started, metrics.record

        def timed(request: Any, context: grpc.ServicerContext) -> Any:
            next(started)
            t0 = time.perf_counter()
            code, payload = "UNKNOWN", None
            try:
                response = behavior(request, context)
                code = status_name(context, "OK")
                if sizes is not None and code == "OK":
                    payload = sizes(request, response)
                return response
            except Exception:
                code = status_name(context, "UNKNOWN")
                raise
            finally:
                record((counters[code], latency, time.perf_counter() - t0, payload))

        return grpc.unary_unary_rpc_method_handler(
            timed, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )

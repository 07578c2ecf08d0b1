"""The health service's close callback never waits for the lock a sending Watch/set holds (the
deadlock that stopped a server in CI: embserve_server.health_watch's docstring)."""

from __future__ import annotations

import threading

from embserve_server.health_watch import HealthServicer
from grpc_health.v1 import health_pb2


class Stream:
    """A Watch stream's send callback: records what it was sent."""

    def __init__(self) -> None:
        self.sent: list[object] = []

    def __call__(self, response: object) -> None:
        self.sent.append(response)


class Context:
    def __init__(self) -> None:
        self.callbacks: list[object] = []

    def add_callback(self, callback: object) -> bool:
        self.callbacks.append(callback)
        return True


def test_close_callback_runs_while_another_thread_holds_the_lock() -> None:
    servicer = HealthServicer()
    stream, context = Stream(), Context()
    servicer.Watch(health_pb2.HealthCheckRequest(service=""), context, stream)
    close = context.callbacks[0]
    done = threading.Event()
    with servicer._lock:  # what a Watch or set() blocked in a send holds
        worker = threading.Thread(target=lambda: (close(), done.set()), daemon=True)  # type: ignore[operator]
        worker.start()
        assert done.wait(timeout=30), "the close callback waited for the servicer's lock (the polling-thread deadlock)"
    assert stream.sent[-1] is None  # the stream was told it is closed


def test_closed_streams_get_no_more_statuses_and_open_ones_do() -> None:
    servicer = HealthServicer()
    closed, open_, ctx_closed, ctx_open = Stream(), Stream(), Context(), Context()
    servicer.Watch(health_pb2.HealthCheckRequest(service="embserve.v1.EmbeddingService"), ctx_closed, closed)
    servicer.Watch(health_pb2.HealthCheckRequest(service="embserve.v1.EmbeddingService"), ctx_open, open_)
    ctx_closed.callbacks[0]()  # type: ignore[operator]
    servicer.set("embserve.v1.EmbeddingService", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert closed.sent[-1] is None and len(closed.sent) == 2  # initial status, then the close
    assert open_.sent[-1].status == health_pb2.HealthCheckResponse.NOT_SERVING  # type: ignore[attr-defined]
    assert servicer._send_response_callbacks["embserve.v1.EmbeddingService"] == {open_}

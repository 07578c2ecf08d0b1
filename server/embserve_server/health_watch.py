"""grpc.health.v1 for embserve: grpcio-health-checking's servicer without its close-callback deadlock.

grpc runs a Watch stream's close callback on the server's one polling thread. The library's callback
takes the servicer's lock, which ``Watch`` and ``set`` hold while they send a status; a send can wait
for the polling thread to complete the previous send on its stream, so the two wait on each other and
the whole server stops answering. Seen in CI on 2026-12-06 (tests/browser_deploy/
test_loopback_cluster.py: a round-robin client with health checks closing while another Watch
began; the polling thread waited in health.py's callback for the lock, a pool thread held it in
``Watch`` waiting in ``_send_response``). Here the close callback takes no lock: it marks the stream
closed, and ``Watch``/``set`` drop closed streams under the lock before they send.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grpc_health.v1 import health

SendResponse = Callable[[Any], None]


class HealthServicer(health.HealthServicer):  # type: ignore[misc]
    """The standard health service (non-blocking Watch) whose close callbacks never block."""

    def __init__(self) -> None:
        super().__init__(experimental_non_blocking=True)
        self._closed: set[SendResponse] = set()  # streams whose Watch RPC has ended, not yet dropped

    def _on_close_callback(self, send_response_callback: SendResponse, service: str) -> Callable[[], None]:
        def callback() -> None:
            self._closed.add(send_response_callback)  # no lock on the polling thread: see the module docstring
            send_response_callback(None)

        return callback

    def _drop_closed(self) -> None:
        """Forget the streams that have ended (the caller holds the lock)."""
        closed = set(self._closed)  # one C-level copy: the polling thread may add meanwhile
        if closed:
            self._closed -= closed
            for callbacks in self._send_response_callbacks.values():
                callbacks -= closed

    def Watch(self, request: Any, context: Any, send_response_callback: SendResponse | None = None) -> Any:  # noqa: N802 (grpc's name)
        with self._lock:
            self._drop_closed()
        return super().Watch(request, context, send_response_callback)

    def set(self, service: str, status: Any) -> None:
        with self._lock:  # an RLock: the library's set takes it again
            self._drop_closed()
            super().set(service, status)

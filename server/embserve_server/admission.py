"""Admission: one count of queued + running calls, one limit (``--max-concurrent-rpcs``), both ports.

gRPC calls are counted by :class:`AdmissionExecutor` (one work item per RPC grpc hands it,
released when the item ends whatever happens to the call: cancelled, undecodable, aborted) and
checked by ``interceptors.AdmissionInterceptor`` before grpc queues the call. The HTTP port's JSON
API (the explorer: ``/api/map`` runs a PCA) takes its calls from the same count through
:meth:`Admission.http_call`, and may hold at most ``http_share`` of the slots, so an ``/api/map``
flood is refused (HTTP 429) while gRPC keeps at least ``limit - http_share`` slots.

Every refusal raises :class:`~embserve_server.errors.OverloadedError` (RESOURCE_EXHAUSTED, HTTP
429) and is counted in ``embserve_rejected_requests_total{reason="overload"}``.

Why not grpc's own ``maximum_concurrent_rpcs``: grpc refuses before any interceptor runs, so such
refusals cannot be counted. grpc's limit stays on as a backstop at :func:`hard_limit` so that even
a flood of refusals cannot grow the queue unbounded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

from embserve_server.config import ServerConfig
from embserve_server.errors import OverloadedError


class Admission:
    """The shared count of admitted calls and its limit.

    Args:
        limit: queued + running calls admitted at once (at least 1).
        rejected: the ``embserve_rejected_requests_total`` counter, or None.
        http_share: at most this many of them may be HTTP API calls.
    """

    def __init__(self, limit: int, rejected: Any = None, *, http_share: int = 1) -> None:
        if limit < 1:
            raise ValueError(f"max_concurrent_rpcs: {limit} must be at least 1")
        self.limit = limit
        self.rejected = rejected
        self.http_share = max(1, http_share)
        self._pending = 0
        self._http = 0
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Calls admitted and not finished, both ports."""
        return self._pending

    def _refuse(self, message: str) -> OverloadedError:
        if self.rejected is not None:
            self.rejected.labels("overload").inc()
        return OverloadedError(message)

    def _full(self, pending: int) -> str:
        return f"server overloaded: {pending} calls in progress, limit {self.limit}; retry with backoff"

    def check(self) -> None:
        """Refuse a new gRPC call when the count is at the limit (the executor then counts it).

        Raises:
            OverloadedError: at the limit (counted).
        """
        pending = self._pending
        if pending >= self.limit:
            raise self._refuse(self._full(pending))

    def acquire(self) -> None:
        with self._lock:
            self._pending += 1

    def release(self) -> None:
        with self._lock:
            self._pending -= 1

    @contextmanager
    def http_call(self) -> Iterator[None]:
        """Count one HTTP API call for as long as the block runs.

        Raises:
            OverloadedError: the count is at the limit, or the HTTP API holds its share (counted).
        """
        with self._lock:
            pending, http = self._pending, self._http
            admitted = pending < self.limit and http < self.http_share
            if admitted:
                self._pending, self._http = pending + 1, http + 1
        if not admitted:
            if pending >= self.limit:
                raise self._refuse(self._full(pending))
            raise self._refuse(f"explorer API busy: {http} calls in progress, its share of the limit is {self.http_share}; retry with backoff")
        try:
            yield
        finally:
            with self._lock:
                self._pending -= 1
                self._http -= 1


class AdmissionExecutor(futures.ThreadPoolExecutor):
    """A thread pool that counts its unfinished work items (one per RPC grpc hands it) in ``admission``."""

    def __init__(self, max_workers: int, admission: Admission, thread_name_prefix: str = "") -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self.admission = admission

    def _done(self, _future: futures.Future[Any] | None) -> None:
        self.admission.release()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        self.admission.acquire()
        try:
            future = super().submit(fn, *args, **kwargs)
        except BaseException:
            self._done(None)
            raise
        future.add_done_callback(self._done)
        return future


def admission_for(config: ServerConfig, rejected: Any = None) -> Admission | None:
    """The :class:`Admission` ``--max-concurrent-rpcs`` asks for (None: no limit).

    Raises:
        ValueError: a limit below 1.
    """
    if config.max_concurrent_rpcs is None:
        return None
    return Admission(config.max_concurrent_rpcs, rejected, http_share=config.http.api_threads)


def rpc_executor(config: ServerConfig, admission: Admission | None) -> futures.ThreadPoolExecutor:
    """grpc's handler threads: counting their work only when admission control needs the count."""
    if admission is None:
        return futures.ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="embserve-rpc")
    return AdmissionExecutor(config.threads, admission, thread_name_prefix="embserve-rpc")


def hard_limit(config: ServerConfig) -> int | None:
    """grpc's own (uncounted) limit: room for the admitted calls plus as many quick refusals."""
    if config.max_concurrent_rpcs is None:
        return None
    return 2 * config.max_concurrent_rpcs + config.threads

"""Channels to one server or to many replicas: load balancing, retries and the version floor.

A target that can resolve to several addresses (``dns:///embserve-headless.ns.svc:50051``, a
Kubernetes headless Service; ``ipv4:10.0.0.1:50051,10.0.0.2:50051``) gets gRPC's own client-side
``round_robin`` with client-side health checking on ``grpc.health.v1``: every call goes to the next
replica whose health says SERVING, so a replica that is loading or draining gets no new calls.
A plain ``HOST:PORT`` keeps gRPC's default ``pick_first`` (one connection, as before).

During a rolling table update replicas answer with different table versions. A *version floor*
(``min_version`` / ``monotonic_reads`` on the clients) refuses answers from a version below the
floor: the call is sent again, which round-robin sends to the next replica, and fails with
:class:`~embserve_client.errors.UnavailableError` when no replica answers at the floor (a read
that names a ``version`` itself is exempt: it gets what it asked for). With
``monotonic_reads`` the floor of each table rises to the highest version the client has seen, so
reads never go back to an older version once a newer one answered.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
import grpc.aio

from embserve_client.errors import InvalidArgumentError, UnavailableError

LOAD_BALANCING = ("auto", "pick_first", "round_robin")
# Transparent retries with exponential backoff for overload and brief unavailability (reloads,
# restarts, a replica killed mid-call). Every method here is read-only or idempotent, so a retry is
# always safe. CANCELLED too: a draining server resets calls it had received but not yet started
# (RST_STREAM CANCEL), seen in tests/browser_deploy/test_loopback_cluster.py's rolling update; this client never
# cancels a call itself (its own deadline ends a call as DEADLINE_EXCEEDED, not retried).
RETRY_SERVICE_CONFIG: dict[str, Any] = {
    "methodConfig": [
        {
            "name": [{"service": "embserve.v1.EmbeddingService"}, {"service": "embserve.v1.AdminService"}],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.05s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED", "CANCELLED"],
            },
        }
    ]
}
# A restarted replica is reconnected within this long (gRPC's default backoff grows to 120 s).
MAX_RECONNECT_BACKOFF_MS = 2_000
# Answers below the floor: send again this many times in all (round-robin moves on each time),
# sleeping STALE_BACKOFF * 2**attempt (capped at STALE_MAX_BACKOFF) in between.
STALE_ATTEMPTS = 8
STALE_BACKOFF = 0.01
STALE_MAX_BACKOFF = 0.25


def resolves_to_many(target: str) -> bool:
    """Whether a gRPC target can name several servers: a ``dns:`` name or an address list."""
    scheme, sep, rest = target.partition(":")
    if not sep:
        return False
    if scheme == "dns":
        return True
    return scheme in ("ipv4", "ipv6") and "," in rest


def service_config(policy: str) -> dict[str, Any]:
    """The channel's service config: retries, plus round-robin over healthy replicas for ``round_robin``."""
    config = dict(RETRY_SERVICE_CONFIG)
    if policy == "round_robin":
        config["loadBalancingConfig"] = [{"round_robin": {}}]
        # "" = the server's overall health, which embserve sets NOT_SERVING while loading or draining.
        config["healthCheckConfig"] = {"serviceName": ""}
    return config


def channel_options(
    target: str, *, max_message_bytes: int, load_balancing: str = "auto", options: Sequence[tuple[str, Any]] = ()
) -> list[tuple[str, Any]]:
    """gRPC channel options for ``target``: message limits, retries, the load-balancing policy.

    Args:
        target: the gRPC target.
        max_message_bytes: send and receive limit.
        load_balancing: "auto" (round_robin when :func:`resolves_to_many`, else pick_first),
            "round_robin" or "pick_first".
        options: the caller's options; they come first because gRPC keeps the first value of a
            repeated channel argument, so a caller's value overrides a default.

    Raises:
        InvalidArgumentError: an unknown ``load_balancing``.
    """
    if load_balancing not in LOAD_BALANCING:
        raise InvalidArgumentError(f"load_balancing: {load_balancing!r} is not one of {', '.join(LOAD_BALANCING)}")
    policy = load_balancing
    if policy == "auto":
        policy = "round_robin" if resolves_to_many(target) else "pick_first"
    opts: list[tuple[str, Any]] = [
        *options,
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(service_config(policy))),
    ]
    if policy == "round_robin":
        opts.append(("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS))
    return opts


class VersionFloor:
    """The lowest table version a client accepts answers from, per table; shared by its channels.

    Args:
        min_version: a version for every table, or ``{table: version}``; None = no fixed floor.
        monotonic: raise each table's floor to the highest version seen in an answer.

    Raises:
        InvalidArgumentError: a version below 1.
    """

    def __init__(self, min_version: int | Mapping[str, int] | None = None, *, monotonic: bool = False) -> None:
        fixed = {"": min_version} if isinstance(min_version, int) else dict(min_version or {})
        for table, version in fixed.items():
            if not isinstance(version, int) or version < 1:
                raise InvalidArgumentError(f"min_version: {version!r} for table {table or '(every)'!r} must be an integer >= 1")
        self._default = fixed.pop("", 0)
        self._floors = fixed
        self.monotonic = monotonic
        self._lock = threading.Lock()

    def floor(self, table: str) -> int:
        """The lowest version of ``table`` accepted now."""
        with self._lock:
            return max(self._default, self._floors.get(table, 0))

    def check(self, response: Any, request: Any = None) -> str | None:
        """Accept an answer (None, raising the floor when monotonic) or say why it is stale.

        A read that names a ``version`` gets that version: it is accepted as it is and moves no floor.
        """
        named: int = getattr(request, "version", 0) if request is not None else 0
        if named:
            return None
        answers = _versions(response)
        with self._lock:
            for table, version in answers:
                floor = max(self._default, self._floors.get(table, 0))
                if version < floor:
                    return f"table {table!r} answered at version {version}, below the floor {floor}"
            if self.monotonic:
                for table, version in answers:
                    self._floors[table] = max(version, self._floors.get(table, 0))
        return None


def _versions(response: Any) -> list[tuple[str, int]]:
    """(table, version) pairs an answer names: its own, or each table's of a ListTables answer."""
    fields = response.DESCRIPTOR.fields_by_name
    if "version" in fields and "table" in fields:
        return [(response.table, response.version)] if response.version else []
    if "tables" in fields:
        return [(t.name, t.version) for t in response.tables]
    return []


def _stale_error(method: Any, why: str) -> UnavailableError:
    return UnavailableError(
        f"UNAVAILABLE: {method}: {why} on each of {STALE_ATTEMPTS} attempts; no replica serves the version "
        "this client requires yet (min_version / monotonic_reads)",
        code=grpc.StatusCode.UNAVAILABLE,
    )


def _pause(attempt: int) -> float:
    return float(min(STALE_MAX_BACKOFF, STALE_BACKOFF * 2**attempt))


class _FloorInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, floor: VersionFloor) -> None:
        self.floor = floor

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        why = ""
        for attempt in range(STALE_ATTEMPTS):
            outcome = continuation(details, request)
            if outcome.exception() is not None:
                return outcome
            stale = self.floor.check(outcome.result(), request)
            if stale is None:
                return outcome
            why = stale
            time.sleep(_pause(attempt))
        raise _stale_error(details.method, why)


class _AsyncFloorInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, floor: VersionFloor) -> None:
        self.floor = floor

    async def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        why = ""
        for attempt in range(STALE_ATTEMPTS):
            call = await continuation(details, request)
            try:
                response = await call
            except grpc.aio.AioRpcError:
                return call
            stale = self.floor.check(response, request)
            if stale is None:
                return call
            why = stale
            await asyncio.sleep(_pause(attempt))
        raise _stale_error(details.method, why)


def open_channel(
    target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]], *, floor: VersionFloor | None = None
) -> grpc.Channel:
    """A blocking channel; answers below ``floor`` are asked again (see the module docstring)."""
    channel = grpc.secure_channel(target, credentials, options) if credentials else grpc.insecure_channel(target, options)
    return grpc.intercept_channel(channel, _FloorInterceptor(floor)) if floor is not None else channel


def open_aio_channel(
    target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]], *, floor: VersionFloor | None = None
) -> grpc.aio.Channel:
    """An asyncio channel; as :func:`open_channel`."""
    interceptors = [_AsyncFloorInterceptor(floor)] if floor is not None else None
    if credentials:
        return grpc.aio.secure_channel(target, credentials, options, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options, interceptors=interceptors)

"""What stands between the network and the servicers: TLS, bearer tokens, admission, safe decoding.

Interceptors (only when configured), outermost first; their refusals of registered methods are
also timed and counted by status code like any call (``MetricsWrapper.refusal``)::

    AuthInterceptor       no/invalid token -> UNAUTHENTICATED, read token on AdminService ->
                          PERMISSION_DENIED; health checks stay open for probes
    AdmissionInterceptor  more than ``max_concurrent_rpcs`` calls queued or running ->
                          RESOURCE_EXHAUSTED (the client retries with backoff)

and a handler wrapper, applied to every unary method at registration (wrappers.py)::

    DecodeGuard           undecodable request bytes (e.g. invalid UTF-8 in a string field) ->
                          INVALID_ARGUMENT instead of grpc's INTERNAL; deadline already passed
                          when a worker picks the call up -> DEADLINE_EXCEEDED without doing the
                          work; a response over the message limit -> INVALID_ARGUMENT (not an
                          opaque transport error that the client would retry)

Refusals are counted in ``embserve_rejected_requests_total{reason=...}``.

Why admission is not grpc's ``maximum_concurrent_rpcs``: grpc refuses before any interceptor
runs, so such refusals cannot be counted. grpc runs interceptors on its single polling thread and
then queues the call on the executor; :class:`AdmissionExecutor` counts queued + running work
items (released when the work item ends, whatever happens to the call: cancelled, undecodable,
aborted), and the interceptor compares that count with the limit. grpc's own limit stays on as
a backstop at :func:`hard_limit` so that even a flood of refusals cannot grow the queue unbounded.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from embserve_server.config import ServerConfig
from embserve_server.metrics import ServerMetrics
from embserve_server.wrappers import UnaryWrapper

logger = logging.getLogger(__name__)

ROLES = ("read", "admin")  # admin implies read
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)  # probes work without a token and are always admitted
ADMIN_PREFIXES = ("/embserve.v1.AdminService/",)


# ---------------------------------------------------------------------------------------------
# Tokens


def load_tokens(path: str | Path) -> dict[bytes, str]:
    """Read a token file: one ``TOKEN ROLE`` per line, ROLE ``read`` or ``admin``; ``#`` comments.

    Returns:
        sha256(token) -> role (tokens are kept hashed and compared in constant time).

    Raises:
        ValueError: unreadable file, a malformed line, an unknown role, a duplicate token, no token.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"auth token file {path}: cannot read ({exc})") from exc
    tokens: dict[bytes, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ROLES:
            raise ValueError(f"auth token file {path}, line {lineno}: expected 'TOKEN ROLE' with ROLE one of {ROLES}")
        digest = hashlib.sha256(parts[0].encode("utf-8")).digest()
        if digest in tokens:
            raise ValueError(f"auth token file {path}, line {lineno}: duplicate token")
        tokens[digest] = parts[1]
    if not tokens:
        raise ValueError(f"auth token file {path}: holds no token (auth on would refuse every call)")
    return tokens


def bearer_token(metadata: Any) -> str | None:
    """The token of an ``authorization: Bearer <token>`` header, or None."""
    for key, value in metadata or ():
        if key == "authorization":
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def _role_of(tokens: dict[bytes, str], token: str) -> str | None:
    digest = hashlib.sha256(token.encode("utf-8")).digest()
    role = None
    for known, known_role in tokens.items():  # no early exit: the time does not depend on which token
        if hmac.compare_digest(known, digest):
            role = known_role
    return role


# ---------------------------------------------------------------------------------------------
# Refusals


Counted = Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]


def _uncounted(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    return handler


def _refusal(handler: grpc.RpcMethodHandler | None, code: grpc.StatusCode, details: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that only aborts with ``code``."""

    def abort(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, details)

    if handler is not None and handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler is not None and handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler is not None and handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    # Unary (or unknown method): the request bytes are not even decoded.
    return grpc.unary_unary_rpc_method_handler(abort)


class AuthInterceptor(grpc.ServerInterceptor):
    """Bearer-token auth: read tokens for queries and reflection, admin tokens for AdminService."""

    def __init__(self, tokens: dict[bytes, str], metrics: ServerMetrics | None = None, counted: Counted = _uncounted) -> None:
        self.tokens = tokens
        self.metrics = metrics
        self.counted = counted

    def _reject(self, reason: str, method: str, handler: Any, code: grpc.StatusCode, details: str) -> grpc.RpcMethodHandler:
        if self.metrics is not None:
            self.metrics.rejected.labels(reason).inc()
        return self.counted(method, _refusal(handler, code, details))

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        method = handler_call_details.method
        if method.startswith(OPEN_PREFIXES):
            return continuation(handler_call_details)
        token = bearer_token(handler_call_details.invocation_metadata)
        role = _role_of(self.tokens, token) if token is not None else None
        if role is None:
            # Do not resolve the handler: unauthenticated callers learn nothing about which methods exist.
            what = "no bearer token" if token is None else "invalid bearer token"
            return self._reject("unauthenticated", method, None, grpc.StatusCode.UNAUTHENTICATED, f"{what}: send 'authorization: Bearer <token>'")
        handler = continuation(handler_call_details)
        if method.startswith(ADMIN_PREFIXES) and role != "admin":
            return self._reject("permission_denied", method, handler, grpc.StatusCode.PERMISSION_DENIED, f"{method} needs an admin token; this token is {role!r}")
        return handler


# ---------------------------------------------------------------------------------------------
# Admission


class AdmissionExecutor(futures.ThreadPoolExecutor):
    """A thread pool that counts its unfinished work items (one per RPC grpc hands it)."""

    def __init__(self, max_workers: int, thread_name_prefix: str = "") -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self._pending = 0
        self._pending_lock = threading.Lock()

    @property
    def pending(self) -> int:
        return self._pending

    def _done(self, _future: futures.Future[Any]) -> None:
        with self._pending_lock:
            self._pending -= 1

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        with self._pending_lock:
            self._pending += 1
        try:
            future = super().submit(fn, *args, **kwargs)
        except BaseException:
            self._done(None)  # type: ignore[arg-type]
            raise
        future.add_done_callback(self._done)
        return future


class AdmissionInterceptor(grpc.ServerInterceptor):
    """Refuse calls beyond ``limit`` queued or running RPCs with RESOURCE_EXHAUSTED (counted).

    Runs on grpc's polling thread, before the call is queued, so the check and the executor's
    count move in step. Health checks are always admitted.
    """

    def __init__(
        self, limit: int, executor: AdmissionExecutor, metrics: ServerMetrics | None = None, counted: Counted = _uncounted
    ) -> None:
        if limit < 1:
            raise ValueError(f"max_concurrent_rpcs: {limit} must be at least 1")
        self.limit = limit
        self.executor = executor
        self.metrics = metrics
        self.counted = counted

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_PREFIXES):
            return handler
        pending = self.executor.pending
        if pending >= self.limit:
            if self.metrics is not None:
                self.metrics.rejected.labels("overload").inc()
            return self.counted(handler_call_details.method, _refusal(
                handler, grpc.StatusCode.RESOURCE_EXHAUSTED, f"server overloaded: {pending} calls in progress, limit {self.limit}; retry with backoff"
            ))
        return handler


def rpc_executor(config: ServerConfig) -> futures.ThreadPoolExecutor:
    """grpc's handler threads: counting their work only when admission control needs the count."""
    if config.max_concurrent_rpcs is None:
        return futures.ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="embserve-rpc")
    return AdmissionExecutor(max_workers=config.threads, thread_name_prefix="embserve-rpc")


def hard_limit(config: ServerConfig) -> int | None:
    """grpc's own (uncounted) limit: room for the admitted calls plus as many quick refusals."""
    if config.max_concurrent_rpcs is None:
        return None
    return 2 * config.max_concurrent_rpcs + config.threads


# ---------------------------------------------------------------------------------------------
# Decoding, deadlines, response size


class _Undecodable:
    """Stands in for a request whose bytes do not parse; the handler answers INVALID_ARGUMENT."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _safe_deserializer(deserialize: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
    message_type = getattr(getattr(deserialize, "__self__", None), "__name__", f"{method} request")

    def safe(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and anything a parser raises
            return _Undecodable(f"request: {len(raw)} bytes are not a valid {message_type} ({exc})")

    return safe


class DecodeGuard(UnaryWrapper):
    """INVALID_ARGUMENT for undecodable requests and over-limit responses; skip expired calls."""

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes

    def applies(self, handler: Any) -> bool:
        return handler.unary_unary is not None and handler.request_deserializer is not None

    def wrap(self, name: str, handler: Any) -> Any:
        behavior = handler.unary_unary
        limit = self.max_message_bytes

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, _Undecodable):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.error)
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                # The caller has given up while the call waited in the queue: do not do the work.
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the call was handled")
            response = behavior(request, context)
            size = response.ByteSize() if hasattr(response, "ByteSize") else 0
            if size > limit:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"response: {size} bytes is over the limit of {limit} (--max-message-bytes); ask for fewer rows per call",
                )
            return response

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=_safe_deserializer(handler.request_deserializer, name.rsplit("/", 1)[-1]),
            response_serializer=handler.response_serializer,
        )


# ---------------------------------------------------------------------------------------------
# Wiring


def interceptors(
    config: ServerConfig, metrics: ServerMetrics | None, executor: futures.ThreadPoolExecutor, counted: Counted = _uncounted
) -> list[grpc.ServerInterceptor]:
    """The guard interceptors ``config`` asks for (none by default), outermost first.

    ``executor``: from :func:`rpc_executor`. ``counted(method, refusal)`` wraps each refusal
    handler (the metrics wrapper's ``refusal``).

    Raises:
        ValueError: an unreadable or malformed token file, a limit below 1.
    """
    out: list[grpc.ServerInterceptor] = []
    if config.auth_token_file is not None:
        out.append(AuthInterceptor(load_tokens(config.auth_token_file), metrics, counted))
    if config.max_concurrent_rpcs is not None:
        if not isinstance(executor, AdmissionExecutor):
            raise TypeError("admission control needs the AdmissionExecutor from rpc_executor(config)")
        out.append(AdmissionInterceptor(config.max_concurrent_rpcs, executor, metrics, counted))
    return out


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from ``--tls-cert/--tls-key`` (and ``--tls-client-ca`` for mutual TLS).

    Returns None when TLS is off. Raises ``ValueError`` for half a configuration or unreadable files.
    """
    cert, key, client_ca = config.tls_cert, config.tls_key, config.tls_client_ca
    if cert is None and key is None:
        if client_ca is not None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if cert is None or key is None:
        raise ValueError("TLS needs both --tls-cert and --tls-key")

    def read(path: Path, what: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise ValueError(f"{what} {path}: cannot read ({exc.strerror or exc})") from exc

    return grpc.ssl_server_credentials(
        [(read(key, "--tls-key"), read(cert, "--tls-cert"))],
        root_certificates=read(client_ca, "--tls-client-ca") if client_ca is not None else None,
        require_client_auth=client_ca is not None,
    )


def add_port(server: grpc.Server, config: ServerConfig) -> int:
    """Bind ``config.address`` with TLS when configured, else plaintext; returns the port (0 = failed)."""
    credentials = server_credentials(config)
    if credentials is None:
        return server.add_insecure_port(config.address)
    return server.add_secure_port(config.address, credentials)

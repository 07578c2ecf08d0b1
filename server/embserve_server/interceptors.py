"""gRPC's side of auth and admission: server interceptors that refuse before a call is queued.

Interceptors (only when configured), outermost first; their refusals of registered methods are
also timed and counted by status code like any call (``MetricsWrapper.refusal``)::

    AuthInterceptor       no/invalid token -> UNAUTHENTICATED, read token on AdminService ->
                          PERMISSION_DENIED; health checks stay open for probes (auth.py)
    AdmissionInterceptor  more than ``max_concurrent_rpcs`` calls queued or running, both ports
                          together -> RESOURCE_EXHAUSTED; the client retries with backoff (admission.py)

The decisions are made by :class:`~embserve_server.auth.TokenCheck` and
:class:`~embserve_server.admission.Admission`, which the HTTP port shares; they raise the domain
exceptions of errors.py, and a refusal aborts with ``errors.grpc_status`` of that exception.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from embserve_server.admission import Admission
from embserve_server.auth import TokenCheck, authorization
from embserve_server.errors import AuthError, OverloadedError, grpc_status

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)  # probes work without a token and are always admitted
ADMIN_PREFIXES = ("/embserve.v1.AdminService/",)

Counted = Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]


def _uncounted(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    return handler


def refusal(handler: grpc.RpcMethodHandler | None, exc: Exception) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that only aborts with ``grpc_status(exc)``."""
    code, details = grpc_status(exc)

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

    def __init__(self, check: TokenCheck, counted: Counted = _uncounted) -> None:
        self.check = check
        self.counted = counted

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        method = handler_call_details.method
        if method.startswith(OPEN_PREFIXES):
            return continuation(handler_call_details)
        try:
            role = self.check.authenticate(authorization(handler_call_details.invocation_metadata))
        except AuthError as exc:
            # Do not resolve the handler: unauthenticated callers learn nothing about which methods exist.
            return self.counted(method, refusal(None, exc))
        handler = continuation(handler_call_details)
        if method.startswith(ADMIN_PREFIXES):
            try:
                self.check.require_admin(role, method)
            except AuthError as exc:
                return self.counted(method, refusal(handler, exc))
        return handler


class AdmissionInterceptor(grpc.ServerInterceptor):
    """Refuse calls beyond the admission limit with RESOURCE_EXHAUSTED (counted).

    Runs on grpc's polling thread, before the call is queued, so the check and the executor's
    count move in step. Health checks are always admitted.
    """

    def __init__(self, admission: Admission, counted: Counted = _uncounted) -> None:
        self.admission = admission
        self.counted = counted

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_PREFIXES):
            return handler
        try:
            self.admission.check()
        except OverloadedError as exc:
            return self.counted(handler_call_details.method, refusal(handler, exc))
        return handler


def interceptors(tokens: TokenCheck | None, admission: Admission | None, counted: Counted = _uncounted) -> list[grpc.ServerInterceptor]:
    """The interceptors for the configured auth and admission (none by default), outermost first.

    ``counted(method, refusal)`` wraps each refusal handler (the metrics wrapper's ``refusal``).
    """
    out: list[grpc.ServerInterceptor] = []
    if tokens is not None:
        out.append(AuthInterceptor(tokens, counted))
    if admission is not None:
        out.append(AdmissionInterceptor(admission, counted))
    return out

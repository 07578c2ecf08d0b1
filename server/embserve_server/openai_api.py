"""The OpenAI-shaped embeddings API on the HTTP port: ``POST /v1/embeddings``, ``GET /v1/models``.

OpenAI client libraries work against it by changing ``base_url`` (``http://HOST:PORT/v1``):

- ``model``: a served table's name, optionally ``name@version`` (a loaded version) or ``name@label``
  (a version label such as ``stable``: :mod:`embserve_format.labels`);
- ``input``: a string, a list of strings, a list of token ids, or a list of token-id lists (the
  table's row ids, which for tokenizer tables are the tokenizer's ids);
- ``encoding_format``: ``float`` (default) or ``base64`` (little-endian float32, as OpenAI sends);
- ``dimensions``: the first N columns (tables whose manifest says ``pooling.pca_ordered``);
- answer ``{"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model",
  "usage": {"prompt_tokens", "total_tokens"}}``; ``prompt_tokens`` counts every token the inputs
  produced (unknown and truncated ones included).

Every vector comes from :func:`embserve_server.embed.embed`, the code ``Embed`` runs (unit length,
texts cut at 512 tokens). Errors are OpenAI's error object ``{"error": {"message", "type", "param",
"code"}}`` with the HTTP status of :func:`embserve_server.errors.http_error`, the one map from
exceptions to statuses. Tokens, TLS, admission and the body limit are the port's (http_port.py).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from embserve_format.arrays import LE_F32

from embserve_server import embed
from embserve_server.config import Limits
from embserve_server.errors import UnknownTableError, UnknownVersionError, http_error
from embserve_server.registry import TableRegistry
from embserve_server.tables import Table

Answer = tuple[int, dict[str, Any]]  # (HTTP status, JSON body)
ENCODINGS = ("float", "base64")
OWNER = "embserve"

# HTTP status -> OpenAI's error type (what its client libraries and their users branch on).
ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
               429: "rate_limit_error", 503: "server_error", 500: "server_error"}


class RequestError(ValueError):
    """A malformed request body; ``param`` names the field (OpenAI's error ``param``)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object."""
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_error(exc: BaseException, param: str | None = None) -> Answer:
    """Any exception as OpenAI's error object, with the port's one status map."""
    status, body = http_error(exc)
    code = "model_not_found" if isinstance(exc, (UnknownTableError, UnknownVersionError)) else None
    if status == 401:
        code = "invalid_api_key"
    return status, error_body(status, str(body["error"]), param=param if status == 400 else ("model" if code else None), code=code)


class OpenAIApi:
    """Answers ``/v1/*`` requests over the served tables (sync: the port runs it on its API threads).

    Args:
        registry: the tables the gRPC server serves.
        limits: the gRPC server's limits (texts per call, characters, tokens per text).
        observe: called with (route, HTTP status, seconds) after each answer (metrics).
    """

    def __init__(self, registry: TableRegistry, limits: Limits, *, observe: Callable[[str, int, float], None] | None = None) -> None:
        self.registry = registry
        self.limits = limits
        self.observe = observe

    def answer(self, method: str, path: str, body: bytes) -> Answer:
        """The answer to ``method path`` with ``body``; never raises."""
        t0 = time.perf_counter()
        route = path
        try:
            if path == "/v1/embeddings":
                answer = self.embeddings(body) if method == "POST" else (405, error_body(405, "use POST /v1/embeddings"))
            elif path == "/v1/models" or path.startswith("/v1/models/"):
                route = "/v1/models"
                answer = self.models(path[len("/v1/models/"):]) if method in ("GET", "HEAD") else (405, error_body(405, f"use GET {path}"))
            else:
                route = "/v1/other"
                answer = 404, error_body(404, f"unknown path {path}: this server answers POST /v1/embeddings and GET /v1/models", code="unknown_url")
        except RequestError as exc:
            answer = 400, error_body(400, str(exc), param=exc.param)
        except Exception as exc:  # noqa: BLE001 - the one exception -> status boundary of this API
            answer = openai_error(exc, param="input")
        if self.observe is not None:
            self.observe(route, answer[0], time.perf_counter() - t0)
        return answer

    # -- /v1/models -----------------------------------------------------------------------------

    def models(self, model_id: str = "") -> Answer:
        """Every served table (``name``, ``name@version`` for each loaded version, ``name@label`` for each
        label), or one of them."""
        data = []
        for t in self.registry.all():
            data.append(_model(t.name, t))
            data.extend(_model(f"{v.name}@{v.version}", v) for v in self.registry.versions(t.name))
            data.extend(_model(f"{t.name}@{label}", self.registry.get(t.name, label=label)) for label in sorted(self.registry.labels(t.name)))
        if not model_id:
            return 200, {"object": "list", "data": data}
        self._table(model_id)  # 404 naming the served tables
        return 200, next(m for m in data if m["id"] == model_id)

    # -- /v1/embeddings -------------------------------------------------------------------------

    def embeddings(self, body: bytes) -> Answer:
        request = _json_object(body)
        model = request.get("model")
        if not isinstance(model, str) or not model:
            raise RequestError("model: give a served table's name (GET /v1/models lists them), optionally name@version or name@label", "model")
        fmt = request.get("encoding_format") or "float"
        if fmt not in ENCODINGS:
            raise RequestError(f"encoding_format: {fmt!r} is not one of {', '.join(ENCODINGS)}", "encoding_format")
        dimensions = request.get("dimensions") or 0
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 0:
            raise RequestError(f"dimensions: {dimensions!r} is not a positive integer", "dimensions")
        texts, token_ids = _inputs(request.get("input"))
        table = self._table(model)
        r = embed.embed(table, self.limits, texts=texts, token_ids=token_ids, dimensions=dimensions)
        if fmt == "base64":
            encoded: list[Any] = [base64.b64encode(v.astype(LE_F32, copy=False).tobytes()).decode("ascii") for v in r.vectors]
        else:
            encoded = r.vectors.tolist()
        used = int(r.seen.sum())
        return 200, {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(encoded)],
            "model": f"{table.name}@{table.version}",
            "usage": {"prompt_tokens": used, "total_tokens": used},
        }

    def _table(self, model: str) -> Table:
        name, at, which = model.partition("@")
        if at and not which:
            raise RequestError(f"model: {model!r}: after @ give a version number or a label (name@3, name@stable)", "model")
        if which.isdigit():
            return self.registry.get(name, int(which))
        return self.registry.get(name, label=which)  # "" = the serving version


def _model(model_id: str, t: Table) -> dict[str, Any]:
    created = 0
    try:
        created = int(datetime.fromisoformat(str(t.bundle.manifest.get("created_at", ""))).timestamp())
    except ValueError:
        pass
    return {"id": model_id, "object": "model", "created": created, "owned_by": OWNER}


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"the request body is not valid JSON ({exc}); send a JSON object like "
                           '{"model": "glove", "input": ["a text"]}') from exc
    if not isinstance(request, dict):
        raise RequestError(f"the request body is a JSON {type(request).__name__}, expected an object with model and input")
    return request


def _inputs(value: Any) -> tuple[list[str], list[list[int]]]:
    """OpenAI's four ``input`` shapes -> (texts, token-id lists); exactly one is non-empty."""
    if isinstance(value, str):
        return [value], []
    if not isinstance(value, list) or not value:
        raise RequestError("input: give a string, a non-empty list of strings, a list of token ids or a list of token-id lists", "input")
    if all(isinstance(v, str) for v in value):
        return value, []
    if all(_is_int(v) for v in value):
        return [], [value]
    if all(isinstance(v, list) and v and all(_is_int(i) for i in v) for v in value):
        return [], value
    raise RequestError("input: a list must hold only strings, only token ids, or only non-empty token-id lists", "input")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


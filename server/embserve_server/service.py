"""The gRPC servicers: protobuf messages in, query-core calls, protobuf messages out.

Each handler picks the table, turns the request into the core's arguments, calls
:mod:`embserve_server.query` (which validates, chooses any fast path and packs the arrays into
bytes) and copies the answer into the response message. Exceptions travel to :func:`handle`, the
one place that turns them into a status code (via :func:`embserve_server.errors.status_for`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import numpy as np
from embserve_client.pb import embserve_pb2 as pb
from embserve_client.pb import embserve_pb2_grpc as pb_grpc
from embserve_client.wire import POLICY_NAMES
from embserve_format.arrays import LE_F32, LE_I64

from embserve_server import gensim_eval, gensim_ops, query, subword, tokenizer_table
from embserve_server.config import Limits
from embserve_server.errors import status_for
from embserve_server.tables import Table, TableRegistry

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

MAX_DETAILS = 1_000  # characters of an error message (grpc's metadata limit is 8 KiB by default)


def handle(method: F) -> F:
    """Run a handler; map any exception to its status with ``context.abort``."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - the one exception -> status boundary
            code = status_for(exc)
            if code == grpc.StatusCode.INTERNAL:
                logger.exception("internal error in %s", method.__name__)
                context.abort(code, f"internal error: {type(exc).__name__}")
            message = str(exc)  # bounded: a message quotes request values (table names are not length-checked)
            if len(message) > MAX_DETAILS:  # keep both ends: the value quoted first, the reason after it
                message = message[: MAX_DETAILS // 2] + " … " + message[-(MAX_DETAILS // 2 - 3) :]
            context.abort(code, message)

    return wrapper  # type: ignore[return-value]


def table_info(t: Table) -> pb.TableInfo:
    info = t.bundle.index_info
    return pb.TableInfo(
        name=t.name,
        version=t.version,
        vector_size=t.dim,
        count=t.count,
        metric=t.metric,
        index=str(info.get("factory") or "Flat"),
        checksum=t.bundle.checksum,
        created_at=str(t.bundle.manifest.get("created_at", "")),
        ef_search=int(info.get("ef_search") or 0),
        nprobe=int(info.get("nprobe") or 0),
        has_counts=t.bundle.counts is not None,
        has_subwords=subword.EXTRA in t.extras,
        has_tokenizer=tokenizer_table.EXTRA in t.extras,
        source=str((t.bundle.manifest.get("source") or {}).get("kind", "")),
        memory=pb.TableMemory(**t.memory_parts),
    )


def to_query(q: pb.Query) -> query.Query:
    return query.Query(
        positive=q.positive,
        negative=q.negative,
        positive_ids=q.positive_ids,
        negative_ids=q.negative_ids,
        positive_weights=q.positive_weights,
        negative_weights=q.negative_weights,
        vector=_floats(q.vector, "queries.vector") if q.vector else None,
    )


def _floats(raw: bytes, field: str) -> np.ndarray:
    if len(raw) % 4:
        raise ValueError(f"{field}: {len(raw)} bytes is not a whole number of float32 values")
    return np.frombuffer(raw, dtype=LE_F32)


def search_options(request: pb.SearchRequest) -> query.SearchOptions:
    return query.SearchOptions(
        topn=request.topn or query.DEFAULT_TOPN,
        include_query_keys=request.include_query_keys,
        exact=request.exact,
        ef_search=request.ef_search,
        nprobe=request.nprobe,
        restrict_vocab=request.restrict_vocab,
        min_score=request.min_score if request.HasField("min_score") else None,
        skip_special_tokens=request.skip_special_tokens,
        skip_subword_tokens=request.skip_subword_tokens,
    )


class EmbeddingService(pb_grpc.EmbeddingServiceServicer):
    def __init__(self, registry: TableRegistry, limits: Limits) -> None:
        self.registry = registry
        self.limits = limits

    @handle
    def ListTables(self, request: pb.ListTablesRequest, context: grpc.ServicerContext) -> pb.ListTablesResponse:
        return pb.ListTablesResponse(
            tables=[table_info(t) for t in self.registry.all()], default_table=self.registry.default_name()
        )

    @handle
    def Lookup(self, request: pb.LookupRequest, context: grpc.ServicerContext) -> pb.LookupResponse:
        table = self.registry.get(request.table, request.version)
        # One list up front: every pass over the protobuf container builds new str objects.
        answer = query.answer_lookup(
            table, self.limits, keys=list(request.keys), ids=request.ids, missing=POLICY_NAMES.get(request.missing, "?"), normalize=request.normalize
        )
        return pb.LookupResponse(
            table=table.name, version=table.version, vector_size=table.dim, rows=answer.rows, vectors=answer.vectors, found=answer.found, ids=answer.ids
        )

    @handle
    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        table = self.registry.get(request.table, request.version)
        answer = query.answer_search(table, [to_query(q) for q in request.queries], search_options(request), self.limits)
        return pb.SearchResponse(
            table=table.name, version=table.version, topn=answer.topn, queries=answer.queries, ids=answer.ids, scores=answer.scores, keys=answer.keys
        )

    @handle
    def Similarity(self, request: pb.SimilarityRequest, context: grpc.ServicerContext) -> pb.SimilarityResponse:
        table = self.registry.get(request.table, request.version)
        scores = query.similarity(table, request.a, request.b, self.limits)
        return pb.SimilarityResponse(table=table.name, version=table.version, scores=scores.astype(LE_F32).tobytes())

    @handle
    def Tokenize(self, request: pb.TokenizeRequest, context: grpc.ServicerContext) -> pb.TokenizeResponse:
        table = self.registry.get(request.table, request.version)
        encodings = tokenizer_table.tokenize(table, list(request.texts), self.limits, add_special_tokens=request.add_special_tokens)
        return pb.TokenizeResponse(
            table=table.name,
            version=table.version,
            texts=[pb.TokenizedText(ids=e.ids, tokens=e.tokens) for e in encodings],
        )

    @handle
    def LookupText(self, request: pb.LookupTextRequest, context: grpc.ServicerContext) -> pb.LookupTextResponse:
        table = self.registry.get(request.table, request.version)
        (enc,) = tokenizer_table.tokenize(table, [request.text], self.limits, add_special_tokens=request.add_special_tokens)
        vectors = table.vectors[np.asarray(enc.ids, dtype=np.int64)]
        mean = vectors.mean(axis=0) if (request.mean and len(vectors)) else np.empty(0, np.float32)
        return pb.LookupTextResponse(
            table=table.name,
            version=table.version,
            vector_size=table.dim,
            ids=enc.ids,
            tokens=enc.tokens,
            vectors=np.ascontiguousarray(vectors, dtype=LE_F32).tobytes(),
            mean=mean.astype(LE_F32).tobytes(),
        )


    # -- gensim KeyedVectors support (gensim_ops / gensim_eval) ----------------------------------

    @handle
    def ListKeys(self, request: pb.ListKeysRequest, context: grpc.ServicerContext) -> pb.ListKeysResponse:
        table = self.registry.get(request.table, request.version)
        keys = gensim_ops.list_keys(table, request.offset, request.limit, self.limits)
        return pb.ListKeysResponse(table=table.name, version=table.version, count=table.count, keys=keys)

    @handle
    def MostSimilarCosmul(self, request: pb.MostSimilarCosmulRequest, context: grpc.ServicerContext) -> pb.MostSimilarCosmulResponse:
        table = self.registry.get(request.table, request.version)
        ids, scores = gensim_ops.most_similar_cosmul(
            table, list(request.positive), list(request.negative), request.positive_vectors, request.negative_vectors,
            request.topn, self.limits,
        )
        return pb.MostSimilarCosmulResponse(
            table=table.name, version=table.version, ids=ids.astype(LE_I64).tobytes(),
            scores=scores.astype(LE_F32).tobytes(), keys=table.keys[ids].tolist(),
        )

    @handle
    def RankByCentrality(self, request: pb.RankByCentralityRequest, context: grpc.ServicerContext) -> pb.RankByCentralityResponse:
        table = self.registry.get(request.table, request.version)
        found, scores = gensim_ops.rank_by_centrality(table, list(request.keys), not request.raw, self.limits)
        return pb.RankByCentralityResponse(
            table=table.name, version=table.version, found=found.view(np.uint8).tobytes(), scores=scores.astype(LE_F32).tobytes()
        )

    @handle
    def CloserThan(self, request: pb.CloserThanRequest, context: grpc.ServicerContext) -> pb.CloserThanResponse:
        table = self.registry.get(request.table, request.version)
        ids = gensim_ops.closer_than(table, request.key1, request.key2, self.limits)
        if request.count_only:
            return pb.CloserThanResponse(table=table.name, version=table.version, count=len(ids))
        return pb.CloserThanResponse(
            table=table.name, version=table.version, count=len(ids), ids=ids.astype(LE_I64).tobytes(), keys=table.keys[ids].tolist()
        )

    @handle
    def EvaluateWordPairs(self, request: pb.EvaluateWordPairsRequest, context: grpc.ServicerContext) -> pb.EvaluateWordPairsResponse:
        table = self.registry.get(request.table, request.version)
        found, scores = gensim_eval.word_pairs(
            table, list(request.a), list(request.b), request.restrict_vocab, request.case_insensitive, self.limits
        )
        return pb.EvaluateWordPairsResponse(
            table=table.name, version=table.version, found=found.view(np.uint8).tobytes(), scores=scores.astype(LE_F32).tobytes()
        )

    @handle
    def EvaluateWordAnalogies(
        self, request: pb.EvaluateWordAnalogiesRequest, context: grpc.ServicerContext
    ) -> pb.EvaluateWordAnalogiesResponse:
        table = self.registry.get(request.table, request.version)
        questions = [list(request.a), list(request.b), list(request.c), list(request.expected)]
        found, correct, search = gensim_eval.word_analogies(
            table, questions, request.restrict_vocab, request.case_insensitive, self.limits,
            approximate=request.approximate, ef_search=request.ef_search,
        )
        return pb.EvaluateWordAnalogiesResponse(
            table=table.name, version=table.version, found=found.view(np.uint8).tobytes(),
            correct=correct.view(np.uint8).tobytes(), search=search,
        )


class AdminService(pb_grpc.AdminServiceServicer):
    def __init__(self, registry: TableRegistry) -> None:
        self.registry = registry

    @handle
    def Reload(self, request: pb.ReloadRequest, context: grpc.ServicerContext) -> pb.ReloadResponse:
        outcomes = self.registry.reload(request.table or None)
        return pb.ReloadResponse(
            outcomes=[pb.ReloadOutcome(table=o.table, outcome=o.outcome, version=o.version, message=o.message) for o in outcomes],
            tables=[table_info(t) for t in self.registry.all()],
        )

"""The one place where protobuf meets numpy: request fields in, ``pack_*`` response messages out.

The servicer (service.py) hands request fields to the core and the core's arrays to one
``pack_*`` per response type; every byte that goes on the wire is packed here, in the proto's
conventions: vectors as one little-endian float32 ``bytes`` field (rows x dim), ids as
little-endian int64, found/correct flags one byte each. Every response names the table version
that answered it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from embserve_client.pb import embserve_pb2 as pb
from embserve_format.arrays import LE_F32, LE_I64

from embserve_server import embed, query, subword, tokenizer_table
from embserve_server.config import Limits
from embserve_server.tables import ReloadOutcome, Table
from embserve_server.validate import packed_keys


def _f32(a: np.ndarray) -> bytes:
    return a.tobytes() if a.dtype is LE_F32 else a.astype(LE_F32).tobytes()  # `is`: numpy keeps one instance per builtin dtype


def _i64(a: np.ndarray) -> bytes:
    return a.tobytes() if a.dtype is LE_I64 else a.astype(LE_I64).tobytes()


def _flags(a: np.ndarray) -> bytes:
    return a.view(np.uint8).tobytes()


# -- requests in ---------------------------------------------------------------------------------


def floats(raw: bytes, field: str) -> np.ndarray:
    """A packed little-endian float32 field as an array.

    Raises:
        ValueError: not a whole number of float32 values.
    """
    if len(raw) % 4:
        raise ValueError(f"{field}: {len(raw)} bytes is not a whole number of float32 values")
    return np.frombuffer(raw, dtype=LE_F32)


def keys_of(request: pb.LookupRequest, limits: Limits) -> Sequence[str]:
    """The keys of a LookupRequest: ``packed_keys`` read in place (no str per key), else ``keys``.

    Raises:
        ValueError: both fields set; malformed packed keys (validate.packed_keys).
    """
    if not request.packed_keys:
        return list(request.keys)  # one list up front: every pass over the protobuf container builds new str objects
    if len(request.keys):
        raise ValueError("keys and packed_keys: give one or the other, not both")
    return packed_keys("packed_keys", request.packed_keys, limits)


def query_of(q: pb.Query) -> query.Query:
    return query.Query(
        positive=q.positive,
        negative=q.negative,
        positive_ids=q.positive_ids,
        negative_ids=q.negative_ids,
        positive_weights=q.positive_weights,
        negative_weights=q.negative_weights,
        vector=floats(q.vector, "queries.vector") if q.vector else None,
    )


def queries_of(request: pb.SearchRequest) -> list[query.Query]:
    return [query_of(q) for q in request.queries]


def search_options_of(request: pb.SearchRequest) -> query.SearchOptions:
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


# -- responses out -------------------------------------------------------------------------------


def pack_table_info(t: Table) -> pb.TableInfo:
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


def pack_list_tables(tables: Sequence[Table], default: str) -> pb.ListTablesResponse:
    return pb.ListTablesResponse(tables=[pack_table_info(t) for t in tables], default_table=default)


def pack_lookup(t: Table, r: query.LookupArrays) -> pb.LookupResponse:
    return pb.LookupResponse(
        table=t.name, version=t.version, vector_size=t.dim, rows=len(r.vectors), vectors=_f32(r.vectors), found=_flags(r.found), ids=_i64(r.ids)
    )


def pack_search(t: Table, r: query.SearchArrays) -> pb.SearchResponse:
    nq, topn = r.ids.shape
    return pb.SearchResponse(table=t.name, version=t.version, topn=topn, queries=nq, ids=_i64(r.ids), scores=_f32(r.scores), keys=r.keys)


def pack_similarity(t: Table, scores: np.ndarray) -> pb.SimilarityResponse:
    return pb.SimilarityResponse(table=t.name, version=t.version, scores=_f32(scores))


def pack_tokenize(t: Table, encodings: Sequence[tokenizer_table.Encoding]) -> pb.TokenizeResponse:
    return pb.TokenizeResponse(table=t.name, version=t.version, texts=[pb.TokenizedText(ids=e.ids, tokens=e.tokens) for e in encodings])


def embed_options_of(request: pb.EmbedRequest) -> dict[str, Any]:
    """:func:`embserve_server.embed.embed`'s arguments; unset ``normalize``/``truncate`` mean true/512."""
    return {
        "texts": list(request.texts),
        "token_ids": [t.ids for t in request.token_ids],
        "normalize": request.normalize if request.HasField("normalize") else True,
        "truncate": request.truncate if request.HasField("truncate") else embed.DEFAULT_TRUNCATE,
        "dimensions": request.dimensions,
    }


def pack_embed(t: Table, r: embed.Embedded) -> pb.EmbedResponse:
    return pb.EmbedResponse(
        table=t.name, version=t.version, vector_size=r.vectors.shape[1], vectors=_f32(r.vectors),
        tokens=r.tokens.tolist(), unknown=r.unknown.tolist(), truncated=r.truncated.tolist(),
    )


def pack_lookup_text(t: Table, r: tokenizer_table.TextRows) -> pb.LookupTextResponse:
    return pb.LookupTextResponse(
        table=t.name, version=t.version, vector_size=t.dim, ids=r.ids, tokens=r.tokens, vectors=_f32(r.vectors), mean=_f32(r.mean)
    )


def pack_list_keys(t: Table, keys: list[str]) -> pb.ListKeysResponse:
    return pb.ListKeysResponse(table=t.name, version=t.version, count=t.count, keys=keys)


def pack_cosmul(t: Table, ids_scores: tuple[np.ndarray, np.ndarray]) -> pb.MostSimilarCosmulResponse:
    ids, scores = ids_scores
    return pb.MostSimilarCosmulResponse(table=t.name, version=t.version, ids=_i64(ids), scores=_f32(scores), keys=t.index_to_key[ids].tolist())


def pack_centrality(t: Table, found_scores: tuple[np.ndarray, np.ndarray]) -> pb.RankByCentralityResponse:
    found, scores = found_scores
    return pb.RankByCentralityResponse(table=t.name, version=t.version, found=_flags(found), scores=_f32(scores))


def pack_closer_than(t: Table, ids: np.ndarray, *, count_only: bool) -> pb.CloserThanResponse:
    if count_only:
        return pb.CloserThanResponse(table=t.name, version=t.version, count=len(ids))
    return pb.CloserThanResponse(table=t.name, version=t.version, count=len(ids), ids=_i64(ids), keys=t.index_to_key[ids].tolist())


def pack_word_pairs(t: Table, found_scores: tuple[np.ndarray, np.ndarray]) -> pb.EvaluateWordPairsResponse:
    found, scores = found_scores
    return pb.EvaluateWordPairsResponse(table=t.name, version=t.version, found=_flags(found), scores=_f32(scores))


def pack_word_analogies(t: Table, found_correct_search: tuple[np.ndarray, np.ndarray, str]) -> pb.EvaluateWordAnalogiesResponse:
    found, correct, search = found_correct_search
    return pb.EvaluateWordAnalogiesResponse(table=t.name, version=t.version, found=_flags(found), correct=_flags(correct), search=search)


def pack_reload(outcomes: Sequence[ReloadOutcome], tables: Sequence[Table]) -> pb.ReloadResponse:
    return pb.ReloadResponse(
        outcomes=[pb.ReloadOutcome(table=o.table, outcome=o.outcome, version=o.version, message=o.message) for o in outcomes],
        tables=[pack_table_info(t) for t in tables],
    )

"""The one place where protobuf meets numpy: request fields in, ``pack_*`` response messages out.

The servicer (service.py) hands request fields to the core and the core's arrays to one
``pack_*`` per response type; every byte that goes on the wire is packed here, in the proto's
conventions (``pack_lookup``, the call that carries most bytes, writes its wire bytes itself: :class:`Encoded`): vectors as one little-endian float32 ``bytes`` field (rows x dim), ids as
little-endian int64, found/correct flags one byte each. Every response names the table version
that answered it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from embserve_client.pb import embserve_pb2 as pb
from embserve_format.arrays import LE_F32, LE_I64

from embserve_server import embed, query, subword, tokenizer_table
from embserve_server.config import Limits
from embserve_server.registry import ReloadOutcome, TableRegistry
from embserve_server.tables import Table
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


def pack_table_info(t: Table, labels: dict[str, int] | None = None) -> pb.TableInfo:
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
        labels=labels or {},
    )


def _tables(registry: TableRegistry) -> list[pb.TableInfo]:
    """Every serving version's info, with its table's labels."""
    return [pack_table_info(t, registry.labels(t.name)) for t in registry.all()]


def _outcome(o: ReloadOutcome) -> pb.ReloadOutcome:
    return pb.ReloadOutcome(table=o.table, outcome=o.outcome, version=o.version, message=o.message, reason=o.reason)


def pack_list_tables(registry: TableRegistry) -> pb.ListTablesResponse:
    return pb.ListTablesResponse(
        tables=_tables(registry), default_table=registry.default_name(), refusals=[_outcome(o) for o in registry.refusals()]
    )


class Encoded:
    """A response already in its wire bytes, for the handler to return in place of the message.

    grpc serializes a response with ``SerializeToString()`` (wrappers.serialize) and the call
    guard sizes it with ``ByteSize()``; both answer from ``data``. ``table``, ``version`` and
    ``found`` are the fields the wrappers read from an answer (the call log: the version that
    served; the metrics: ``found``, one byte per requested item, as on the wire).
    """

    __slots__ = ("data", "table", "version", "found")

    def __init__(self, data: bytes, table: str, version: int, found: bytes) -> None:
        self.data, self.table, self.version, self.found = data, table, version, found

    def SerializeToString(self) -> bytes:  # noqa: N802 - protobuf's name: grpc and the wrappers call it
        return self.data

    def ByteSize(self) -> int:  # noqa: N802 - protobuf's name
        return len(self.data)


def _varint(n: int) -> bytes:
    """protobuf's base-128 varint of ``n`` (a negative int32/int64 as its 64-bit two's complement)."""
    n &= (1 << 64) - 1
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _scalar(field: int, n: int) -> bytes:
    """Tag and varint of an integer field; nothing for 0 (proto3 leaves default values out)."""
    return _varint(field << 3) + _varint(n) if n else b""


def _length(field: int, size: int) -> bytes:
    """Tag and length of a ``bytes``/``string`` field holding ``size`` bytes; nothing when empty."""
    return _varint(field << 3 | 2) + _varint(size) if size else b""


_LOOKUP_FIELDS = {f.name: f.number for f in pb.LookupResponse.DESCRIPTOR.fields}


def pack_lookup(t: Table, r: query.LookupArrays | query.OneRow) -> Encoded:
    """A LookupResponse encoded by hand, byte for byte what ``pb.LookupResponse(...).SerializeToString()``
    gives (fields in number order, defaults left out; tests/pure/test_pack.py holds it to that).

    Why by hand: the vectors are most of a batch's bytes, and the message route copies them three
    times (``tobytes``, into the message, out of it on serialising); here they are copied once,
    from the array into the answer (a 1024-key GloVe answer: ~20 us against ~50 us). One known
    row (:class:`query.OneRow`) is copied from the mapped bytes without an array (~9 us against
    ~25 us with cold CPU caches, as a busy server runs each call).
    """
    if type(r) is query.OneRow:
        head, tail, rows, stride, name, version = t.derived("one-row answer", "rows", lambda: _one_row_parts(t))
        start = r.row * stride
        return Encoded(b"".join((head, rows[start : start + stride], tail, r.row.to_bytes(8, "little"))), name, version, _FOUND_FLAG)
    vectors = r.vectors if r.vectors.dtype is LE_F32 else r.vectors.astype(LE_F32)
    ids = r.ids if r.ids.dtype is LE_I64 else r.ids.astype(LE_I64)
    found = _flags(r.found)
    head, middle, tail = _lookup_framing(t.name, t.version, t.dim, len(vectors), len(ids))
    data = b"".join((head, np.ascontiguousarray(vectors), middle, found, tail, np.ascontiguousarray(ids)))  # type: ignore[arg-type]  # arrays are buffers: no tobytes
    return Encoded(data, t.name, t.version, found)


_FOUND_FLAG = b"\x01"  # the found byte of a row that was found


def _one_row_parts(t: Table) -> tuple[bytes, bytes, memoryview, int, str, int]:
    """What a one-row answer of ``t`` is made of: the framing before the row and after it (up to the
    id's eight bytes), the rows as bytes (no copy: ``vectors`` is vectors.npy's little-endian
    float32 in C order, as the bundle reader checks), a row's byte length, the name and the version."""
    head, middle, tail = _lookup_framing(t.name, t.version, t.dim, 1, 1)
    return head, middle + _FOUND_FLAG + tail, t.vectors.data.cast("B"), t.dim * 4, t.name, t.version


@functools.lru_cache(maxsize=1024)
def _lookup_framing(table: str, version: int, dim: int, rows: int, items: int) -> tuple[bytes, bytes, bytes]:
    """The bytes of a LookupResponse around its three arrays: before ``vectors``, before ``found``
    and before ``ids`` (a handful of shapes recur: the same for every call of one shape)."""
    f, name = _LOOKUP_FIELDS, table.encode("utf-8")
    head = b"".join((
        _length(f["table"], len(name)), name, _scalar(f["version"], version), _scalar(f["vector_size"], dim),
        _scalar(f["rows"], rows), _length(f["vectors"], rows * dim * 4),
    ))
    return head, _length(f["found"], items), _length(f["ids"], items * 8)


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


def pack_reload(outcomes: Sequence[ReloadOutcome], registry: TableRegistry) -> pb.ReloadResponse:
    return pb.ReloadResponse(outcomes=[_outcome(o) for o in outcomes], tables=_tables(registry))


def label_changes(request: pb.SetLabelsRequest) -> dict[str, int | None]:
    """label -> version to assign, or None to remove.

    Raises:
        ValueError: a label both assigned and removed.
    """
    both = sorted(set(request.assign) & set(request.remove))
    if both:
        raise ValueError(f"labels {both}: both assigned and removed")
    return {**dict(request.assign), **dict.fromkeys(request.remove)}


def pack_set_labels(table: str, labels: dict[str, int]) -> pb.SetLabelsResponse:
    return pb.SetLabelsResponse(table=table, labels=labels)

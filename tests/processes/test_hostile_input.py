"""The hostile-input catalogue: every bad request we know of, its exact status, and a server that
keeps answering afterwards. One real server (small limits) for the whole module.

Requests go through the generated stub, or as hand-made bytes through ``channel.unary_unary``
with identity serializers (the only way to put invalid UTF-8 or broken framing on the wire).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import make_table, running_server
from embserve_client.pb import embserve_pb2 as pb
from embserve_client.pb import embserve_pb2_grpc as pb_grpc
from embserve_server.app import Server
from embserve_server.config import Limits
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
DEADLINE = grpc.StatusCode.DEADLINE_EXCEEDED

LIMITS = Limits(
    max_keys=1000, max_queries=8, max_terms=8, max_pairs=50, max_topn=50, max_key_chars=64,
    max_texts=4, max_text_chars=100, max_ef_search=512, max_nprobe=64, max_message_bytes=8192,
)
DIM, COUNT = 16, 500
SERVICE = "/embserve.v1.EmbeddingService/"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tables = tmp_path_factory.mktemp("hostile") / "tables"
    make_table(tables, n=COUNT, dim=DIM)
    with running_server(tables, limits=LIMITS) as s:
        yield s


@pytest.fixture(scope="module")
def channel(server: Server) -> Iterator[grpc.Channel]:
    # A send limit above the server's receive limit, so oversized requests reach the server.
    opts = [("grpc.max_send_message_length", 1 << 20), ("grpc.max_receive_message_length", 1 << 20)]
    with grpc.insecure_channel(f"127.0.0.1:{server.port}", options=opts) as ch:
        yield ch


def call(channel: grpc.Channel, method: str, request: Any, timeout: float = 10.0) -> tuple[grpc.StatusCode, str]:
    """Send one request (a message or raw bytes) and return (status code, details)."""
    service = "/embserve.v1.AdminService/" if method == "Reload" else SERVICE
    raw = channel.unary_unary(service + method)  # identity serializers: bytes in, bytes out
    payload = request if isinstance(request, bytes) else request.SerializeToString()
    try:
        raw(payload, timeout=timeout)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return OK, ""


def still_serving(channel: grpc.Channel) -> None:
    stub = pb_grpc.EmbeddingServiceStub(channel)
    resp = stub.Lookup(pb.LookupRequest(keys=["w1", "w2"]), timeout=10)
    assert (resp.table, resp.version, resp.rows) == ("t", 1, 2)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2), hand-encoded."""
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


def vec(*values: float, n: int = DIM) -> bytes:
    v = np.zeros(n, np.float32)
    v[: len(values)] = values
    return v.tobytes()


Q = pb.Query
S = pb.SearchRequest
w1 = Q(positive=["w1"])

# (id, method, request, expected code, substring of the details or None)
CASES: list[tuple[str, str, Any, grpc.StatusCode, str | None]] = [
    # -- Lookup
    ("lookup-empty", "Lookup", pb.LookupRequest(), INVALID, "names no key and no id"),
    ("lookup-empty-key", "Lookup", pb.LookupRequest(keys=["w1", ""]), INVALID, "item 1 ('') is not a key"),
    ("lookup-long-key", "Lookup", pb.LookupRequest(keys=["x" * 65]), INVALID, "65 characters is over the limit of 64"),
    ("lookup-huge-key", "Lookup", pb.LookupRequest(keys=["x" * 7000]), INVALID, "7000 characters is over the limit of 64"),
    ("lookup-keys-and-ids", "Lookup", pb.LookupRequest(keys=["w1"], ids=[1]), INVALID, "not both"),
    ("lookup-id-out-of-range", "Lookup", pb.LookupRequest(ids=[COUNT]), INVALID, f"id {COUNT} is out of range [0, {COUNT})"),
    ("lookup-negative-id", "Lookup", pb.LookupRequest(ids=[3, -1]), INVALID, "id -1 is out of range"),
    ("lookup-int64-min-id", "Lookup", pb.LookupRequest(ids=[-(2**63)]), INVALID, "out of range"),
    ("lookup-int64-max-id", "Lookup", pb.LookupRequest(ids=[2**63 - 1]), INVALID, "out of range"),
    ("lookup-too-many-keys", "Lookup", pb.LookupRequest(ids=[0] * 1001), INVALID, "ids: 1001 is over the limit of 1000"),
    ("lookup-unknown-policy", "Lookup", pb.LookupRequest(keys=["w1"], missing=99), INVALID, "missing"),
    ("lookup-unknown-table", "Lookup", pb.LookupRequest(table="nope", keys=["w1"]), NOT_FOUND, "'nope' not found"),
    ("lookup-path-table", "Lookup", pb.LookupRequest(table="../../etc", keys=["w1"]), NOT_FOUND, "not found"),
    ("lookup-huge-table-name", "Lookup", pb.LookupRequest(table="t" * 7000, keys=["w1"]), NOT_FOUND, "not found"),
    ("lookup-missing-key", "Lookup", pb.LookupRequest(keys=["w1", "nope"]), NOT_FOUND, "Key 'nope' not present"),
    ("lookup-subword-policy", "Lookup", pb.LookupRequest(keys=["nope"], missing=pb.MISSING_POLICY_SUBWORD), PRECONDITION, "subword"),
    ("lookup-response-over-limit", "Lookup", pb.LookupRequest(ids=list(range(200))), INVALID, "over the limit of 8192"),
    # -- raw bytes: invalid UTF-8 and broken framing never reach the handler
    ("raw-invalid-utf8-key", "Lookup", field(2, b"w\xff\xfe"), INVALID, "not a valid LookupRequest"),
    ("raw-invalid-utf8-table", "Lookup", field(1, b"\xc3\x28") + field(2, b"w1"), INVALID, "not a valid LookupRequest"),
    ("raw-overlong-utf8", "Similarity", field(2, b"\xc0\xaf") + field(3, b"w1"), INVALID, "not a valid SimilarityRequest"),
    ("raw-surrogate-utf8", "Search", field(2, field(1, b"\xed\xa0\x80")), INVALID, "not a valid SearchRequest"),
    ("raw-truncated-field", "Lookup", b"\x12\x50w1", INVALID, "not a valid LookupRequest"),
    ("raw-bad-varint", "Lookup", b"\x18" + b"\xff" * 11, INVALID, "not a valid LookupRequest"),
    ("raw-bad-wire-type", "Search", b"\x0f\x00", INVALID, "not a valid SearchRequest"),
    ("raw-garbage", "ListTables", b"\xff\xff\xff\xff", INVALID, "not a valid ListTablesRequest"),
    ("raw-empty-lookup", "Lookup", b"", INVALID, "names no key and no id"),
    ("raw-unknown-fields-ignored", "ListTables", field(15, b"x"), OK, None),
    # -- Search
    ("search-empty", "Search", S(), INVALID, "holds no query"),
    ("search-empty-query", "Search", S(queries=[Q()]), INVALID, "queries[0]: needs"),
    ("search-topn-negative", "Search", S(queries=[w1], topn=-1), INVALID, "topn: -1 must be positive"),
    ("search-topn-over-limit", "Search", S(queries=[w1], topn=51), INVALID, "topn: 51 is over the limit of 50"),
    ("search-topn-zero-is-default", "Search", S(queries=[w1], topn=0), OK, None),
    ("search-restrict-negative", "Search", S(queries=[w1], restrict_vocab=-5), INVALID, "restrict_vocab: -5"),
    ("search-restrict-zero-is-all", "Search", S(queries=[w1], restrict_vocab=0), OK, None),
    ("search-restrict-above-count", "Search", S(queries=[w1], restrict_vocab=2**62), OK, None),
    ("search-ef-negative", "Search", S(queries=[w1], ef_search=-1), INVALID, "must not be negative"),
    ("search-ef-over-limit", "Search", S(queries=[w1], ef_search=2**31 - 1), INVALID, "ef_search: 2147483647 is over the limit of 512"),
    ("search-nprobe-over-limit", "Search", S(queries=[w1], nprobe=65), INVALID, "nprobe: 65 is over the limit of 64"),
    ("search-min-score-nan", "Search", S(queries=[w1], min_score=float("nan")), INVALID, "min_score"),
    ("search-too-many-queries", "Search", S(queries=[w1] * 9), INVALID, "queries: 9 is over the limit of 8"),
    ("search-too-many-terms", "Search", S(queries=[Q(positive=[f"w{i}" for i in range(9)])]), INVALID, "terms: 9 is over the limit of 8"),
    ("search-vector-short", "Search", S(queries=[Q(vector=vec(1.0, n=DIM - 1))]), INVALID, f"has {DIM - 1} values"),
    ("search-vector-long", "Search", S(queries=[Q(vector=vec(1.0, n=DIM + 1))]), INVALID, f"has {DIM + 1} values"),
    ("search-vector-ragged-bytes", "Search", S(queries=[Q(vector=b"\x00" * 7)]), INVALID, "7 bytes is not a whole number"),
    ("search-vector-nan", "Search", S(queries=[Q(vector=vec(float("nan")))]), INVALID, "NaN or Inf"),
    ("search-vector-inf", "Search", S(queries=[Q(vector=vec(1.0, float("inf")))]), INVALID, "NaN or Inf"),
    ("search-vector-neg-inf", "Search", S(queries=[Q(vector=vec(float("-inf")))]), INVALID, "NaN or Inf"),
    ("search-vector-zero-ok", "Search", S(queries=[Q(vector=vec())]), OK, None),
    ("search-vector-norm-overflow", "Search", S(queries=[Q(vector=vec(*[3e38] * DIM))]), INVALID, "norm overflows float32"),
    ("search-weights-overflow", "Search", S(queries=[Q(positive=["w1", "w2"], positive_weights=[3e38, 3e38])]), INVALID, "norm overflows"),
    ("search-vector-and-keys", "Search", S(queries=[Q(vector=vec(1.0), positive=["w1"])]), INVALID, "not both"),
    ("search-negative-id", "Search", S(queries=[Q(positive_ids=[-3])]), INVALID, "id -3 is out of range"),
    ("search-id-out-of-range", "Search", S(queries=[Q(negative_ids=[COUNT])]), INVALID, "out of range"),
    ("search-empty-key", "Search", S(queries=[Q(positive=[""])]), INVALID, "non-empty"),
    ("search-long-key", "Search", S(queries=[Q(negative=["y" * 100])]), INVALID, "over the limit of 64"),
    ("search-weights-mismatch", "Search", S(queries=[Q(positive=["w1"], positive_weights=[1, 2])]), INVALID, "2 weights for 1 terms"),
    ("search-weight-nan", "Search", S(queries=[Q(positive=["w1"], positive_weights=[float("nan")])]), INVALID, "finite"),
    ("search-weight-inf", "Search", S(queries=[Q(negative=["w1"], negative_weights=[float("inf")])]), INVALID, "finite"),
    ("search-missing-key", "Search", S(queries=[Q(positive=["w1"], negative=["nope"])]), NOT_FOUND, "Key 'nope' not present"),
    ("search-unknown-table", "Search", S(table="x", queries=[w1]), NOT_FOUND, "'x' not found"),
    ("search-skip-special-no-tokenizer", "Search", S(queries=[w1], skip_special_tokens=True), PRECONDITION, "no tokenizer"),
    # -- Similarity
    ("similarity-empty", "Similarity", pb.SimilarityRequest(), INVALID, "holds no pair"),
    ("similarity-ragged", "Similarity", pb.SimilarityRequest(a=["w1", "w2"], b=["w3"]), INVALID, "2 vs 1"),
    ("similarity-too-many", "Similarity", pb.SimilarityRequest(a=["w1"] * 51, b=["w2"] * 51), INVALID, "pairs: 51 is over the limit of 50"),
    ("similarity-empty-key", "Similarity", pb.SimilarityRequest(a=["w1"], b=[""]), INVALID, "non-empty"),
    ("similarity-missing-key", "Similarity", pb.SimilarityRequest(a=["w1"], b=["nope"]), NOT_FOUND, "Key 'nope'"),
    # -- tokenizer calls on a table without a tokenizer
    ("tokenize-no-tokenizer", "Tokenize", pb.TokenizeRequest(texts=["hi"]), PRECONDITION, "no tokenizer"),
    ("tokenize-empty-no-tokenizer", "Tokenize", pb.TokenizeRequest(), PRECONDITION, "no tokenizer"),
    ("lookup-text-no-tokenizer", "LookupText", pb.LookupTextRequest(text="hi"), PRECONDITION, "no tokenizer"),
    # -- Reload: names are validated before anything touches the filesystem
    ("reload-dotdot", "Reload", pb.ReloadRequest(table="../x"), INVALID, "invalid table name '../x'"),
    ("reload-absolute", "Reload", pb.ReloadRequest(table="/etc"), INVALID, "invalid table name '/etc'"),
    ("reload-traversal", "Reload", pb.ReloadRequest(table="a/../../b"), INVALID, "invalid table name"),
    ("reload-dot", "Reload", pb.ReloadRequest(table="."), INVALID, "invalid table name"),
    ("reload-hidden", "Reload", pb.ReloadRequest(table=".tmp-1-x"), INVALID, "invalid table name"),
    ("reload-too-long", "Reload", pb.ReloadRequest(table="a" * 65), INVALID, "invalid table name"),
    ("reload-nul", "Reload", pb.ReloadRequest(table="t\x00"), INVALID, "invalid table name"),
    ("reload-unknown-valid-name", "Reload", pb.ReloadRequest(table="absent"), OK, None),
    ("reload-all", "Reload", pb.ReloadRequest(), OK, None),
]


@pytest.mark.parametrize(("method", "request_", "code", "details"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_catalogue(channel: grpc.Channel, method: str, request_: Any, code: grpc.StatusCode, details: str | None) -> None:
    got, message = call(channel, method, request_)
    assert got == code, f"{got.name}: {message}"
    if details is not None:
        assert details in message
    assert len(message) <= 1000  # error details are bounded whatever the request held
    still_serving(channel)


def test_internal_never_counted(channel: grpc.Channel, server: Server) -> None:
    for _, method, request, _, _ in CASES:
        call(channel, method, request)
    for method in ("Lookup", "Search", "Similarity", "Tokenize", "LookupText", "ListTables", "Reload"):
        for code in ("INTERNAL", "UNKNOWN"):
            assert server.metrics.registry.get_sample_value("embserve_requests_total", {"method": method, "code": code}) == 0


def test_request_over_the_size_limit(channel: grpc.Channel) -> None:
    """Over --max-message-bytes the gRPC transport refuses before our code runs: RESOURCE_EXHAUSTED."""
    got, message = call(channel, "Lookup", pb.LookupRequest(keys=["x" * 9000]))
    assert got == EXHAUSTED, message
    assert "larger than max" in message
    still_serving(channel)


def test_unknown_method(channel: grpc.Channel) -> None:
    got, _ = call(channel, "NoSuchMethod", b"")
    assert got == grpc.StatusCode.UNIMPLEMENTED
    still_serving(channel)


def test_expired_deadline(channel: grpc.Channel) -> None:
    for timeout in (1e-9, 1e-6, 1e-3):
        got, _ = call(channel, "Search", S(queries=[w1] * 8, exact=True, topn=50), timeout=timeout)
        assert got in (DEADLINE, OK)  # 1 ms may be enough on an idle machine
    got, _ = call(channel, "Lookup", pb.LookupRequest(keys=["w1"]), timeout=-1.0)  # already in the past
    assert got == DEADLINE
    still_serving(channel)


def _hold_worker(channel: grpc.Channel) -> tuple[threading.Event, threading.Thread]:
    """Open a reflection stream and keep it open: it occupies one handler thread until released."""
    release, answered = threading.Event(), threading.Event()

    def requests() -> Iterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        release.wait(30)

    def run() -> None:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        for _ in stub.ServerReflectionInfo(requests(), timeout=60):
            answered.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert answered.wait(30), "reflection stream did not answer"
    return release, thread


def test_deadline_expired_in_queue_is_not_worked_on(tmp_path: Path) -> None:
    """A call whose deadline passes while it waits for a handler thread is dropped, not computed."""
    tables = tmp_path / "tables"
    make_table(tables, n=100, dim=8)
    with running_server(tables, threads=1) as server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        release, thread = _hold_worker(ch)  # the only handler thread is busy
        got, _ = call(ch, "Lookup", pb.LookupRequest(keys=["w1"]), timeout=0.3)
        assert got == DEADLINE
        release.set()
        thread.join(30)
        still_serving(ch)  # one handler thread, FIFO queue: the expired call has been dealt with
        get = server.metrics.registry.get_sample_value
        assert get("embserve_requests_total", {"method": "Lookup", "code": "OK"}) == 1  # only still_serving's


def test_flood_of_garbage_then_normal(channel: grpc.Channel) -> None:
    """Many concurrent undecodable calls: all refused with INVALID_ARGUMENT, none wedges a thread."""
    rng = np.random.default_rng(1)
    payloads = [b"\x12" + bytes([100]) + rng.bytes(int(n)) for n in rng.integers(0, 99, size=200)]
    raw: Callable[..., Any] = channel.unary_unary(SERVICE + "Lookup")
    futures = [raw.future(p, timeout=30) for p in payloads]
    codes = {f.exception().code() if f.exception() else OK for f in futures}  # type: ignore[union-attr]
    assert codes == {INVALID}
    still_serving(channel)

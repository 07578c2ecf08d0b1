"""Property-based tests (hypothesis) against one real server: ~3,000 generated requests in all.

Well-formed messages with arbitrary field values get only documented statuses (OK,
INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION), never INTERNAL or UNKNOWN; arbitrary bytes on
the wire never crash or wedge the server. Each test then asserts its own verdict: a normal request
still succeeds and the server counted no INTERNAL or UNKNOWN status during its examples.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import make_table, running_server
from embserve_client.pb import embserve_pb2 as pb
from embserve_server.app import Server
from embserve_server.config import Limits
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

COUNT, DIM = 300, 16
LIMITS = Limits(max_keys=200, max_queries=16, max_terms=16, max_pairs=100, max_topn=100, max_key_chars=64,
                max_texts=8, max_text_chars=200, max_ef_search=1024, max_nprobe=256, max_message_bytes=64 * 1024)
DOCUMENTED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}
METHODS = {
    "ListTables": "/embserve.v1.EmbeddingService/ListTables",
    "Lookup": "/embserve.v1.EmbeddingService/Lookup",
    "Search": "/embserve.v1.EmbeddingService/Search",
    "Similarity": "/embserve.v1.EmbeddingService/Similarity",
    "Tokenize": "/embserve.v1.EmbeddingService/Tokenize",
    "LookupText": "/embserve.v1.EmbeddingService/LookupText",
    "ListKeys": "/embserve.v1.EmbeddingService/ListKeys",
    "MostSimilarCosmul": "/embserve.v1.EmbeddingService/MostSimilarCosmul",
    "RankByCentrality": "/embserve.v1.EmbeddingService/RankByCentrality",
    "CloserThan": "/embserve.v1.EmbeddingService/CloserThan",
    "EvaluateWordPairs": "/embserve.v1.EmbeddingService/EvaluateWordPairs",
    "EvaluateWordAnalogies": "/embserve.v1.EmbeddingService/EvaluateWordAnalogies",
    "Reload": "/embserve.v1.AdminService/Reload",
}


def examples(n: int) -> settings:
    # No example database: nothing is written into the repository; failures print a reproduction blob.
    return settings(max_examples=n, deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tables = tmp_path_factory.mktemp("prop") / "tables"
    make_table(tables, n=COUNT, dim=DIM)
    with running_server(tables, limits=LIMITS) as s:
        yield s


@pytest.fixture(scope="module")
def channel(server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


def send(channel: grpc.Channel, method: str, payload: bytes) -> tuple[grpc.StatusCode, bytes]:
    try:
        return grpc.StatusCode.OK, channel.unary_unary(METHODS[method])(payload, timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() in DOCUMENTED, f"{method}: {exc.code().name}: {exc.details()}"
        return exc.code(), b""


def check(channel: grpc.Channel, method: str, request: Any) -> grpc.StatusCode:
    code, raw = send(channel, method, request.SerializeToString())
    event(code.name)  # --hypothesis-show-statistics shows the mix of statuses
    if code == grpc.StatusCode.OK and method == "Lookup":  # answers are well-formed too
        resp = pb.LookupResponse.FromString(raw)
        assert len(resp.vectors) == resp.rows * resp.vector_size * 4 and resp.version == 1
    if code == grpc.StatusCode.OK and method == "Search":
        resp = pb.SearchResponse.FromString(raw)
        assert len(resp.ids) == 8 * resp.queries * resp.topn and len(resp.keys) == resp.queries * resp.topn
    return code


def internal_errors(server: Server) -> dict[tuple[str, str], float]:
    """The server's INTERNAL and UNKNOWN counts per method (never labels anything else)."""
    get = server.metrics.registry.get_sample_value
    return {(m, c): get("embserve_requests_total", {"method": m, "code": c}) or 0.0 for m in METHODS for c in ("INTERNAL", "UNKNOWN")}


def run_property(channel: grpc.Channel, server: Server, prop: Any) -> None:
    """Run the hypothesis property ``prop`` (every example), then this test's own verdict: the server
    still answers a normal request and counted no INTERNAL or UNKNOWN status during the property."""
    before = internal_errors(server)
    prop()
    assert send(channel, "Lookup", pb.LookupRequest(keys=["w1"]).SerializeToString())[0] == grpc.StatusCode.OK, "not serving after the property"
    grown = {k: v - before[k] for k, v in internal_errors(server).items() if v != before[k]}
    assert not grown, f"statuses that are never documented were counted: {grown}"


# -- strategies -----------------------------------------------------------------------------------
# Mostly plausible values (so requests get deep into the query code and often succeed), mixed
# with arbitrary ones (so every check on the way is hit).

known_keys = st.sampled_from([f"w{i}" for i in (0, 1, 2, 17, 150, COUNT - 1)])
keys = st.one_of(known_keys, known_keys, known_keys, st.text(max_size=80), st.just(""), st.text(alphabet="w0123456789", max_size=4))
key_lists = st.one_of(st.lists(known_keys, min_size=1, max_size=12), st.lists(keys, max_size=12))
int64 = st.integers(-(2**63), 2**63 - 1)
int32 = st.integers(-(2**31), 2**31 - 1)
good_ids = st.integers(0, COUNT - 1)
ids = st.one_of(good_ids, good_ids, st.integers(-3, COUNT + 3), int64)
f32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
finite = st.floats(-10, 10, width=32)
good_table = st.sampled_from(["", "t"])
tables = st.one_of(good_table, good_table, good_table, good_table, st.sampled_from(["nope", "../t", "t" * 200]))
rarely = st.sampled_from([False] * 7 + [True])
small = st.one_of(st.integers(0, 100), st.integers(-3, 120), int32)
vectors = st.one_of(
    st.lists(finite, min_size=DIM, max_size=DIM).map(lambda v: np.asarray(v, np.float32).tobytes()),
    st.lists(f32, min_size=DIM, max_size=DIM).map(lambda v: np.asarray(v, np.float32).tobytes()),
    st.binary(max_size=70),
)
plausible_queries = st.one_of(
    st.builds(pb.Query, vector=vectors),
    st.builds(pb.Query, positive=st.lists(known_keys, min_size=1, max_size=4), negative=st.lists(known_keys, max_size=2)),
    st.builds(pb.Query, positive_ids=st.lists(good_ids, min_size=1, max_size=4), negative_ids=st.lists(good_ids, max_size=2)),
)
arbitrary_queries = st.builds(
    pb.Query,
    positive=key_lists, negative=st.lists(keys, max_size=4),
    positive_ids=st.lists(ids, max_size=4), negative_ids=st.lists(ids, max_size=3),
    positive_weights=st.lists(f32, max_size=5), negative_weights=st.lists(f32, max_size=4),
    vector=st.one_of(st.just(b""), vectors),
)
queries = st.one_of(plausible_queries, plausible_queries, arbitrary_queries)


@st.composite
def search_requests(draw: st.DrawFn) -> pb.SearchRequest:
    req = pb.SearchRequest(
        table=draw(tables), queries=draw(st.lists(queries, max_size=20)), topn=draw(small),
        include_query_keys=draw(st.booleans()), exact=draw(st.booleans()),
        ef_search=draw(st.one_of(st.just(0), small)), nprobe=draw(st.one_of(st.just(0), small)),
        restrict_vocab=draw(st.one_of(st.just(0), st.integers(-3, COUNT + 3), int64)),
        skip_special_tokens=draw(rarely), skip_subword_tokens=draw(rarely),
    )
    if draw(st.booleans()):
        req.min_score = draw(st.one_of(finite, f32))
    return req


@st.composite
def lookups(draw: st.DrawFn) -> pb.LookupRequest:
    req = pb.LookupRequest(table=draw(tables), missing=draw(st.one_of(st.integers(0, 4), st.integers(0, 2**31 - 1))), normalize=draw(st.booleans()))
    shape = draw(st.sampled_from(["keys", "keys", "ids", "ids", "many", "both", "neither"]))
    if shape in ("keys", "both"):
        req.keys.extend(draw(key_lists))
    if shape in ("ids", "both"):
        req.ids.extend(draw(st.lists(ids, max_size=12)))
    if shape == "many":  # around the max_keys limit and the response size limit
        req.ids.extend(draw(st.lists(good_ids, min_size=150, max_size=250)))
    return req


@st.composite
def similarities(draw: st.DrawFn) -> pb.SimilarityRequest:
    n = draw(st.integers(0, 110))
    pick = draw(st.sampled_from([known_keys, known_keys, keys]))
    a = draw(st.lists(pick, min_size=n, max_size=n))
    b = draw(st.one_of(st.lists(pick, min_size=n, max_size=n), st.lists(pick, min_size=n, max_size=n), st.lists(keys, max_size=110)))
    return pb.SimilarityRequest(table=draw(tables), a=a, b=b)


texts = st.one_of(
    st.builds(pb.TokenizeRequest, table=tables, texts=st.lists(st.text(max_size=300), max_size=10), add_special_tokens=st.booleans()),
    st.builds(pb.LookupTextRequest, table=tables, text=st.text(max_size=300), add_special_tokens=st.booleans(), mean=st.booleans()),
)


# -- properties: each test runs its examples, then asserts its own verdict (run_property) -----------


def test_lookup_requests_get_documented_statuses(channel: grpc.Channel, server: Server) -> None:
    @examples(700)
    @given(request=lookups())
    def prop(request: pb.LookupRequest) -> None:
        check(channel, "Lookup", request)

    run_property(channel, server, prop)


def test_search_requests_get_documented_statuses(channel: grpc.Channel, server: Server) -> None:
    @examples(900)
    @given(request=search_requests())
    def prop(request: pb.SearchRequest) -> None:
        check(channel, "Search", request)

    run_property(channel, server, prop)


def test_similarity_requests_get_documented_statuses(channel: grpc.Channel, server: Server) -> None:
    @examples(350)
    @given(request=similarities())
    def prop(request: pb.SimilarityRequest) -> None:
        check(channel, "Similarity", request)

    run_property(channel, server, prop)


def test_text_requests_get_documented_statuses(channel: grpc.Channel, server: Server) -> None:
    @examples(150)
    @given(request=texts)
    def prop(request: Any) -> None:
        check(channel, "Tokenize" if isinstance(request, pb.TokenizeRequest) else "LookupText", request)

    run_property(channel, server, prop)


def test_reload_names_get_documented_statuses(channel: grpc.Channel, server: Server) -> None:
    @examples(150)
    @given(name=st.one_of(st.text(max_size=80), st.sampled_from(["t", "..", "../t", "/etc", "t/../../x", ".tmp-1", "a" * 65])))
    def prop(name: str) -> None:
        check(channel, "Reload", pb.ReloadRequest(table=name))

    run_property(channel, server, prop)


def test_arbitrary_bytes_never_crash_or_wedge(channel: grpc.Channel, server: Server) -> None:
    @examples(800)
    @given(method=st.sampled_from(sorted(METHODS)), payload=st.binary(max_size=300))
    def prop(method: str, payload: bytes) -> None:
        event(send(channel, method, payload)[0].name)

    run_property(channel, server, prop)

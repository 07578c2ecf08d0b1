"""The core slice against a real server on 127.0.0.1:0, checked with oracles (numpy, gensim)."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import make_table, running_server, seeded_table
from embserve_client import Client, FailedPreconditionError, InvalidArgumentError, UnknownKeyError, UnknownTableError
from embserve_client.pb import embserve_pb2 as pb
from embserve_format.bundle import read_bundle
from embserve_server.config import Limits


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def oracle_topn(vectors: np.ndarray, query: np.ndarray, topn: int, exclude: set[int] = frozenset()) -> tuple[list[int], np.ndarray]:
    scores = unit(vectors) @ unit(query)
    order = [int(i) for i in np.argsort(-scores, kind="stable") if int(i) not in exclude]
    return order[:topn], scores


def test_lookup_returns_exact_rows(client: Client, tables: Path) -> None:
    stored = read_bundle(tables / "t" / "1")
    keys = ["w5", "w0", "w1999", "w5"]
    got = client.get_vectors(keys)
    assert got.dtype == np.float32 and got.shape == (4, 16)
    assert np.array_equal(got, stored.vectors[[5, 0, 1999, 5]])
    assert not got.flags.writeable
    assert np.array_equal(client.get_vector("w7"), stored.vectors[7])
    by_id = client.lookup(ids=[3, 1])
    assert np.array_equal(by_id.vectors, stored.vectors[[3, 1]]) and list(by_id.ids) == [3, 1]
    assert (by_id.table, by_id.version) == ("t", 1)


def test_normalized_lookup(client: Client, tables: Path) -> None:
    stored = read_bundle(tables / "t" / "1")
    got = client.get_vectors(["w1", "w2"], normalize=True)
    assert np.allclose(got, unit(stored.vectors[[1, 2]]), atol=1e-6)


def test_missing_key_policies(client: Client, tables: Path) -> None:
    stored = read_bundle(tables / "t" / "1")
    keys = ["w1", "nope", "w2"]
    with pytest.raises(UnknownKeyError, match="Key 'nope' not present"):
        client.get_vectors(keys)
    skip = client.lookup(keys, missing="skip")
    assert list(skip.found) == [True, False, True] and list(skip.ids) == [1, -1, 2]
    assert np.array_equal(skip.vectors, stored.vectors[[1, 2]])
    zero = client.lookup(keys, missing="zero")
    assert zero.vectors.shape == (3, 16)
    assert np.array_equal(zero.vectors[[0, 2]], stored.vectors[[1, 2]]) and not zero.vectors[1].any()
    with pytest.raises(FailedPreconditionError, match="FAILED_PRECONDITION: table 't' has no subword n-grams: missing policy 'subword' needs a fastText table"):
        client.lookup(keys, missing="subword")


def test_exact_neighbours_match_numpy_oracle(client: Client, tables: Path) -> None:
    stored = read_bundle(tables / "t" / "1")
    for key_id in (0, 17, 1234):
        got = client.most_similar(f"w{key_id}", topn=10, exact=True)
        expected, scores = oracle_topn(stored.vectors, stored.vectors[key_id], 10, exclude={key_id})
        assert [n.id for n in got] == expected or np.allclose([n.score for n in got], scores[expected], atol=1e-5)  # ties
        assert [n.key for n in got] == [f"w{i}" for i in (n.id for n in got)]
        assert np.allclose([n.score for n in got], scores[[n.id for n in got]], atol=1e-5)
        assert all(n.id != key_id for n in got)


def test_query_keys_kept_on_request(client: Client) -> None:
    got = client.most_similar("w3", topn=3, include_query_keys=True, exact=True)
    assert got[0].key == "w3" and got[0].score == pytest.approx(1.0, abs=1e-5)


def test_similar_by_vector_restrict_and_threshold(client: Client, tables: Path) -> None:
    stored = read_bundle(tables / "t" / "1")
    q = np.random.default_rng(5).normal(size=16).astype(np.float32)
    got = client.similar_by_vector(q, topn=5, exact=True)
    expected, _ = oracle_topn(stored.vectors, q, 5)
    assert [n.id for n in got] == expected
    restricted = client.similar_by_vector(q, topn=5, exact=True, restrict_vocab=100)
    exp_r, _ = oracle_topn(stored.vectors[:100], q, 5)
    assert [n.id for n in restricted] == exp_r
    cut = client.similar_by_vector(q, topn=50, exact=True, min_score=0.5)
    assert cut and all(n.score >= 0.5 for n in cut) and len(cut) < 50


def test_approximate_recall(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    make_table(tables, n=5000, dim=16, factory="HNSW16,Flat")
    stored = read_bundle(tables / "t" / "1")
    queries = [f"w{i}" for i in range(0, 5000, 50)]
    with running_server(tables) as server, Client(f"127.0.0.1:{server.port}") as c:
        assert c.table_info().index == "HNSW16,Flat"
        approx = c.most_similar_batch(queries, topn=10)
    hits = 0
    for key, got in zip(queries, approx):
        i = int(key[1:])
        expected, _ = oracle_topn(stored.vectors, stored.vectors[i], 10, exclude={i})
        hits += len(set(expected) & {n.id for n in got})
    assert hits / (10 * len(queries)) >= 0.95


def test_analogies_agree_with_gensim(tmp_path: Path) -> None:
    from gensim.models import KeyedVectors

    vectors, keys = seeded_table(3000, 24, seed=3)
    tables = tmp_path / "tables"
    make_table(tables, n=3000, dim=24, seed=3)
    kv = KeyedVectors(24)
    kv.add_vectors(keys, vectors)
    cases = [(["w1", "w2"], ["w3"]), (["w10"], ["w20", "w30"]), ([("w5", 2.0), "w6"], [("w7", 0.5)])]
    with running_server(tables) as server, Client(f"127.0.0.1:{server.port}") as c:
        for pos, neg in cases:
            g_pos = [p if isinstance(p, tuple) else (p, 1.0) for p in pos]
            g_neg = [(n[0], -n[1]) if isinstance(n, tuple) else (n, -1.0) for n in neg]
            expected = kv.most_similar(positive=g_pos + g_neg, topn=10)
            got = c.most_similar(pos, neg, topn=10, exact=True)
            assert [n.key for n in got] == [k for k, _ in expected]
            assert np.allclose([n.score for n in got], [s for _, s in expected], atol=1e-5)
        # restrict_vocab like gensim's
        expected = kv.most_similar(positive=["w1"], topn=5, restrict_vocab=500)
        assert [n.key for n in c.most_similar("w1", topn=5, exact=True, restrict_vocab=500)] == [k for k, _ in expected]
        assert c.similarity("w1", "w2") == pytest.approx(float(kv.similarity("w1", "w2")), abs=1e-6)


def test_every_response_names_table_and_version(server: object, client: Client) -> None:
    stub = client.stub
    for resp in (
        stub.Lookup(pb.LookupRequest(keys=["w1"])),
        stub.Search(pb.SearchRequest(queries=[pb.Query(positive=["w1"])])),
        stub.Similarity(pb.SimilarityRequest(a=["w1"], b=["w2"])),
    ):
        assert (resp.table, resp.version) == ("t", 1)


def test_multiple_tables_and_default(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    make_table(tables, "alpha", n=100, dim=8)
    make_table(tables, "beta", n=200, dim=4)
    with running_server(tables, default_table="beta") as server, Client(f"127.0.0.1:{server.port}") as c:
        assert {t.name for t in c.list_tables()} == {"alpha", "beta"}
        assert c.get_vector("w1").shape == (4,)
        assert c.get_vector("w1", table="alpha").shape == (8,)
        with pytest.raises(UnknownTableError, match="'gamma' not found"):
            c.get_vector("w1", table="gamma")


def code_of(call: object, *args: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call(*args)  # type: ignore[operator]
    return info.value.code()  # type: ignore[no-any-return]


def test_error_paths_return_documented_status_and_server_keeps_serving(client: Client) -> None:
    s = client.stub
    INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    cases = [
        (s.Lookup, pb.LookupRequest(), INVALID),  # names nothing
        (s.Lookup, pb.LookupRequest(keys=["w1"], ids=[1]), INVALID),  # contradictory
        (s.Lookup, pb.LookupRequest(ids=[5000]), INVALID),  # out of range
        (s.Lookup, pb.LookupRequest(ids=[-1]), INVALID),
        (s.Lookup, pb.LookupRequest(keys=[""]), INVALID),
        (s.Lookup, pb.LookupRequest(keys=["nope"]), NOT_FOUND),
        (s.Lookup, pb.LookupRequest(table="nope", keys=["w1"]), NOT_FOUND),
        (s.Search, pb.SearchRequest(), INVALID),
        (s.Search, pb.SearchRequest(queries=[pb.Query()]), INVALID),
        (s.Search, pb.SearchRequest(queries=[pb.Query(positive=["w1"])], topn=-1), INVALID),
        (s.Search, pb.SearchRequest(queries=[pb.Query(positive=["w1"])], topn=100_000), INVALID),
        (s.Search, pb.SearchRequest(queries=[pb.Query(positive=["w1"])], restrict_vocab=-5), INVALID),
        (s.Search, pb.SearchRequest(queries=[pb.Query(vector=b"\x00" * 12)]), INVALID),  # wrong length
        (s.Search, pb.SearchRequest(queries=[pb.Query(vector=np.full(16, np.nan, np.float32).tobytes())]), INVALID),
        (s.Search, pb.SearchRequest(queries=[pb.Query(vector=b"\x00" * 64, positive=["w1"])]), INVALID),
        (s.Search, pb.SearchRequest(queries=[pb.Query(positive=["missing"])]), NOT_FOUND),
        (s.Search, pb.SearchRequest(queries=[pb.Query(positive=["w1"], positive_weights=[1, 2])]), INVALID),
        (s.Similarity, pb.SimilarityRequest(a=["w1"], b=[]), INVALID),
        (s.Similarity, pb.SimilarityRequest(a=["w1"], b=["nope"]), NOT_FOUND),
        (s.Tokenize, pb.TokenizeRequest(texts=["hi"]), grpc.StatusCode.FAILED_PRECONDITION),
    ]
    for call, request, code in cases:
        assert code_of(call, request) == code, request
    assert client.get_vector("w1").shape == (16,)  # still serving


def test_limits_are_enforced_with_invalid_argument(tmp_path: Path, tables: Path) -> None:
    limits = Limits(max_keys=10, max_queries=3, max_topn=5, max_key_chars=8)
    with running_server(tables, limits=limits) as server, Client(f"127.0.0.1:{server.port}") as c:
        with pytest.raises(InvalidArgumentError, match="keys: 11 is over the limit of 10"):
            c.lookup([f"w{i}" for i in range(11)], max_keys_per_call=100)
        with pytest.raises(InvalidArgumentError, match="topn: 6 is over the limit of 5"):
            c.most_similar("w1", topn=6)
        with pytest.raises(InvalidArgumentError, match="queries: 4 is over the limit of 3"):
            c.most_similar_batch(["w1", "w2", "w3", "w4"], topn=5)
        with pytest.raises(InvalidArgumentError, match="over the limit of 8"):
            c.get_vector("x" * 9)
        # the client splits big batches under the server's key limit
        got = c.lookup([f"w{i}" for i in range(25)], max_keys_per_call=10)
        assert list(got.ids) == list(range(25))


def test_message_size_limit(tables: Path) -> None:
    limits = Limits(max_message_bytes=4096)
    with running_server(tables, limits=limits) as server:
        with Client(f"127.0.0.1:{server.port}") as big:
            # 200 keys * 16 dims * 4 bytes = 12.8 kB response > 4 kB: the server refuses to send it,
            # with the code README's limits table gives an answer over --max-message-bytes
            with pytest.raises(InvalidArgumentError, match=r"INVALID_ARGUMENT: response: \d+ bytes is over the limit of 4096 \(--max-message-bytes\); ask for fewer rows per call"):
                big.lookup([f"w{i}" for i in range(200)])
        with Client(f"127.0.0.1:{server.port}", max_message_bytes=4096) as small:
            got = small.lookup([f"w{i}" for i in range(2000)])  # split into calls under 4 kB
            assert got.vectors.shape == (2000, 16) and got.ids[-1] == 1999

"""Each fast path answers exactly what its general (batch) path does.

The choice lives inside the core function each one speeds up (``query.lookup``: ``_one_known_row``;
``query.search``: ``_plain_search_row``; ``query.query_matrix``: ``_single_key_rows``) and the
one-row search in the index (``VectorIndex.nearest_to_row``), and pooling of one text
(``embserve_format.text.pool``) with the normalisation it ends in (``unit``); each is compared with its
general path. One text of ``Embed`` against the same text in a batch: tests/processes/test_embed.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_table
from embserve_client.pb import embserve_pb2 as pb
from embserve_format.arrays import unit
from embserve_format.text import pool
from embserve_server import query
from embserve_server.config import Limits
from embserve_server.pack import pack_lookup, queries_of, search_options_of
from embserve_server.registry import TableRegistry
from embserve_server.service import EmbeddingService
from embserve_server.tables import Table


class Context:
    def abort(self, code: Any, details: str) -> None:
        raise AssertionError(f"aborted with {code}: {details}")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> TableRegistry:
    tables = tmp_path_factory.mktemp("tables")
    make_table(tables, "hnsw", n=3000, factory="HNSW32,Flat")  # approximate: the fast path must use the same search
    make_table(tables, "small", n=6, factory="Flat")  # fewer rows than topn: padding
    reg = TableRegistry(tables, default_table="hnsw")
    reg.reload()
    return reg


def general_search(table: Table, key: str, topn: int, ef_search: int) -> tuple[list[int], list[float], list[str]]:
    result = query._search_batch(table, [query.Query(positive=[key])], query.SearchOptions(topn=topn, ef_search=ef_search), Limits())
    return result.ids[0].tolist(), result.scores[0].tolist(), result.keys


@pytest.mark.parametrize(("name", "topn", "ef_search"), [("hnsw", 10, 0), ("hnsw", 1, 0), ("hnsw", 25, 40), ("small", 10, 0)])
def test_search_fast_path_equals_general_path(registry: TableRegistry, name: str, topn: int, ef_search: int) -> None:
    service, table = EmbeddingService(registry, Limits()), registry.get(name)
    for key in table.index_to_key[:: max(1, len(table.index_to_key) // 40)]:
        request = pb.SearchRequest(queries=[pb.Query(positive=[key])], topn=topn)
        assert query._plain_search_row(table, queries_of(request), search_options_of(request), Limits()) == table.key_to_index[key]
        response = service.Search(
            pb.SearchRequest(table=name, queries=[pb.Query(positive=[key])], topn=topn, ef_search=ef_search), Context()
        )
        ids, scores, keys = general_search(table, key, topn, ef_search)
        assert np.frombuffer(response.ids, "<i8").tolist() == ids
        assert np.frombuffer(response.scores, "<f4").tolist() == scores  # bit-identical float32
        assert list(response.keys) == keys and (response.topn, response.queries) == (topn, 1)
        if name == "small":
            assert ids[-5:] == [-1] * 5 and keys[-5:] == [""] * 5  # 5 other rows, then padding


@pytest.mark.parametrize("request_", [
    pb.SearchRequest(queries=[pb.Query(positive=["w1", "w2"])]),
    pb.SearchRequest(queries=[pb.Query(positive=["w1"], negative=["w2"])]),
    pb.SearchRequest(queries=[pb.Query(positive=["w1"])], exact=True),
    pb.SearchRequest(queries=[pb.Query(positive=["w1"])], restrict_vocab=100),
    pb.SearchRequest(queries=[pb.Query(positive=["w1"])], min_score=0.5),
    pb.SearchRequest(queries=[pb.Query(positive=["w1"])], include_query_keys=True),
    pb.SearchRequest(queries=[pb.Query(positive=["w1"])], topn=-1),
    pb.SearchRequest(queries=[pb.Query(positive=["w1"])], topn=1_001),
    pb.SearchRequest(queries=[pb.Query(positive=[""])]),
    pb.SearchRequest(queries=[pb.Query(positive=["w1"])] * 2),
])
def test_anything_but_the_plain_query_takes_the_general_path(registry: TableRegistry, request_: pb.SearchRequest) -> None:
    table = registry.get("hnsw")
    assert query._plain_search_row(table, queries_of(request_), search_options_of(request_), Limits()) is None


@pytest.mark.parametrize(("name", "k", "ef_search"), [("hnsw", 10, 0), ("hnsw", 3, 200), ("small", 10, 0)])
def test_index_one_row_path_equals_batch_search_with_drop(registry: TableRegistry, name: str, k: int, ef_search: int) -> None:
    index = registry.get(name).index
    for row in range(0, index.ntotal, max(1, index.ntotal // 50)):
        D, I = index.search(index.rows[row : row + 1], k, ef_search=ef_search, drop=np.array([[row]]))
        ids, scores = index.nearest_to_row(row, k, ef_search)
        assert (ids, scores) == (I[0].tolist(), D[0].tolist())
        assert row not in ids


def lookup(service: EmbeddingService, request: pb.LookupRequest) -> pb.LookupResponse:
    """The servicer's answer as the client reads it (Lookup returns its wire bytes: pack.Encoded)."""
    return pb.LookupResponse.FromString(service.Lookup(request, Context()).SerializeToString())


def test_lookup_fast_path_equals_general_path(registry: TableRegistry) -> None:
    service, table = EmbeddingService(registry, Limits()), registry.get("hnsw")
    for key in table.index_to_key[::97]:
        assert query._one_known_row(table, [key], [], "error", False) == table.key_to_index[key]
        fast = lookup(service, pb.LookupRequest(keys=[key]))
        general = lookup(service, pb.LookupRequest(keys=[key, key]))  # two keys: the batch path
        row = table.key_to_index[key]
        assert fast.vectors == table.vectors[row].astype("<f4").tobytes() == general.vectors[: len(fast.vectors)]
        assert np.frombuffer(fast.ids, "<i8").tolist() == [row] and fast.found == b"\x01"
        assert (fast.rows, fast.vector_size, fast.table, fast.version) == (1, general.vector_size, general.table, general.version)
        one = query.lookup(table, Limits(), keys=[key])
        assert type(one) is query.OneRow  # written from the mapped bytes: the same bytes as its arrays written
        assert pack_lookup(table, one).SerializeToString() == pack_lookup(table, query.LookupArrays(one.vectors, one.found, one.ids)).SerializeToString()


def test_single_key_calls_never_enter_the_batch_path(registry: TableRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast paths are taken (the equality tests above would also pass without them)."""
    service, table = EmbeddingService(registry, Limits()), registry.get("hnsw")
    for name in ("_lookup_batch", "_search_batch", "query_matrix"):
        monkeypatch.setattr(query, name, lambda *a, _name=name, **k: pytest.fail(f"query.{_name} called"))
    key = str(table.index_to_key[7])
    assert lookup(service, pb.LookupRequest(keys=[key])).rows == 1
    assert service.Search(pb.SearchRequest(queries=[pb.Query(positive=[key])]), Context()).topn == query.DEFAULT_TOPN
    with pytest.raises(pytest.fail.Exception):  # and anything else does enter it
        service.Lookup(pb.LookupRequest(keys=[key, key]), Context())


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("dimensions", [0, 5])
@pytest.mark.parametrize("n", [0, 1, 7])
def test_pool_of_one_text_equals_the_batch_loop(weighted: bool, normalize: bool, dimensions: int, n: int) -> None:
    rng = np.random.default_rng(n)
    rows = rng.normal(size=(n, 12)).astype(np.float32)
    weights = rng.uniform(0.1, 2.0, size=n).astype(np.float32) if weighted else None
    one = pool(rows, np.array([n]), weights=weights, normalize=normalize, dimensions=dimensions)
    batch = pool(rows, np.array([n, 0]), weights=weights, normalize=normalize, dimensions=dimensions)  # two texts: the loop
    assert one.dtype == np.float32 and one.shape == (1, dimensions or 12)
    assert one.tobytes() == batch[:1].tobytes()  # bit-identical float32
    if weighted and n:
        zero = pool(rows, np.array([n]), weights=np.zeros(n, np.float32), normalize=normalize)
        assert not zero.any()  # weights summing to 0: the zero row, as in the loop
    # The common component comes off after either way of summing (a (1, d) and a (2, d) matmul: to float32 precision).
    component = np.linalg.qr(rng.normal(size=(12, 2)))[0].T.astype(np.float32)
    one = pool(rows, np.array([n]), weights=weights, normalize=normalize, dimensions=dimensions, component=component)
    batch = pool(rows, np.array([n, 0]), weights=weights, normalize=normalize, dimensions=dimensions, component=component)
    assert one.shape == (1, dimensions or 12)
    np.testing.assert_allclose(one, batch[:1], rtol=1e-5, atol=1e-6)


def test_unit_is_numpys_norm_to_the_bit() -> None:
    rng = np.random.default_rng(0)
    for rows in (rng.normal(size=(1, 256)).astype(np.float32), rng.normal(size=(500, 50)).astype(np.float32),
                 rng.normal(size=(3, 7)), rng.normal(size=16).astype(np.float32), np.zeros((2, 4), np.float32)):
        norms = np.linalg.norm(rows, axis=-1, keepdims=True)
        want = np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)
        got = unit(rows)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


def test_pooling_in_groups_equals_pooling_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch is pooled a group of texts at a time (bounded working memory): the same arrays as at once."""
    from embserve_format.text import Tokenizer
    from embserve_server import embed

    make_table(tmp_path / "tables", "words", n=300, dim=16, extras={"tokenizer": Tokenizer().settings()})
    reg = TableRegistry(tmp_path / "tables", default_table="words")
    reg.reload()
    table = reg.get("words")
    rng = np.random.default_rng(5)
    texts = [" ".join(f"w{i}" if i < 300 else f"unknown{i}" for i in rng.integers(0, 330, size=rng.integers(1, 40))) for _ in range(60)]
    for options in ({}, {"truncate": 5}, {"normalize": False}):
        whole = embed.embed(table, Limits(), texts=texts, **options)
        monkeypatch.setattr(embed, "GATHER_BYTES", 16 * 4 * 7)  # groups of ~7 token rows: most texts alone
        grouped = embed.embed(table, Limits(), texts=texts, **options)
        monkeypatch.undo()
        for a, b in zip(whole, grouped, strict=True):
            assert a.tobytes() == b.tobytes() and a.dtype == b.dtype

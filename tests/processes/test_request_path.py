"""The request path's single homes: one exception -> status map for both ports, fast paths equal to
their general paths inside the core, and per-table derived data kept on (and counted by) the Table."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import make_table, running_server, seeded_table
from embserve_client.pb import embserve_pb2 as pb
from embserve_client.pb import embserve_pb2_grpc as pb_grpc
from embserve_server import errors, gensim_eval, query
from embserve_server.config import Limits
from embserve_server.explorer import Explorer
from embserve_server.tables import Table, TableRegistry, load_table
from embserve_trainer.export import export_table


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tables")
    make_table(root, "t", n=1500, dim=12, factory="HNSW16,Flat")
    vectors, keys = seeded_table(300, 8, 3)
    export_table(root, "ip", vectors * 3.0, keys, source={"kind": "test"}, metric="dot", factory="Flat")
    return root


@pytest.fixture(scope="module")
def registry(tables: Path) -> TableRegistry:
    reg = TableRegistry(tables, default_table="t")
    reg.reload()
    return reg


@pytest.fixture(scope="module")
def stub(tables: Path) -> Iterator[pb_grpc.EmbeddingServiceStub]:
    with running_server(tables, default_table="t") as server, grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.EmbeddingServiceStub(channel)


@pytest.mark.parametrize(("grpc_request", "api", "code"), [
    (pb.SearchRequest(table="nope", queries=[pb.Query(positive=["w1"])]), ("neighbors", "table=nope&key=w1"), grpc.StatusCode.NOT_FOUND),
    (pb.SearchRequest(queries=[pb.Query(positive=["not-a-key"])]), ("neighbors", "key=not-a-key"), grpc.StatusCode.NOT_FOUND),
    (pb.SearchRequest(queries=[pb.Query(positive=["w1"])], topn=5000), ("neighbors", "key=w1&topn=5000"), grpc.StatusCode.INVALID_ARGUMENT),
    (pb.SearchRequest(table="t", version=9, queries=[pb.Query(positive=["w1"])]), ("neighbors", "version=9&key=w1"), grpc.StatusCode.NOT_FOUND),
])
def test_one_exception_becomes_the_same_status_and_message_on_both_ports(
    stub: pb_grpc.EmbeddingServiceStub, registry: TableRegistry, grpc_request: pb.SearchRequest, api: tuple[str, str], code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Search(grpc_request, timeout=30)
    status, body = Explorer(registry, Limits()).api(*api)
    assert caught.value.code() == code and body["code"] == code.name
    assert status == errors.HTTP_STATUS[code]
    assert body["error"] == caught.value.details()  # shaped once, in errors.details_for


def test_the_map_bounds_messages_and_hides_bugs_alike_for_grpc_and_http() -> None:
    long = ValueError("x" * 5000)
    code, details = errors.grpc_status(long)
    status, body = errors.http_error(long)
    assert (code, status, body["code"]) == (grpc.StatusCode.INVALID_ARGUMENT, 400, "INVALID_ARGUMENT")
    assert details == body["error"] and len(details) <= errors.MAX_DETAILS + 3
    bug = ZeroDivisionError("secret path /etc/x")
    assert errors.grpc_status(bug) == (grpc.StatusCode.INTERNAL, "internal error: ZeroDivisionError")
    assert errors.http_error(bug) == (500, {"error": "internal error: ZeroDivisionError", "code": "INTERNAL"})
    assert errors.grpc_status(errors.DeadlinePassedError("late"))[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert errors.http_error(errors.EndpointNotFoundError("no API endpoint 'x'"))[0] == 404


def test_lookup_fast_path_arrays_equal_the_batch_path(registry: TableRegistry) -> None:
    table, limits = registry.get("t"), Limits()
    for row in range(0, table.count, 37):
        key = table.index_to_key[row]
        assert query._one_known_row(table, [key], [], "error", False) == row  # the fast path is chosen
        fast = query.lookup(table, limits, keys=[key])
        general = query._lookup_batch(table, limits, [key], [], "error", False)
        assert fast.vectors.dtype == general.vectors.dtype and fast.vectors.flags.c_contiguous
        assert np.array_equal(fast.vectors, general.vectors) and np.array_equal(fast.found, general.found)
        assert np.array_equal(fast.ids, general.ids) and fast.ids.dtype == general.ids.dtype


def test_single_key_query_matrix_equals_the_general_sum(registry: TableRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    """query_matrix's gather of single-key queries is the matrix the weighted-sum path builds."""
    for name in ("t", "ip"):
        table = registry.get(name)
        queries = [query.Query(positive=[table.index_to_key[i]]) for i in range(0, table.count, 13)]
        assert query._single_key_rows(table, queries, Limits()) is not None  # the fast path is chosen
        fast, fast_ids = query.query_matrix(table, queries, Limits())
        with monkeypatch.context() as m:
            m.setattr(query, "_single_key_rows", lambda *a: None)
            general, general_ids = query.query_matrix(table, queries, Limits())
        np.testing.assert_allclose(fast, general, rtol=0, atol=1e-6)
        assert [i.tolist() for i in fast_ids] == [i.tolist() for i in general_ids]


def test_derived_arrays_live_on_the_table_and_count_in_its_memory(tables: Path) -> None:
    table: Table = load_table(tables / "ip" / "1")
    before = dict(table.memory_parts)
    norms = table.norms
    assert norms is table.norms  # built once per version
    assert table.memory_parts["rows"] == before["rows"] + norms.nbytes
    np.testing.assert_allclose(norms, np.linalg.norm(np.asarray(table.vectors), axis=1), rtol=1e-6)
    unit = gensim_eval.unit_rows(table)  # a dot-product table normalises its rows once
    assert table.memory_parts["rows"] == before["rows"] + norms.nbytes + unit.nbytes
    gensim_eval.vocabulary(table, 100, True)
    assert table.memory_parts["keys"] > before["keys"] and table.nbytes == sum(table.memory_parts.values())
    again = load_table(tables / "ip" / "1")  # a new version object starts with nothing derived
    assert again.memory_parts == before

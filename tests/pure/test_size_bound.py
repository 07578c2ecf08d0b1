"""call_guard.size_bound: never below protobuf's own encoded size, so a response under the bound is under the limit."""

from __future__ import annotations

import numpy as np
import pytest
from embserve_client.pb import embserve_pb2 as pb
from embserve_server.call_guard import response_size, size_bound


def _lookup(rows: int, dim: int, name: str) -> pb.LookupResponse:
    rng = np.random.default_rng(rows)
    return pb.LookupResponse(
        table=name, version=2**62, vector_size=dim, rows=rows, vectors=rng.random((rows, dim), dtype=np.float32).tobytes(),
        found=np.ones(rows, dtype=np.uint8).tobytes(), ids=np.arange(rows, dtype=np.int64).tobytes(),
    )


@pytest.mark.parametrize("rows", [0, 1, 7, 1024])
@pytest.mark.parametrize("name", ["", "glove", "语料-ü" * 30])
def test_bound_covers_lookup_response(rows: int, name: str) -> None:
    m = _lookup(rows, 50, name)
    assert size_bound(m) is not None
    assert size_bound(m) >= m.ByteSize()


def test_bound_covers_repeated_strings_and_scalars() -> None:
    m = pb.SearchResponse(table="t", version=3, topn=5, queries=2, ids=b"\x01" * 80, scores=b"\x02" * 40, keys=["ñ" * 9, "", "x"] * 7)
    assert size_bound(m) >= m.ByteSize()
    tok = pb.TokenizedText(ids=[2**40, 1, 0, -1] * 50, tokens=["▁the", "a"] * 100)
    assert size_bound(tok) >= tok.ByteSize()


def test_messages_holding_messages_are_measured_exactly() -> None:
    m = pb.TokenizeResponse(table="t", texts=[pb.TokenizedText(ids=[1, 2], tokens=["a", "b"])])
    assert size_bound(m) is None
    assert response_size(m, 10**9) == m.ByteSize()


def test_over_the_bound_is_the_exact_size() -> None:
    m = _lookup(64, 50, "glove")
    exact = m.ByteSize()
    assert response_size(m, exact - 1) == exact  # over the limit: the error names the real size
    assert exact <= response_size(m, 10**9) <= exact + 100

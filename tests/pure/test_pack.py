"""pack.pack_lookup writes a LookupResponse's wire bytes by hand: they must be protobuf's, byte for byte.

The oracle is the generated message: ``pb.LookupResponse(...)`` with the same fields, serialised by
protobuf. Every shape a Lookup can answer is covered: one row, a batch, rows skipped (fewer vectors
than requested items), no row at all, a non-ASCII table name, versions and sizes whose varints take
one to five bytes.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from embserve_client.pb import embserve_pb2 as pb
from embserve_server import query
from embserve_server.call_guard import response_size
from embserve_server.pack import Encoded, pack_lookup
from embserve_server.wrappers import serialize


def table(name: str, version: int, dim: int) -> Any:
    return SimpleNamespace(name=name, version=version, dim=dim)


def arrays(rng: np.random.Generator, items: int, found: np.ndarray, dim: int) -> query.LookupArrays:
    ids = np.where(found, rng.integers(0, 1 << 40, items), -1).astype(np.int64)
    vectors = rng.standard_normal((int(found.sum()) if items and not found.all() and rng.random() < 0.5 else items, dim)).astype(np.float32)
    return query.LookupArrays(vectors, found, ids)


def message(t: Any, r: query.LookupArrays) -> bytes:
    return pb.LookupResponse(
        table=t.name, version=t.version, vector_size=t.dim, rows=len(r.vectors), vectors=r.vectors.astype("<f4").tobytes(),
        found=r.found.astype(np.uint8).tobytes(), ids=r.ids.astype("<i8").tobytes(),
    ).SerializeToString()


@pytest.mark.parametrize(
    ("name", "version", "dim", "items"),
    [
        ("glove", 1, 50, 1),  # get_vector(key)
        ("glove", 3, 50, 1024),  # a batch: length varints of two and three bytes
        ("минилм-δ", 1 << 33, 384, 7),  # non-ASCII name, a version over 32 bits
        ("t", 127, 127, 128),  # varints at the one/two-byte edge
        ("t", 128, 1, 0),  # nothing requested: every array field empty, left out
        ("t", 2, 16_384, 3),  # vector bytes needing a four-byte length
    ],
)
def test_encoded_lookup_is_protobufs_bytes(name: str, version: int, dim: int, items: int) -> None:
    rng = np.random.default_rng(dim + items)
    for found in (np.ones(items, bool), rng.random(items) < 0.5, np.zeros(items, bool)):
        t, r = table(name, version, dim), arrays(rng, items, found, dim)
        encoded = pack_lookup(t, r)
        assert serialize(encoded) == message(t, r)
        parsed = pb.LookupResponse.FromString(serialize(encoded))
        assert (parsed.table, parsed.version, parsed.rows, parsed.found) == (encoded.table, encoded.version, len(r.vectors), encoded.found)
        assert (encoded.table, encoded.version) == (name, version)  # what the call log and the metrics read
        assert response_size(encoded, 1 << 30) == len(message(t, r))  # what the call guard compares with the limit


def test_encoded_lookup_takes_any_row_layout() -> None:
    """Rows that are a strided view (a column slice) or float64 are written as C-ordered float32."""
    rng = np.random.default_rng(1)
    wide = rng.standard_normal((5, 8)).astype(np.float32)
    found, ids = np.ones(5, bool), np.arange(5, dtype=np.int32)
    for vectors in (wide[:, :4], wide[:, :4].astype(np.float64), wide[::2]):
        r = query.LookupArrays(vectors, found[: len(vectors)], ids[: len(vectors)])
        t = table("t", 1, vectors.shape[1])
        expected = query.LookupArrays(np.ascontiguousarray(vectors, np.float32), r.found, r.ids.astype(np.int64))
        assert serialize(pack_lookup(t, r)) == message(t, expected)


def test_messages_serialise_as_protobuf_does() -> None:
    """The one serializer every handler uses: messages unchanged, Encoded as its bytes."""
    m = pb.SearchResponse(table="t", version=2, ids=b"\x01" * 8)
    assert serialize(m) == m.SerializeToString()
    assert serialize(Encoded(b"raw", "t", 1, b"")) == b"raw"

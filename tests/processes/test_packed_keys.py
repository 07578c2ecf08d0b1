"""LookupRequest.packed_keys: the same answers as ``repeated string keys``, refused when malformed.

One real server (small limits) over a bundle with ASCII and non-ASCII keys; the oracle is the
bundle itself (its keys.txt and vectors.npy read with numpy), never the server's own other path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import running_server, seeded_table
from embserve_client import AsyncClient, Client, InvalidArgumentError
from embserve_client.pb import embserve_pb2 as pb
from embserve_client.pb import embserve_pb2_grpc as pb_grpc
from embserve_format import keyfile
from embserve_format.keybatch import KeyBatch, pack_keys
from embserve_server.app import Server
from embserve_server.config import Limits
from embserve_trainer.export import export_table

LIMITS = Limits(max_keys=1500, max_key_chars=64)
COUNT, DIM = 3000, 8
UNICODE = ["café", "naïve", "日本語", "😀x", "straße", "\u2028sep", "tab\tkey", "é" * 64]  # the last: 64 chars, 128 bytes
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    vectors, keys = seeded_table(COUNT, DIM, seed=3)
    keys[: len(UNICODE)] = UNICODE
    return export_table(tmp_path_factory.mktemp("packed") / "tables", "t", vectors, keys, source={"kind": "test"}, seed=3)


@pytest.fixture(scope="module")
def oracle(bundle: Path) -> tuple[dict[str, int], np.ndarray]:
    keys = (bundle / "keys.txt").read_bytes().decode("utf-8").split("\n")[:-1]
    return {k: i for i, k in enumerate(keys)}, np.load(bundle / "vectors.npy")


@pytest.fixture(scope="module")
def server(bundle: Path) -> Iterator[Server]:
    with running_server(bundle.parent.parent, limits=LIMITS) as s:
        yield s


@pytest.fixture(scope="module")
def stub(server: Server) -> Iterator[pb_grpc.EmbeddingServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield pb_grpc.EmbeddingServiceStub(ch)


def batch(oracle: tuple[dict[str, int], np.ndarray], n: int, seed: int, absent: int = 0) -> list[str]:
    """``n`` keys of the table (non-ASCII ones first when n allows) and ``absent`` unknown ones, shuffled."""
    rng = np.random.default_rng(seed)
    known = list(oracle[0])
    keys = UNICODE[: n // 2] + [known[i] for i in rng.choice(len(known), n - min(n // 2, len(UNICODE)), replace=False)]
    keys += [f"absent-{seed}-{i}-ü" for i in range(absent)]
    rng.shuffle(keys)  # type: ignore[arg-type]
    return keys


@pytest.mark.parametrize("n, absent, missing, normalize", [
    (1, 0, "error", False), (1, 0, "error", True), (5, 0, "error", False), (8, 0, "error", False),
    (1024, 0, "error", False), (1499, 0, "error", True), (40, 3, "zero", False), (1024, 17, "skip", False), (1, 1, "zero", False),
])
def test_packed_and_repeated_answer_the_same(stub: Any, oracle: tuple[dict[str, int], np.ndarray], n: int, absent: int, missing: str,
                                             normalize: bool) -> None:
    keys = batch(oracle, n, seed=n + absent, absent=absent)
    common: dict[str, Any] = {"missing": pb.MissingPolicy.Value(f"MISSING_POLICY_{missing.upper()}"), "normalize": normalize}
    repeated = stub.Lookup(pb.LookupRequest(keys=keys, **common), timeout=10)
    packed = stub.Lookup(pb.LookupRequest(packed_keys=pack_keys(keys), **common), timeout=10)
    assert packed.SerializeToString(deterministic=True) == repeated.SerializeToString(deterministic=True)
    # The bundle as oracle: each key's row, or its absence.
    rows, vectors = oracle
    want_ids = np.array([rows.get(k, -1) for k in keys])
    assert np.array_equal(np.frombuffer(packed.ids, "<i8"), want_ids)
    got = np.frombuffer(packed.vectors, "<f4").reshape(packed.rows, DIM)
    want = vectors[want_ids[want_ids >= 0]] if missing == "skip" else np.where((want_ids >= 0)[:, None], vectors[want_ids], 0)
    if normalize:
        want = want / np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_unknown_key_error_names_the_key(stub: Any) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.Lookup(pb.LookupRequest(packed_keys=pack_keys(["café", "nope-ü", "w9"])), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "nope-ü" in (err.value.details() or "")


# (bytes, field set beside them, substring of the details)
MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    ("bad-utf8", {"packed_keys": b"w1\nw\xff2\nw3\n"}, "packed_keys: key 1 is not valid UTF-8"),
    ("encoded-surrogate", {"packed_keys": b"w1\n\xed\xb2\x80\n"}, "key 1 is not valid UTF-8"),
    ("truncated-utf8", {"packed_keys": "w1\ncafé".encode()[:-1] + b"\n"}, "key 1 is not valid UTF-8"),
    ("no-final-line-feed", {"packed_keys": b"w1\nw2"}, "key 1 does not end with a line feed"),
    ("empty-key", {"packed_keys": b"w1\n\nw2\n"}, "key 1 is empty"),
    ("only-a-line-feed", {"packed_keys": b"\n"}, "key 0 is empty"),
    ("carriage-return", {"packed_keys": b"w1\nw2\r\n"}, "key 1 holds a carriage return"),
    ("both-forms", {"packed_keys": b"w1\n", "keys": ["w2"]}, "keys and packed_keys: give one or the other"),
    ("packed-and-ids", {"packed_keys": b"w1\n", "ids": [2]}, "not both"),
    ("too-many-keys", {"packed_keys": b"w1\n" * (LIMITS.max_keys + 1)}, f"{LIMITS.max_keys + 1} is over the limit of {LIMITS.max_keys}"),
    ("long-ascii-key", {"packed_keys": b"w1\n" + b"x" * 65 + b"\n"}, "a key of 65 characters is over the limit of 64"),
    ("long-unicode-key", {"packed_keys": ("é" * 65 + "\n").encode()}, "a key of 65 characters is over the limit of 64"),
]


@pytest.mark.parametrize("fields, details", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_packed_keys_are_refused(stub: Any, fields: dict[str, Any], details: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.Lookup(pb.LookupRequest(**fields), timeout=10)
    assert err.value.code() == INVALID
    assert details in (err.value.details() or "")
    still = stub.Lookup(pb.LookupRequest(packed_keys=b"w10\nw11\n"), timeout=10)  # the server keeps serving
    assert still.rows == 2


def test_limits_are_inclusive(stub: Any, oracle: tuple[dict[str, int], np.ndarray]) -> None:
    """Exactly max_keys keys and a key of exactly max_key_chars characters (2 bytes each) are served."""
    keys = batch(oracle, LIMITS.max_keys, seed=7)
    assert "é" * 64 in keys
    resp = stub.Lookup(pb.LookupRequest(packed_keys=pack_keys(keys)), timeout=10)
    assert np.array_equal(np.frombuffer(resp.ids, "<i8"), [oracle[0][k] for k in keys])


def test_client_sends_packed_keys_by_default(server: Server) -> None:
    with Client(f"127.0.0.1:{server.port}") as c:
        plan = c._plan_lookup(["café", "w9"])
        method, request = next(plan)
    assert (method, request.packed_keys, list(request.keys)) == ("Lookup", "café\nw9\n".encode(), [])
    with Client(f"127.0.0.1:{server.port}", packed_keys=False) as c:
        _, request = next(c._plan_lookup(["café", "w9"]))
    assert (request.packed_keys, list(request.keys)) == (b"", ["café", "w9"])


@pytest.mark.parametrize("per_call", [300, 1500])
def test_client_forms_agree_over_the_server(server: Server, oracle: tuple[dict[str, int], np.ndarray], per_call: int) -> None:
    """Both forms of Client.lookup, split into calls or not, return the bundle's rows."""
    keys = batch(oracle, 1000, seed=11, absent=5)
    results = []
    for packed in (True, False):
        with Client(f"127.0.0.1:{server.port}", packed_keys=packed) as c:
            results.append(c.lookup(keys, missing="zero", max_keys_per_call=per_call))
    (a, b), want_ids = results, np.array([oracle[0].get(k, -1) for k in keys])
    assert np.array_equal(a.ids, want_ids) and np.array_equal(b.ids, want_ids)
    assert np.array_equal(a.vectors, b.vectors) and np.array_equal(a.found, want_ids >= 0)


def test_client_refuses_a_key_holding_a_line_feed(server: Server) -> None:
    with Client(f"127.0.0.1:{server.port}") as c, pytest.raises(InvalidArgumentError, match=r"item 1 \('a\\nb'\) holds a line feed"):
        c.lookup(["w1", "a\nb"])

    async def run() -> None:
        async with AsyncClient(f"127.0.0.1:{server.port}") as c:
            with pytest.raises(InvalidArgumentError, match="item 2 .* holds a line feed"):
                await c.lookup(["w1", "w2", "\n"])
            assert (await c.lookup(["café"])).found.all()

    asyncio.run(run())


@pytest.mark.parametrize("n", [1, 7, 8, 1000, 12000])
def test_key_index_reads_packed_batches_in_place(oracle: tuple[dict[str, int], np.ndarray], n: int) -> None:
    """KeyIndex.ids_for on a KeyBatch gives the bundle's rows: short, request-sized and > 64 KiB batches."""
    rows = oracle[0]
    keys = list(rows)
    index = keyfile.build(("\n".join(keys) + "\n").encode())
    rng = np.random.default_rng(n)
    asked = [keys[i] for i in rng.integers(0, len(keys), n)] + ["not-a-key", "日本語?"][: max(0, n - 1)]
    want = np.array([rows.get(k, -1) for k in asked])
    packed = KeyBatch.parse(pack_keys(asked))
    assert len(packed) == len(asked) and packed[len(asked) - 1] == asked[-1]
    assert np.array_equal(index.ids_for(packed), want)

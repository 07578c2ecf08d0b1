"""``Embed``: text in, one vector out, over a real server on 127.0.0.1:0.

Oracles: the bundle's rows pooled with numpy here (mean, unit length), the ``tokenizers`` library run
locally on the same tokenizer.json, and ``Lookup(missing="subword")`` for fastText's composed words.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import make_table, running_server
from embserve_client import AsyncClient, Client, FailedPreconditionError, InvalidArgumentError
from embserve_client.pb import embserve_pb2 as pb
from embserve_client.pb import embserve_pb2_grpc as pb_grpc
from embserve_format.bundle import read_bundle
from embserve_format.text import Tokenizer, pool
from embserve_server.config import Limits
from embserve_trainer.export import export_table
from test_transformer_tables import SENTENCES, build_tokenizer, build_vectors, local, save_model, train_import

WORDS = Tokenizer().settings()  # NFKC, lower-case, word tokens


def unit_mean(rows: np.ndarray) -> np.ndarray:
    m = rows.astype(np.float64).mean(axis=0)
    return (m / np.linalg.norm(m)).astype(np.float32)


@pytest.fixture
def word_tables(tmp_path: Path) -> Path:
    tables = tmp_path / "tables"
    make_table(tables, "words", n=300, extras={"tokenizer": WORDS})
    make_table(tables, "bare", n=300)  # imported from a file that recorded no tokenizer
    return tables


def test_word_table_mean_of_rows(word_tables: Path) -> None:
    rows = read_bundle(word_tables / "words" / "1").vectors
    texts = ["W1 w2, w3!", "ｗ７ w8", "w5 zebra w5", "zebra yak", "w9"]  # NFKC folds the full-width ｗ７
    with running_server(word_tables, default_table="words") as server, Client(f"127.0.0.1:{server.port}") as c:
        got = c.embed(texts)
        assert got.shape == (5, 16) and got.dtype == np.float32 and not got.flags.writeable
        np.testing.assert_allclose(got[0], unit_mean(rows[[1, 2, 3]]), atol=1e-6)
        np.testing.assert_allclose(got[1], unit_mean(rows[[7, 8]]), atol=1e-6)
        np.testing.assert_allclose(got[2], unit_mean(rows[[5, 5]]), atol=1e-6)  # zebra skipped
        assert not got[3].any()  # only unknown tokens: a zero vector, not an error
        raw = c.embed(texts[:1], normalize=False)
        np.testing.assert_allclose(raw[0], rows[[1, 2, 3]].mean(axis=0), atol=1e-6)
        resp = c.stub.Embed(pb.EmbedRequest(texts=texts))
        assert list(resp.tokens) == [3, 2, 2, 0, 1] and list(resp.unknown) == [0, 0, 1, 2, 0] and list(resp.truncated) == [0] * 5
        assert resp.table == "words" and resp.version == 1 and resp.vector_size == 16
        np.testing.assert_array_equal(c.embed([[1, 2, 3]]), got[:1])  # token-id input: the table's rows
        assert c.embed("w9").shape == (1, 16)


def test_truncate_counts_and_refuses(word_tables: Path) -> None:
    rows = read_bundle(word_tables / "words" / "1").vectors
    text = " ".join(f"w{i % 300}" for i in range(600))
    limits = Limits(max_text_tokens=550)
    with running_server(word_tables, default_table="words", limits=limits) as server, Client(f"127.0.0.1:{server.port}") as c:
        resp = c.stub.Embed(pb.EmbedRequest(texts=[text, "w1 zebra"]))
        assert list(resp.tokens) == [512, 1] and list(resp.truncated) == [88, 0]
        want = unit_mean(rows[np.arange(512) % 300])
        np.testing.assert_allclose(c.embed([text])[0], want, atol=1e-6)
        np.testing.assert_allclose(c.embed([text], truncate=3)[0], unit_mean(rows[[0, 1, 2]]), atol=1e-6)
        with pytest.raises(InvalidArgumentError, match=r"texts\[0\]: 600 tokens is over the limit of 550"):
            c.embed([text], truncate=0)
        assert c.embed(["w1 w2"], truncate=0).shape == (1, 16)
        with pytest.raises(InvalidArgumentError, match="truncate: 600 is over the limit of 550"):
            c.embed([text], truncate=600)


def test_bad_input(word_tables: Path) -> None:
    with running_server(word_tables, default_table="words", limits=Limits(max_texts=4, max_text_chars=50)) as server, \
            Client(f"127.0.0.1:{server.port}") as c:
        stub = pb_grpc.EmbeddingServiceStub(c.channel)

        def code(**req: object) -> tuple[grpc.StatusCode, str]:
            with pytest.raises(grpc.RpcError) as err:
                stub.Embed(pb.EmbedRequest(**req))  # type: ignore[arg-type]
            return err.value.code(), err.value.details()

        assert code() == (grpc.StatusCode.INVALID_ARGUMENT, "texts: the request holds no text (give texts or token_ids)")
        assert code(texts=["w1", ""]) == (grpc.StatusCode.INVALID_ARGUMENT, "texts[1]: an empty text has no tokens to embed")
        assert code(texts=["w1"] * 5)[1] == "texts: 5 is over the limit of 4"
        assert code(texts=["w1 " * 20])[1] == "text characters: 60 is over the limit of 50"
        assert code(texts=["w1"], token_ids=[pb.TokenIds(ids=[1])])[1] == "texts and token_ids: give one or the other, not both"
        assert code(token_ids=[pb.TokenIds(ids=[1, 300])])[1] == "token_ids: id 300 is out of range [0, 300)"
        assert code(texts=["w1"], truncate=-1)[0] == grpc.StatusCode.INVALID_ARGUMENT
        status, details = code(texts=["w1"], table="bare")
        assert status == grpc.StatusCode.FAILED_PRECONDITION and "table 'bare' has no tokenizer" in details
        assert c.embed([[1, 2]], table="bare").shape == (1, 16)  # ids need no tokenizer
        status, details = code(texts=["w1"], dimensions=4)
        assert status == grpc.StatusCode.INVALID_ARGUMENT and "does not say its columns are PCA-ordered" in details
        with pytest.raises(FailedPreconditionError, match="'bare'"):
            c.embed(["w1"], table="bare")
        with pytest.raises(InvalidArgumentError, match="no text given"):
            c.embed([])


def test_client_splits_big_batches(word_tables: Path) -> None:
    texts = [f"w{i % 300} w{(i * 7) % 300}" for i in range(10)]
    with running_server(word_tables, default_table="words", limits=Limits(max_texts=3)) as server, \
            Client(f"127.0.0.1:{server.port}") as c:
        import embserve_client.core as core

        one_by_one = np.stack([c.embed([t])[0] for t in texts])
        old = core.DEFAULT_MAX_TEXTS_PER_CALL
        core.DEFAULT_MAX_TEXTS_PER_CALL = 3
        try:
            np.testing.assert_array_equal(c.embed(texts), one_by_one)  # 4 calls under the server's limit
        finally:
            core.DEFAULT_MAX_TEXTS_PER_CALL = old


def test_most_similar_text_and_async_signatures(word_tables: Path) -> None:
    with running_server(word_tables, default_table="words") as server, Client(f"127.0.0.1:{server.port}") as c:
        vec = c.embed(["w1 w2 w3"])[0]
        assert c.most_similar(text="w1 w2 w3", topn=5, exact=True) == c.similar_by_vector(vec, topn=5, exact=True)
        with pytest.raises(InvalidArgumentError, match="not both"):
            c.most_similar("w1", text="w2")
    for name in ("embed",):
        assert inspect.signature(getattr(Client, name)) == inspect.signature(getattr(AsyncClient, name))


def test_async_embed(word_tables: Path) -> None:
    import asyncio

    async def go(port: int) -> tuple[np.ndarray, list[str]]:
        async with AsyncClient(f"127.0.0.1:{port}") as ac:
            return await ac.embed(["w1 w2"]), [n.key for n in await ac.most_similar(text="w1 w2", topn=3)]

    with running_server(word_tables, default_table="words") as server, Client(f"127.0.0.1:{server.port}") as c:
        vec, keys = asyncio.run(go(server.port))
        np.testing.assert_array_equal(vec, c.embed(["w1 w2"]))
        assert keys == [n.key for n in c.most_similar(text="w1 w2", topn=3)]


def test_tokenizer_table_skips_unknown_tokens(tmp_path: Path) -> None:
    rows = build_vectors()
    tables = tmp_path / "tables"
    assert train_import(tables, str(save_model(tmp_path / "m.safetensors", rows)), "--tokenizer", str(build_tokenizer(tmp_path / "t.json"))) == 0
    tok = local(tmp_path / "t.json")
    texts = [s for s in SENTENCES if s]  # "zebra!" holds [UNK] and "."
    with running_server(tables) as server, Client(f"127.0.0.1:{server.port}") as c:
        got = c.stub.Embed(pb.EmbedRequest(texts=texts))
        vectors = np.frombuffer(got.vectors, "<f4").reshape(len(texts), -1)
        for i, text in enumerate(texts):
            ids = [t for t in tok.encode(text, add_special_tokens=False).ids if t != 1]  # no [CLS]/[SEP], [UNK] skipped
            want = unit_mean(rows[ids]) if ids else np.zeros(rows.shape[1], np.float32)
            np.testing.assert_allclose(vectors[i], want, atol=1e-6)
            assert got.tokens[i] == len(ids)
        assert list(got.unknown) == [tok.encode(t, add_special_tokens=False).ids.count(1) for t in texts]
        assert got.unknown[3] == 2 and got.tokens[3] == 0  # "zebra!": [UNK] [UNK], a zero vector
        # LookupText's mean is the same pooling, not normalised.
        _, _, mean = c.lookup_text(texts[0], mean=True)
        assert mean is not None
        np.testing.assert_allclose(mean, c.embed(texts[:1], normalize=False)[0], atol=1e-6)


def test_one_text_answers_what_a_batch_answers(tmp_path: Path) -> None:
    """One text of a tokenizer table takes its own path (encode(), one reduce): its vector, bit for bit,
    and its counts are the ones the same text gets inside a batch (the general path)."""
    rows = build_vectors()
    tables = tmp_path / "tables"
    assert train_import(tables, str(save_model(tmp_path / "m.safetensors", rows)), "--tokenizer", str(build_tokenizer(tmp_path / "t.json"))) == 0
    texts = [s for s in SENTENCES if s]  # "zebra!": only unknown tokens
    with running_server(tables) as server, Client(f"127.0.0.1:{server.port}") as c:
        for options in ({}, {"normalize": False}, {"truncate": 2}, {"truncate": 0}):
            batch = c.stub.Embed(pb.EmbedRequest(texts=[*texts, "a dog"], **options))
            width = batch.vector_size
            for i, text in enumerate(texts):
                one = c.stub.Embed(pb.EmbedRequest(texts=[text], **options))
                assert one.vectors == batch.vectors[i * width * 4 : (i + 1) * width * 4], (text, options)
                assert (one.tokens[0], one.unknown[0], one.truncated[0]) == (batch.tokens[i], batch.unknown[i], batch.truncated[i])


def test_fasttext_composes_unknown_words(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    tables = tmp_path / "tables"
    keys = ["cat", "dog", "mat"]
    ngrams = rng.normal(size=(500, 8)).astype(np.float32)
    export_table(
        tables, "ft", rng.normal(size=(3, 8)).astype(np.float32), keys, source={},
        extras={"tokenizer": WORDS, "subword": {"minn": 3, "maxn": 5, "bucket": 500}},
        files={"ngrams.npy": lambda p: np.save(p, ngrams)},
    )
    with running_server(tables) as server, Client(f"127.0.0.1:{server.port}") as c:
        tokens = ["cat", "kittens", "mat"]
        want = unit_mean(c.lookup(tokens, missing="subword").vectors)
        resp = c.stub.Embed(pb.EmbedRequest(texts=["Cat kittens mat"]))
        np.testing.assert_allclose(np.frombuffer(resp.vectors, "<f4"), want, atol=1e-6)
        assert list(resp.tokens) == [3] and list(resp.unknown) == [1]



def test_fasttext_composed_word_pools_with_the_largest_weight(tmp_path: Path) -> None:
    """A weighted fastText table: an unknown word, composed from subwords, is rarer than every known
    word, so it pools with the table's largest weight (the most frequent rows weigh least)."""
    rng = np.random.default_rng(4)
    tables = tmp_path / "tables"
    keys = ["the", "cat", "mat"]
    ngrams = rng.normal(size=(500, 8)).astype(np.float32)
    path = export_table(
        tables, "ft", rng.normal(size=(3, 8)).astype(np.float32), keys, source={},
        extras={"tokenizer": WORDS, "subword": {"minn": 3, "maxn": 5, "bucket": 500}, "frequency_ordered": True},
        files={"ngrams.npy": lambda p: np.save(p, ngrams)},
    )
    weights = read_bundle(path).weights
    assert weights is not None and weights[0] < weights[2]  # Zipf: "the" weighs least
    with running_server(tables) as server, Client(f"127.0.0.1:{server.port}") as c:
        rows = c.lookup(["the", "kittens", "mat"], missing="subword").vectors
        w = np.array([weights[0], weights.max(), weights[2]], np.float32)
        want = (rows * w[:, None]).sum(axis=0) / w.sum()
        u = read_bundle(path).component[0]  # type: ignore[index]  # Zipf pooling carries one
        want -= (want @ u) * u
        want /= np.linalg.norm(want)
        np.testing.assert_allclose(c.embed(["The kittens mat"])[0], want, atol=1e-5)

def test_pool_weights_and_dimensions() -> None:
    rows = np.array([[1, 0, 0], [0, 2, 0], [0, 0, 4]], np.float32)
    got = pool(rows, np.array([2, 0, 1]), weights=np.array([3, 1, 0], np.float32), normalize=False)
    np.testing.assert_allclose(got, [[0.75, 0.5, 0], [0, 0, 0], [0, 0, 0]])  # weights summing to 0: zero row
    got = pool(rows, np.array([3]), dimensions=2)
    np.testing.assert_allclose(got, [[1 / np.sqrt(5), 2 / np.sqrt(5)]], rtol=1e-6)


def test_cli_embed(word_tables: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from embserve_client import cli

    with running_server(word_tables, default_table="words") as server, Client(f"127.0.0.1:{server.port}") as c:
        target = f"127.0.0.1:{server.port}"
        assert cli.main(["embed", "w1 w2", "zebra", "--json", "--target", target]) == 0
        lines = capsys.readouterr().out.splitlines()
        np.testing.assert_allclose(np.array([json.loads(x) for x in lines], np.float32), c.embed(["w1 w2", "zebra"]), atol=1e-6)
        assert cli.main(["embed", "w1 w2", "zebra", "-n", "2", "--target", target]) == 0
        out = capsys.readouterr().out
        want = [n.key for n in c.most_similar(text="w1 w2", topn=2)]
        assert f"nearest tokens: {want[0]} " in out and "'zebra' (16 dims) [no known token: zeros]" in out
        assert cli.main(["embed", "w1", "--table", "bare", "--target", target]) == 2
        assert "table 'bare' has no tokenizer" in capsys.readouterr().err


def test_pooling_weights_and_pca_dimensions_over_the_wire(tmp_path: Path) -> None:
    from embserve_format.bundle_writer import BundleSpec, write_bundle

    rng = np.random.default_rng(5)
    rows = rng.normal(size=(50, 8)).astype(np.float32)
    weights = rng.uniform(0.1, 2.0, size=50).astype(np.float32)
    keys = [f"w{i}" for i in range(50)]
    tables = tmp_path / "tables"
    spec = BundleSpec(extras={"tokenizer": WORDS}, weights=weights, pooling={"weights": "sif", "pca_ordered": True})
    write_bundle(tables, "pca", rows, keys, spec)
    with running_server(tables) as server, Client(f"127.0.0.1:{server.port}") as c:
        ids = [3, 7, 7, 11]
        want = (rows[ids] * weights[ids, None]).sum(axis=0) / weights[ids].sum()  # the weighted mean
        np.testing.assert_allclose(c.embed(["w3 w7 W7 w11"], normalize=False)[0], want, rtol=1e-5)
        # All tokens known (the direct path) and an unknown one skipped (the general path) agree.
        np.testing.assert_array_equal(c.embed(["w3 w7 W7 w11"], normalize=False), c.embed(["w3 zebra w7 W7 w11"], normalize=False))
        np.testing.assert_array_equal(c.embed(["w3 w7 W7 w11", "w1"]), c.embed(["w3 w7 W7 w11 zebra", "w1"]))
        short = c.embed(["w3 w7 W7 w11"], dimensions=3)[0]
        np.testing.assert_allclose(short, want[:3] / np.linalg.norm(want[:3]), rtol=1e-5)  # cut, then unit length
        # Lookups still return the raw rows, bit for bit: weights apply to pooling only.
        np.testing.assert_array_equal(c.get_vectors(["w3", "w7"]), rows[[3, 7]])
        with pytest.raises(InvalidArgumentError, match=r"dimensions: 9 is not in \[1, 8\]"):
            c.embed(["w3"], dimensions=9)


def test_common_component_is_removed_over_the_wire(tmp_path: Path) -> None:
    """A bundle with component.npy: Embed's vectors (both pooling paths) lose their projection on it."""
    from embserve_format.bundle_writer import BundleSpec, write_bundle

    rng = np.random.default_rng(6)
    rows = rng.normal(size=(50, 8)).astype(np.float32) + 2.0
    weights = rng.uniform(0.1, 2.0, size=50).astype(np.float32)
    u = np.full((1, 8), 1 / np.sqrt(8), np.float32)
    tables = tmp_path / "tables"
    write_bundle(tables, "cc", rows, [f"w{i}" for i in range(50)],
                 BundleSpec(extras={"tokenizer": WORDS}, weights=weights, component=u, pooling={"weights": "sif"}))
    with running_server(tables) as server, Client(f"127.0.0.1:{server.port}") as c:
        ids = [3, 7, 11]
        mean = (rows[ids] * weights[ids, None]).sum(axis=0) / weights[ids].sum()
        want = mean - (mean @ u[0]) * u[0]
        np.testing.assert_allclose(c.embed(["w3 w7 w11"], normalize=False)[0], want, atol=1e-5)
        np.testing.assert_allclose(c.embed(["w3 zebra w7 w11"])[0], want / np.linalg.norm(want), atol=1e-5)
        assert abs(float(c.embed(["w3 w7 w11"])[0] @ u[0])) < 1e-5
        np.testing.assert_array_equal(c.get_vectors(["w3"]), rows[[3]])  # lookups: raw rows

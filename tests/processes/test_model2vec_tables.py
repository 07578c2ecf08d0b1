"""Distilled tables (embserve-train distill, model2vec) and model2vec folders (import --format model2vec).

The oracle is model2vec itself: ``StaticModel.encode`` in the distill virtualenv (tests/m2v_oracle.py)
must equal both the server's ``Embed`` of the bundle and the mean of the bundle's rows over the
bundle's tokenizer (no special tokens, unknown tokens dropped, uniform weights, unit length) -- the
pooling the manifest records. The distilled
model is a 1-layer random BERT with MiniLM's tokenizer, so the whole run takes seconds of model time.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import _missing, running_server
from embserve_client import Client
from embserve_format.bundle import read_bundle
from embserve_trainer.cli import distill_python
from embserve_trainer.cli import main as train_main
from embserve_trainer.transformer import minilm_sample_paths
from safetensors.numpy import save_file
from tokenizers import Tokenizer

ORACLE = Path(__file__).resolve().parent.parent / "m2v_oracle.py"
TEXTS = ["The cat sat on the mat.", "a quick brown fox", "Embeddings map words to vectors!", "zxqv unknownish tokens",
         "Paris is the capital of France", "x"]


def _python() -> str:
    try:
        return distill_python(None)
    except ValueError as exc:
        _missing(f"model2vec's virtualenv: {exc} (make distill-env)")


def _pooled(bundle: Path, texts: list[str]) -> np.ndarray:
    """The bundle's text vectors as its manifest describes them (what the server's Embed computes)."""
    b = read_bundle(bundle)
    pooling = b.pooling
    assert pooling["weights"] == "uniform" and pooling["special_tokens"] is False and pooling["drop_unknown"] is True
    assert pooling["pca_ordered"] is True and b.weights is None
    tok = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    unk = tok.token_to_id("[UNK]")
    out = np.zeros((len(texts), b.vectors.shape[1]), np.float32)
    for i, text in enumerate(texts):
        ids = [t for t in tok.encode(text, add_special_tokens=False).ids if t != unk]
        if ids:
            v = np.asarray(b.vectors[ids], np.float64).mean(axis=0)
            out[i] = v / np.linalg.norm(v)
    return out


@pytest.fixture(scope="module")
def distilled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(bundle, model2vec folder, python): one distillation of a tiny model, through the CLI."""
    python = _python()
    root = tmp_path_factory.mktemp("distill")
    tiny = root / "tiny-bert"
    subprocess.run([python, "-P", str(ORACLE), "tiny-model", str(minilm_sample_paths()[1].parent), str(tiny)],
                   check=True, capture_output=True)
    m2v = root / "m2v"
    assert train_main(["distill", "--from", str(tiny), "--tables", str(root / "tables"), "--name", "d", "--python", python,
                       "--pca-dims", "8", "--no-eval", "--save-model2vec", str(m2v)]) == 0
    return root / "tables" / "d" / "1", m2v, python


def test_distilled_bundle_serves_model2vec_encode(distilled: tuple[Path, Path, str], tmp_path: Path) -> None:
    bundle, m2v, python = distilled
    b = read_bundle(bundle)
    source = b.manifest["source"]
    assert source["kind"] == "distilled" and source["pca_dims"] == 8 and source["model2vec"]["model2vec"] == "0.10.0"
    assert len(source["input_sha256"]) == 64 and b.vectors.shape[1] == 8
    assert (bundle / "tokenizer.json").read_bytes() == (m2v / "tokenizer.json").read_bytes()
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps(TEXTS))
    subprocess.run([python, "-P", str(ORACLE), "encode", str(m2v), str(texts), str(tmp_path / "ref.npy")], check=True,
                   capture_output=True)
    ref = np.load(tmp_path / "ref.npy")
    answers = [_pooled(bundle, TEXTS)]
    # The served Embed arrives with the embed branch (Client.embed); once both are in, this always runs.
    if hasattr(Client, "embed"):
        with running_server(bundle.parent.parent) as server, Client(f"127.0.0.1:{server.port}") as client:
            answers.append(client.embed(TEXTS, table="d"))
    for got in answers:
        cos = (ref * got).sum(axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
        assert cos.min() >= 0.99999, cos


def test_import_model2vec_folder_keeps_rows_bit_for_bit(distilled: tuple[Path, Path, str], tmp_path: Path) -> None:
    bundle, m2v, _ = distilled
    assert train_main(["import", str(m2v), "--format", "model2vec", "--tables", str(tmp_path), "--name", "m"]) == 0
    imported = read_bundle(tmp_path / "m" / "1")
    assert imported.vectors.tobytes() == read_bundle(bundle).vectors.tobytes()
    assert imported.keys == read_bundle(bundle).keys
    assert (tmp_path / "m" / "1" / "eval.json").is_file() and not (tmp_path / "m" / "1" / "weights.npy").exists()


def test_distill_common_component_flag(distilled: tuple[Path, Path, str], tmp_path: Path) -> None:
    """``distill --common-component CORPUS``: the bundle carries component.npy and says where it came from."""
    bundle, _, python = distilled
    tiny = bundle.parent.parent.parent / "tiny-bert"
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n")
    assert train_main(["distill", "--from", str(tiny), "--tables", str(tmp_path / "tables"), "--name", "c", "--python", python,
                       "--pca-dims", "8", "--no-eval", "--common-component", str(corpus)]) == 0
    b = read_bundle(tmp_path / "tables" / "c" / "1")
    assert b.component is not None and b.component.shape == (1, 8)
    assert b.pooling["common_component"]["texts"] == len(TEXTS) and b.pooling["weights"] == "uniform"
    assert b.vectors.tobytes() == read_bundle(bundle).vectors.tobytes()  # the rows are model2vec's, unchanged


# ---- model2vec folders built by hand (no model2vec needed): bad input refused, weights carried ----


def _folder(path: Path, *, rows: int | None = None, extra: dict[str, np.ndarray] | None = None) -> Path:
    tokenizer = minilm_sample_paths()[1]
    n = rows if rows is not None else Tokenizer.from_file(str(tokenizer)).get_vocab_size(with_added_tokens=True)
    path.mkdir()
    emb = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
    save_file({"embeddings": emb, **(extra or {})}, str(path / "model.safetensors"))
    shutil.copy(tokenizer, path / "tokenizer.json")
    (path / "config.json").write_text(json.dumps({"model_type": "model2vec", "normalize": True, "sif_coefficient": 1e-4}))
    return path


def _refused(folder: Path, tables: Path, capsys: pytest.CaptureFixture[str]) -> str:
    rc = train_main(["import", str(folder), "--format", "model2vec", "--tables", str(tables), "--name", "m"])
    err = capsys.readouterr().err
    assert rc == 2
    assert not (tables / "m").exists() or not list((tables / "m").iterdir())  # nothing published, no temp left
    return err


@pytest.mark.parametrize("missing", ["model.safetensors", "tokenizer.json", "config.json"])
def test_missing_file_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str], missing: str) -> None:
    folder = _folder(tmp_path / "m2v")
    (folder / missing).unlink()
    assert f"{folder / missing}: missing" in _refused(folder, tmp_path / "tables", capsys)


def test_mismatched_files_exit_2_naming_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _folder(tmp_path / "rows", rows=100)
    assert f"{rows / 'model.safetensors'}: 'embeddings' has 100 rows" in _refused(rows, tmp_path / "t1", capsys)
    mapped = _folder(tmp_path / "mapped", extra={"mapping": np.zeros(3, np.int64)})
    assert "vocabulary quantization" in _refused(mapped, tmp_path / "t2", capsys)
    config = _folder(tmp_path / "config")
    (config / "config.json").write_text("{not json")
    assert f"{config / 'config.json'}:1:" in _refused(config, tmp_path / "t3", capsys)
    short = _folder(tmp_path / "short", extra={"weights": np.ones(7, np.float32)})
    assert "'weights' has shape [7]" in _refused(short, tmp_path / "t4", capsys)


def test_model2vec_weights_become_pooling_weights(tmp_path: Path) -> None:
    n = Tokenizer.from_file(str(minilm_sample_paths()[1])).get_vocab_size(with_added_tokens=True)
    weights = np.linspace(0.1, 1.0, n).astype(np.float32)
    folder = _folder(tmp_path / "m2v", extra={"weights": weights})
    assert train_main(["import", str(folder), "--format", "model2vec", "--tables", str(tmp_path), "--name", "m", "--no-progress"]) == 0
    bundle = tmp_path / "m" / "1"
    b = read_bundle(bundle)
    np.testing.assert_array_equal(b.weights, weights)
    assert b.pooling["weights"] == "model2vec" and b.pooling["pca_ordered"] is False


def test_corpus_common_component_is_stored_and_removed_by_embed(tmp_path: Path) -> None:
    """distill --common-component (add_corpus_component): the first principal direction of the corpus's
    pooled unit vectors goes to component.npy, and Embed removes each vector's projection on it."""
    from embserve_trainer.distill import add_corpus_component
    from embserve_trainer.export import export_table
    from embserve_trainer.model2vec_import import import_model2vec

    folder = _folder(tmp_path / "m2v")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS[:5]) + "\n\n")  # one document per line; the blank line is skipped
    imported = add_corpus_component(import_model2vec(folder), [corpus])
    path = export_table(tmp_path / "tables", "c", imported.vectors, imported.keys, source=imported.source,
                        extras=imported.extras, files=imported.files, pooling=imported.pooling)  # type: ignore[arg-type]
    b = read_bundle(path)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()  # MiniLM's tokenizer.json pads to 128; Embed does not
    unk = tok.token_to_id("[UNK]")

    def mean(text: str) -> np.ndarray:
        ids = [t for t in tok.encode(text, add_special_tokens=False).ids if t != unk]
        return np.asarray(b.vectors[ids], np.float64).mean(axis=0)

    pooled = np.array([mean(t) / np.linalg.norm(mean(t)) for t in TEXTS[:5]])
    u = np.linalg.svd(pooled, full_matrices=False)[2][0]
    assert b.component is not None and b.component.shape == (1, 4)
    assert abs(float(b.component[0] @ u)) == pytest.approx(1.0, abs=1e-5)  # the same direction (either sign)
    info = b.pooling["common_component"]
    assert info["file"] == "component.npy" and info["texts"] == 5 and len(info["corpus_sha256"]) == 64
    with running_server(tmp_path / "tables") as server, Client(f"127.0.0.1:{server.port}") as client:
        got = client.embed([TEXTS[0]], table="c", normalize=False)[0]
    c = b.component[0].astype(np.float64)
    want = mean(TEXTS[0]) - (mean(TEXTS[0]) @ c) * c
    np.testing.assert_allclose(got, want, atol=1e-5)

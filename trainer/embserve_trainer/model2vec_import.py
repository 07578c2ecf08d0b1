"""Import a model2vec / potion folder (``model.safetensors`` + ``tokenizer.json`` + ``config.json``).

A model2vec ``StaticModel`` is a token table whose text vector is the mean of its tokens' rows,
tokenized with its own tokenizer (no special tokens, unknown tokens dropped), then normalised when
``config.json`` says ``"normalize": true``. Everything it needs maps onto a bundle:

- rows: the ``embeddings`` tensor, row i = token id i of ``tokenizer.json`` (stored in the bundle as
  the ``minilm`` table stores its tokenizer: :mod:`embserve_trainer.transformer`);
- pooling weights: the ``weights`` tensor when the folder has one (``weights.npy``, manifest
  ``pooling.weights = "model2vec"``). ``model2vec.distill`` without vocabulary quantization has none:
  it multiplies the Zipf-rank SIF weights into the rows before saving, so the pooling is a uniform
  mean (``"uniform"``, with ``"baked_into_rows": "sif"`` and the coefficient from ``config.json``),
  and a served mean equals ``StaticModel.encode``;
- a ``mapping`` tensor (vocabulary quantization: several tokens share a row) is refused: bundle rows
  are token ids.

No PyTorch and no model2vec needed: safetensors + tokenizers, like the transformer importer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from embserve_format.bundle import TOKENIZER, sha256_file

from embserve_trainer.formats import FormatError
from embserve_trainer.importers import Imported
from embserve_trainer.pooling import Pooling
from embserve_trainer.transformer import check_finite, read_matrix, read_vocab, tensor_shapes

logger = logging.getLogger(__name__)

MODEL = "model.safetensors"
CONFIG = "config.json"
REQUIRED = (MODEL, TOKENIZER, CONFIG)
EMBEDDINGS = "embeddings"  # model2vec's tensor names (model2vec.persistence.save_pretrained)
WEIGHTS = "weights"
MAPPING = "mapping"


def import_model2vec(path: Path | None, *, limit: int | None = None) -> Imported:
    """Read a model2vec folder as a token table with its pooling.

    Args:
        path: the folder ``StaticModel.save_pretrained`` wrote.
        limit: refused: rows must stay the tokenizer's ids.

    Returns:
        Rows, keys (one per token id), provenance, manifest extras (tokenizer facts, model2vec
        config), ``tokenizer.json``, and the pooling (weights or a uniform mean).

    Raises:
        ValueError: no folder, a missing file (named), a malformed config, a missing or non-2-D
            ``embeddings`` tensor, rows that differ from the tokenizer's ids, weights of the wrong
            length or sign, a vocabulary-quantized model.
    """
    if limit:
        raise ValueError("--limit does not apply to format 'model2vec': row i must stay token id i of the model")
    if path is None:
        raise ValueError("format 'model2vec' needs the model folder (with model.safetensors, tokenizer.json, config.json)")
    if not path.is_dir():
        raise ValueError(f"{path}: not a directory; format 'model2vec' reads a folder saved by StaticModel.save_pretrained")
    for name in REQUIRED:
        if not (path / name).is_file():
            raise ValueError(f"{path / name}: missing; a model2vec folder holds {', '.join(REQUIRED)}")
    config = read_config(path / CONFIG)
    model, tokenizer = path / MODEL, path / TOKENIZER
    vocab = read_vocab(tokenizer)
    shapes = tensor_shapes(model)
    if MAPPING in shapes:
        raise ValueError(f"{model}: has a {MAPPING!r} tensor (vocabulary quantization: tokens share rows); "
                         "bundle rows are token ids: distill without vocabulary_quantization")
    if EMBEDDINGS not in shapes:
        raise ValueError(f"{model}: no {EMBEDDINGS!r} tensor (tensors: {', '.join(sorted(shapes)) or 'none'}); "
                         "a model2vec model.safetensors holds 'embeddings' (and optionally 'weights')")
    shape, dtype = shapes[EMBEDDINGS]
    if len(shape) != 2:
        raise ValueError(f"{model}: tensor {EMBEDDINGS!r} has shape {list(shape)}, not (tokens, dim)")
    if shape[0] != vocab.size:
        raise ValueError(f"{model}: {EMBEDDINGS!r} has {shape[0]} rows but {tokenizer} numbers {vocab.size} tokens; "
                         "they must agree (row i = token id i): is this the model's own tokenizer.json?")
    vectors = read_matrix(model, EMBEDDINGS, dtype)
    check_finite(model, EMBEDDINGS, vectors, vocab.keys)
    pooling = read_pooling(model, shapes, config, vocab.size)
    logger.info("%s: %d tokens x %d, pooling %s", path, shape[0], shape[1], pooling.info["weights"])
    return Imported(
        vectors,
        vocab.keys,
        source={
            "kind": "imported",
            "format": "model2vec",
            "input": str(path),
            "input_sha256": sha256_file(model),
            "tokenizer_sha256": sha256_file(tokenizer),
            "config_sha256": sha256_file(path / CONFIG),
            "tensor_dtype": dtype,
        },
        extras={"tokenizer": {**vocab.extras, "tensor": EMBEDDINGS}, "model2vec": config},
        files={TOKENIZER: tokenizer.read_bytes()},
        pooling=pooling,
    )


def read_config(path: Path) -> dict[str, Any]:
    """``config.json`` as a dict; errors name the file and line."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FormatError(path, exc.lineno, f"not valid JSON ({exc.msg})", "a model2vec config.json") from exc
    except UnicodeDecodeError as exc:
        raise FormatError(path, "-", "not UTF-8", "a model2vec config.json") from exc
    if not isinstance(config, dict):
        raise FormatError(path, 1, "not a JSON object", "a model2vec config.json") from None
    kind = config.get("model_type")
    if kind is not None and kind != "model2vec":
        raise ValueError(f"{path}: model_type is {kind!r}, not 'model2vec' (a transformer folder? use "
                         "'embserve-train distill' or --format safetensors)")
    return config


def read_pooling(model: Path, shapes: dict[str, Any], config: dict[str, Any], count: int) -> Pooling:
    """The model's pooling: its ``weights`` tensor, else a uniform mean over rows that carry SIF already."""
    # pca_ordered: model2vec's PCA sorts columns by explained variance, so the first k columns are the
    # best k-dimensional table (the server's Embed allows `dimensions` only then).
    common = {"special_tokens": False, "drop_unknown": True, "normalize": bool(config.get("normalize", True)),
              "max_tokens": config.get("max_length") or 512, "pca_ordered": config.get("apply_pca") is not None}
    if WEIGHTS not in shapes:
        sif = config.get("sif_coefficient")
        baked = {"baked_into_rows": "sif", "sif_coefficient": sif, "probabilities": "zipf rank"} if sif else {}
        return Pooling(None, {"weights": "uniform", **baked, **common})
    shape, dtype = shapes[WEIGHTS]
    if tuple(shape) != (count,):
        raise ValueError(f"{model}: tensor {WEIGHTS!r} has shape {list(shape)}, expected [{count}] (one per token)")
    from safetensors import safe_open  # the [transformers] extra, imported only when used

    if dtype not in ("F32", "F16", "F64"):
        raise ValueError(f"{model}: tensor {WEIGHTS!r} is {dtype}; expected F32, F16 or F64")
    with safe_open(str(model), framework="np") as f:
        weights = np.ascontiguousarray(f.get_tensor(WEIGHTS), dtype=np.float32)
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(f"{model}: tensor {WEIGHTS!r} must hold finite numbers >= 0 (pooling weights)")
    return Pooling(weights, {"weights": "model2vec", **common})

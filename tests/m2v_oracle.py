"""Runs in the distill virtualenv (model2vec + transformers), for tests/test_distill.py and the bench.

    python m2v_oracle.py tiny-model TOKENIZER_DIR DIR   # a tiny random BERT (seeded) with that tokenizer, saved to DIR
    python m2v_oracle.py encode MODEL2VEC_DIR TEXTS.json OUT.npy   # StaticModel.encode, float32, no truncation
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def tiny_model(tokenizer_dir: Path, out: Path) -> None:
    """A 1-layer, 32-wide random BERT (seed 0) with ``tokenizer_dir``'s tokenizer: distils in seconds."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    out.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, out / name)
    vocab = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(str(out))


def encode(folder: Path, texts: Path, out: Path) -> None:
    import numpy as np
    from model2vec import StaticModel

    model = StaticModel.from_pretrained(str(folder), force_download=False)
    vectors = model.encode(json.loads(texts.read_text(encoding="utf-8")), max_length=None, use_multiprocessing=False)
    np.save(out, np.asarray(vectors, dtype=np.float32), allow_pickle=False)


if __name__ == "__main__":
    if sys.argv[1] == "tiny-model":
        tiny_model(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        encode(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))

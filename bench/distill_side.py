"""Runs in the distill virtualenv (.venv/tools/distill: model2vec, sentence-transformers, torch):
encodes a JSON list of texts and prints the seconds the encode call took (model load excluded).

    python distill_side.py st  MODEL_DIR TEXTS.json OUT.npy   # sentence-transformers, batch 256
    python distill_side.py m2v MODEL2VEC_DIR TEXTS.json OUT.npy   # model2vec StaticModel.encode, no truncation
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    import numpy as np

    mode, model, src, out = sys.argv[1:5]
    texts = json.loads(open(src, encoding="utf-8").read())
    if mode == "st":
        from sentence_transformers import SentenceTransformer

        enc = SentenceTransformer(model, device="cpu")
        enc.encode(texts[:32], batch_size=256)  # warm-up
        t0 = time.perf_counter()
        vectors = enc.encode(texts, batch_size=256, normalize_embeddings=True, show_progress_bar=False)
    else:
        from model2vec import StaticModel

        enc = StaticModel.from_pretrained(model, force_download=False)
        enc.encode(texts[:32])
        t0 = time.perf_counter()
        vectors = enc.encode(texts, max_length=None, batch_size=1024, use_multiprocessing=False)
    seconds = time.perf_counter() - t0
    np.save(out, np.asarray(vectors, dtype=np.float32), allow_pickle=False)
    print(seconds)


if __name__ == "__main__":
    main()

"""Run model2vec's own distillation and save the result as a model2vec folder.

A standalone script (standard library + model2vec only), run by :mod:`embserve_trainer.distill`
in whichever interpreter has ``model2vec[distill]``: its pinned set (transformers < 5.4,
tokenizers <= 0.23.0, huggingface_hub < 2) cannot share a virtualenv with embserve's own pins, so it
may live in a separate one (``constraints-distill.txt``). Nothing here re-implements model2vec:
``model2vec.distill.distill`` passes every token through the model, applies PCA and bakes the
Zipf-rank SIF weights into the rows; ``StaticModel.save_pretrained`` writes
``model.safetensors`` + ``tokenizer.json`` + ``config.json``, which ``embserve-train import
--format model2vec`` reads.

    python distill_worker.py MODEL_DIR OUT_DIR --pca-dims 256 --sif-coefficient 1e-4 [--vocabulary words.txt]
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import sys
from pathlib import Path

VERSIONS = "versions.json"  # written next to the model2vec files: the libraries that made them
LIBRARIES = ("model2vec", "transformers", "tokenizers", "torch", "skeletoken", "safetensors", "numpy")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="sentence-transformers / Hugging Face model folder")
    p.add_argument("out", type=Path, help="folder to write (must not exist)")
    p.add_argument("--pca-dims", type=int, default=256, help="PCA components (0: keep all, still rotated)")
    p.add_argument("--sif-coefficient", type=float, default=1e-4, help="SIF a of a/(a+p(rank)); 0: no weighting")
    p.add_argument("--vocabulary", type=Path, default=None, help="extra whole words, one per line")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    # Offline by construction: a model folder on disk, never the hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from model2vec.distill import distill

    vocabulary = None
    if args.vocabulary is not None:
        vocabulary = [w for w in args.vocabulary.read_text(encoding="utf-8").split("\n") if w.strip()]
    model = distill(
        model_name=str(args.model), vocabulary=vocabulary, device=args.device,
        pca_dims=args.pca_dims or "auto", sif_coefficient=args.sif_coefficient or None,
        quantize_to="float32",  # bundles hold float32: no float16 rounding of the rows
    )
    model.save_pretrained(str(args.out))
    versions = {}
    for dist in LIBRARIES:
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    (args.out / VERSIONS).write_text(json.dumps(versions, indent=2) + "\n", encoding="utf-8")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

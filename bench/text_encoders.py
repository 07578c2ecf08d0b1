"""Text -> one vector per text, for bench/bench_text_quality.py and bench/bench_text_equality.py.

``pool_bundle`` is the pooling a bundle's manifest describes, computed in-process over its raw rows
(what the server's Embed answers; bench_text_equality.py checks the two agree once Embed exists):
tokenizer tables use their ``tokenizer.json`` without special tokens and drop unknown tokens
(model2vec's ``StaticModel.encode``); word tables use the word tokenizer recorded in the manifest
(GloVe, which records none: NFKC, lower-case, ``words``) and skip unknown words. Rows are averaged
with ``weights.npy`` and lose their projection on ``component.npy`` (SIF's common component) unless
``plain``; vectors come out unit length (all-zero when no token is known).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from embserve_format.text import Tokenizer

BENCH = Path(__file__).resolve().parent
DISTILL_SIDE = BENCH / "distill_side.py"


class BundleEncoder:
    """Text vectors from one bundle directory (see the module docstring)."""

    def __init__(self, bundle: Path, *, plain: bool = False, weights: np.ndarray | None = None,
                 component: bool = True) -> None:
        self.bundle = bundle
        self.vectors = np.load(bundle / "vectors.npy", mmap_mode="r", allow_pickle=False)
        self.manifest: dict[str, Any] = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
        self.pooling: dict[str, Any] = self.manifest.get("pooling") or {}
        wfile = bundle / "weights.npy"
        self.weights = weights if weights is not None else (
            None if plain or not wfile.exists() else np.load(wfile, allow_pickle=False))
        cfile = bundle / "component.npy"
        self.component = np.load(cfile, allow_pickle=False) if component and not plain and cfile.exists() else None
        self.hf = None
        if (bundle / "tokenizer.json").exists():
            from tokenizers import Tokenizer as HFTokenizer

            self.hf = HFTokenizer.from_file(str(bundle / "tokenizer.json"))
            self.hf.no_truncation()
            self.unk = self.hf.token_to_id("[UNK]")
        else:
            keys = (bundle / "keys.txt").read_text(encoding="utf-8").split("\n")[: len(self.vectors)]
            self.ids = {k: i for i, k in enumerate(keys)}
            settings = self.manifest.get("extras", {}).get("tokenizer") or {}
            self.words = Tokenizer(normalization=settings.get("normalization", "NFKC"),
                                   lowercase=settings.get("lowercase", True), pattern=settings.get("pattern", "words"))

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        if self.hf is not None:
            return [[t for t in e.ids if t != self.unk] for e in self.hf.encode_batch(texts, add_special_tokens=False)]
        return [[i for i in (self.ids.get(w) for w in self.words(t)) if i is not None] for t in texts]

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.vectors.shape[1]), np.float32)
        for i, ids in enumerate(self.token_ids(texts)):
            if not ids:
                continue
            rows = np.asarray(self.vectors[ids], np.float32)
            total = 1.0 if self.weights is None else float(self.weights[ids].sum())
            v = rows.mean(axis=0) if self.weights is None else (self.weights[ids, None] * rows).sum(axis=0) / (total or 1.0)
            if self.component is not None:
                v = v - (v @ self.component.T) @ self.component
            n = np.linalg.norm(v)
            out[i] = v / n if n > 0 else v
        return out


def distill_side(python: str, mode: str, model: Path, texts: list[str], work: Path) -> tuple[np.ndarray, float]:
    """Encode ``texts`` in the distill virtualenv (mode "st": sentence-transformers, "m2v": model2vec).

    Returns the vectors and the in-process texts/s of the encode call alone (load time excluded).
    """
    work.mkdir(parents=True, exist_ok=True)
    src, out = work / f"{mode}-texts.json", work / f"{mode}-vectors.npy"
    src.write_text(json.dumps(texts), encoding="utf-8")
    done = subprocess.run([python, "-P", str(DISTILL_SIDE), mode, str(model), str(src), str(out)],
                          check=True, stdout=subprocess.PIPE, text=True)
    seconds = float(done.stdout.strip().splitlines()[-1])
    return np.load(out, allow_pickle=False), len(texts) / seconds


def timed(encoder: BundleEncoder, texts: list[str]) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    vectors = encoder.encode(texts)
    return vectors, len(texts) / (time.perf_counter() - t0)


if __name__ == "__main__":
    print(BundleEncoder(Path(sys.argv[1])).encode(sys.argv[2:]))

"""Equality: a distilled bundle's text vectors vs model2vec's own ``StaticModel.encode``, 1,000 random texts.

The texts: 700 GCIDE definitions (seeded draw) and 300 random strings mixing vocabulary words,
sub-words, digits, punctuation, accents, CJK and emoji (unknown tokens). The bundle side is the
pooling its manifest records (bench/text_encoders.py, in-process: the rule the server's Embed
implements; bench/bench_embed.py compares the served vectors); the model2vec side runs in the distill
virtualenv on the folder ``embserve-train distill --save-model2vec`` kept. Target: cosine >= 0.99999.

    .venv/bin/python bench/bench_text_equality.py --bundle tables/minilm-distilled/1 --model2vec m2v-folder
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gcide_pairs import sample_pairs  # noqa: E402
from text_encoders import BundleEncoder, distill_side  # noqa: E402

TARGET = 0.99999
EXTRA = ["é", "naïve", "東京", "🙂", "42", "3.14", "--", "##ing", "x", "Qwzx", "[UNK]", "[CLS]"]


def random_texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    defs = [d for _, d in sample_pairs(int(n * 0.7), seed)]
    words = " ".join(defs).split() + EXTRA
    salads = [" ".join(rng.choice(words, size=rng.integers(1, 30))) for _ in range(n - len(defs))]
    return defs + salads


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, required=True, help="the distilled bundle directory")
    p.add_argument("--model2vec", type=Path, required=True, help="its model2vec folder (--save-model2vec)")
    p.add_argument("--python", default=str(Path(sys.prefix) / "tools" / "distill" / "bin" / "python"))
    p.add_argument("--texts", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--work", type=Path, default=Path("/tmp/embserve-bench-equality"))
    args = p.parse_args()
    texts = random_texts(args.texts, args.seed)
    ref, _ = distill_side(args.python, "m2v", args.model2vec, texts, args.work)
    ours = BundleEncoder(args.bundle).encode(texts)
    nr, no = np.linalg.norm(ref, axis=1), np.linalg.norm(ours, axis=1)
    both_zero = (nr == 0) & (no == 0)
    cos = np.where(both_zero, 1.0, (ref * ours).sum(axis=1) / np.maximum(nr * no, 1e-30))
    worst = int(np.argmin(cos))
    print(f"{len(texts)} texts: cosine min {cos.min():.7f}, mean {cos.mean():.7f}; {int(both_zero.sum())} texts with no known "
          f"token (zero on both sides); worst: {texts[worst][:80]!r}")
    print(f"target cosine >= {TARGET}: {'met' if cos.min() >= TARGET else 'MISSED'}")
    return 0 if cos.min() >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())

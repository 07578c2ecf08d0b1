"""A seeded, clustered synthetic table for million-row benchmarks (issue 14): a Gaussian mixture.

    .venv/bin/python bench/gen_clustered.py --out /tmp/clustered [--rows 2000000 --dim 300 --centres 4000]
    flock /tmp/embserve-heavy.lock .venv/bin/embserve-train import /tmp/clustered/vectors.npy \\
        --format npy --vocab /tmp/clustered/keys.txt --tables tables --name clustered --index-storage ivfpq

Uniform random vectors have no neighbourhoods, so approximate search on them behaves nothing like
it does on embeddings. Here every row is a centre (one of a few thousand, drawn with Zipf-like
weights) plus Gaussian noise with a per-cluster spread, so neighbours are meaningful and cluster
sizes vary. Written in chunks into a memory-mapped .npy (2M x 300 float32 = 2.4 GB) with keys
``w0000001``...; the same seed always gives the same table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

CHUNK = 100_000


def generate(out: Path, rows: int, dim: int, centres: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(centres, dim)).astype(np.float32)
    spread = rng.uniform(0.15, 0.6, size=centres).astype(np.float32)  # tight and loose clusters
    weight = 1.0 / np.arange(1, centres + 1) ** 0.8
    weight /= weight.sum()
    out.mkdir(parents=True, exist_ok=True)
    vectors = np.lib.format.open_memmap(out / "vectors.npy", mode="w+", dtype=np.float32, shape=(rows, dim))
    for a in range(0, rows, CHUNK):
        b = min(rows, a + CHUNK)
        which = rng.choice(centres, size=b - a, p=weight)
        vectors[a:b] = centre[which] + spread[which, None] * rng.normal(size=(b - a, dim)).astype(np.float32)
    vectors.flush()
    width = len(str(rows))
    (out / "keys.txt").write_text("".join(f"w{i:0{width}d}\n" for i in range(1, rows + 1)), encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--dim", type=int, default=300)
    p.add_argument("--centres", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    generate(args.out, args.rows, args.dim, args.centres, args.seed)
    print(f"wrote {args.out}/vectors.npy ({args.rows} x {args.dim}) and keys.txt")


if __name__ == "__main__":
    main()

"""Lookups on a synthetic 1M x 300 table: what 300-d tests is bytes per call.

    .venv/bin/python bench/bench_synthetic.py [--quick] [--rows 1000000] [--dim 300] [--index Flat]

Builds a seeded float32 matrix (standard normal, seed 0) and keys ``w0000000``... in a temporary
directory, imports it with ``embserve-train import --format npy --index Flat`` (HNSW on 1M x 300
takes far too long on 2 cores, and lookups never touch the index; Flat keeps the build to the time
of writing the files), then runs the lookup comparison of ``bench_lookup`` on it: single-key and
1024-key Lookup vs a bare grpcio server returning the same response bytes. The directory (~2.4 GB
with the index) is removed afterwards; nothing is cached in the repository.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path
from typing import Any

import bench_lookup
import harness as h
import numpy as np

CHUNK = 100_000


def build(tmp: Path, rows: int, dim: int, index: str, seed: int = 0) -> tuple[Path, dict[str, Any]]:
    """Write the seeded matrix + keys and import them as table "synth"; returns (tables root, timings)."""
    t0 = time.perf_counter()
    src = tmp / "src"
    src.mkdir()
    mat = np.lib.format.open_memmap(src / "vectors.npy", mode="w+", dtype=np.float32, shape=(rows, dim))
    rng = np.random.default_rng(seed)
    for s in range(0, rows, CHUNK):
        mat[s : s + CHUNK] = rng.standard_normal((min(CHUNK, rows - s), dim), dtype=np.float32)
    mat.flush()
    del mat
    (src / "keys.txt").write_text("".join(f"w{i:07d}\n" for i in range(rows)), encoding="utf8")
    generated = time.perf_counter() - t0
    tables = tmp / "tables"
    cmd = [str(h.BIN / "embserve-train"), "import", str(src / "vectors.npy"), "--format", "npy", "--vocab", str(src / "keys.txt"),
           "--tables", str(tables), "--name", "synth", "--index", index]
    t1 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    imported = time.perf_counter() - t1
    for f in (src / "vectors.npy", src / "keys.txt"):
        f.unlink()  # the bundle holds its own copy
    return tables, {"generate_seconds": round(generated, 1), "import_seconds": round(imported, 1), "command": " ".join(cmd)}


def measure(*, quick: bool, rows: int = 1_000_000, dim: int = 300, index: str = "Flat") -> dict[str, Any]:
    with h.tmpdir("embserve-bench-synth-") as tmp:
        print(f"  building synthetic {rows} x {dim} table ({index}) in {tmp} ...", flush=True)
        tables, info = build(tmp, rows, dim, index)
        print(f"  generated in {info['generate_seconds']}s, imported in {info['import_seconds']}s", flush=True)
        part = bench_lookup.measure(tables, "synth", quick=quick, label=f"synthetic {rows}x{dim} ({index})")
    print(f"  (table build: generate {info['generate_seconds']}s + embserve-train import {info['import_seconds']}s; "
          f"embserve-server start to SERVING {part.get('ready_seconds', float('nan')):.1f}s)")
    return {**part, "build": info, "rows_count": rows, "dim": dim, "index": index}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=300)
    p.add_argument("--index", default="Flat", help="FAISS factory for the import (default Flat)")
    p.add_argument("--tables", type=Path, default=None, help="ignored (the table is synthetic); accepted for symmetry")
    args = p.parse_args()
    try:
        part = measure(quick=args.quick, rows=args.rows, dim=args.dim, index=args.index)
    finally:
        h.shutdown_pool()
    print("wrote", h.write_json("synthetic", {"machine": h.machine(), **part}))


if __name__ == "__main__":
    main()

"""Import speed and memory: embserve's strict streaming text importer vs gensim's
``KeyedVectors.load_word2vec_format`` on the same seeded GloVe-style text file.

Ours: parse + validate + write vectors.npy and keys.txt as a bundle (``import_table`` then
``write_bundle``, no index). gensim: ``load_word2vec_format(no_header=True)`` (the same file).
Each runs in a fresh process; peak RSS is its VmHWM (ru_maxrss would inherit the parent's).
Both read the file from the page cache (it was just written). The rows both sides read are compared by sha256.

Targets (issue 17): ours >= 3x faster than gensim; our peak RSS <= 1.3x the float32 rows.

    flock /tmp/embserve-heavy.lock .venv/bin/python bench/bench_import.py            # 1M x 300 (~2.5 GB, ~6 min)
    flock /tmp/embserve-heavy.lock .venv/bin/python bench/bench_import.py --rows 100000
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import load_line, write_json

SPEED_TARGET = 3.0
RSS_TARGET = 1.3
WRITE_ROWS = 50_000  # rows formatted per batch while writing the input (bounds the writer's memory)

OURS = """
import hashlib, json, sys, time
from embserve_format.bundle import read_bundle
from embserve_format.bundle_writer import BundleSpec, write_bundle
from embserve_trainer.importers import import_table
path, tables = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
imported = import_table("glove", __import__("pathlib").Path(path), progress=False)
out = write_bundle(tables, "bench", imported.vectors, imported.keys, BundleSpec(source=imported.source))
seconds = time.perf_counter() - t0
rss = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024
del imported
b = read_bundle(out, verify_checksums=False)
print(json.dumps({"seconds": seconds, "rss": rss, "shape": list(b.vectors.shape),
                  "sha256": hashlib.sha256(b.vectors.tobytes()).hexdigest(),
                  "keys_sha256": hashlib.sha256("\\n".join(b.keys).encode()).hexdigest()}))
"""

GENSIM = """
import hashlib, json, sys, time, numpy as np
from gensim.models import KeyedVectors
t0 = time.perf_counter()
kv = KeyedVectors.load_word2vec_format(sys.argv[1], no_header=True)
seconds = time.perf_counter() - t0
rss = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024
keys = [k for k in kv.index_to_key if k is not None]
print(json.dumps({"seconds": seconds, "rss": rss, "shape": [len(keys), kv.vector_size],
                  "sha256": hashlib.sha256(np.ascontiguousarray(kv.vectors[: len(keys)]).tobytes()).hexdigest(),
                  "keys_sha256": hashlib.sha256("\\n".join(keys).encode()).hexdigest()}))
"""


def write_input(path: Path, rows: int, dim: int, seed: int) -> None:
    """A GloVe-style file: keys w0.. (every 7th with a non-ASCII letter), 5-decimal values."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    rng = np.random.default_rng(seed)
    options = pcsv.WriteOptions(include_header=False, delimiter=" ", quoting_style="none")
    with open(path, "wb") as f:
        for start in range(0, rows, WRITE_ROWS):
            n = min(WRITE_ROWS, rows - start)
            # k / 1e5 as float32 prints as at most 5 decimals (shortest round-trip), like GloVe files.
            values = (rng.integers(-99_999, 100_000, size=(n, dim)) / 1e5).astype(np.float32)
            keys = [f"w{i}" + ("é" if i % 7 == 0 else "") for i in range(start, start + n)]
            columns = {"key": pa.array(keys), **{f"v{j}": pa.array(values[:, j]) for j in range(dim)}}
            pcsv.write_csv(pa.table(columns), f, options)


def run(script: str, *args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", script, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmp", type=Path, default=Path("/tmp"), help="where the input file and bundle go (deleted after)")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-import-", dir=args.tmp))
    try:
        src = work / "input.txt"
        t0 = time.perf_counter()
        write_input(src, args.rows, args.dim, args.seed)
        size = src.stat().st_size
        print(f"input: {args.rows} x {args.dim}, {size / 1e9:.2f} GB written in {time.perf_counter() - t0:.0f} s")
        print(load_line())
        ours = run(OURS, str(src), str(work / "tables"))
        shutil.rmtree(work / "tables")
        print(f"embserve import: {ours['seconds']:.1f} s; {load_line()}")
        theirs = run(GENSIM, str(src))
        print(f"gensim load_word2vec_format: {theirs['seconds']:.1f} s; {load_line()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows_bytes = args.rows * args.dim * 4
    speedup = theirs["seconds"] / ours["seconds"]
    rss_ratio = ours["rss"] / rows_bytes
    same = ours["sha256"] == theirs["sha256"] and ours["keys_sha256"] == theirs["keys_sha256"]
    print()
    print(f"{'':28}{'embserve':>12}{'gensim':>12}{'ratio':>10}   target")
    print(f"{'seconds':28}{ours['seconds']:>12.1f}{theirs['seconds']:>12.1f}{speedup:>9.1f}x   >= {SPEED_TARGET}x "
          f"{'PASS' if speedup >= SPEED_TARGET else 'FAIL'}")
    print(f"{'MB/s of text':28}{size / ours['seconds'] / 1e6:>12.0f}{size / theirs['seconds'] / 1e6:>12.0f}")
    print(f"{'peak RSS (MB)':28}{ours['rss'] / 1e6:>12.0f}{theirs['rss'] / 1e6:>12.0f}")
    print(f"{'peak RSS / float32 rows':28}{rss_ratio:>12.2f}{theirs['rss'] / rows_bytes:>12.2f}{'':>10}   <= {RSS_TARGET} "
          f"{'PASS' if rss_ratio <= RSS_TARGET else 'FAIL'}")
    print(f"rows and keys identical to gensim's: {same}")
    print(load_line())
    path = write_json("import", {"rows": args.rows, "dim": args.dim, "bytes": size, "embserve": ours, "gensim": theirs,
                                 "speedup": speedup, "rss_ratio": rss_ratio, "identical": same, "load": load_line()})
    print(f"written {path}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark suite of `make bench`: every part, one run, ours vs baseline with ratios.

    .venv/bin/python bench/bench_serving.py --tables tables            # everything (~10-15 min)
    .venv/bin/python bench/bench_serving.py --tables tables --quick    # shorter loops (~5 min)
    .venv/bin/python bench/bench_serving.py --tables tables --parts lookup,neighbours

Parts (each also runs alone as its own script):
  lookup      bench_lookup.py      single-key and 1024-key Lookup vs a bare grpcio server (GloVe 400k x 50)
  neighbours  bench_neighbours.py  NN by key vs bare RTT + in-process FAISS, gensim, Chroma, Milvus Lite;
                                   exact batches of 256 vs in-process FAISS with BLAS
  startup     bench_startup.py     cold start, peak RSS, --workers 2 memory and throughput
  synthetic   bench_synthetic.py   1M x 300 synthetic table (Flat index): lookups vs bare grpcio

Targets are printed as PASS/FAIL next to each figure; nothing here fails on a timing. Figures
are noisy on a shared 2-core box: compare within one run (the load average is printed with each
table). JSON goes to bench/results/ (gitignored).
"""

from __future__ import annotations

import argparse
import time
import traceback
from pathlib import Path
from typing import Any

import bench_lookup
import bench_neighbours
import bench_startup
import bench_synthetic
import harness as h

PARTS = ("lookup", "neighbours", "startup", "synthetic")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", type=Path, default=Path("tables"), help="tables root holding the 'glove' bundle")
    p.add_argument("--table", default="glove")
    p.add_argument("--quick", action="store_true", help="shorter loops, fewer rounds")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--no-chroma", action="store_true", help="skip Chroma (loading 400k rows takes ~2 min)")
    p.add_argument("--no-milvus", action="store_true", help="skip Milvus Lite")
    args = p.parse_args()
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}; choose from {PARTS}")

    t0 = time.perf_counter()
    info = h.machine()
    print(f"embserve benchmarks: {', '.join(parts)}{' (quick)' if args.quick else ''}; tables {args.tables}; "
          f"python {info['python']}, grpcio {info['grpcio']}, faiss {info['faiss']}; {h.load_line()}", flush=True)
    results: dict[str, Any] = {"machine": info, "quick": args.quick}
    runners = {
        "lookup": lambda: bench_lookup.measure(args.tables, args.table, quick=args.quick),
        "neighbours": lambda: bench_neighbours.measure(args.tables, args.table, quick=args.quick, chroma=not args.no_chroma, milvus=not args.no_milvus),
        "startup": lambda: bench_startup.measure(args.tables, args.table, quick=args.quick),
        "synthetic": lambda: bench_synthetic.measure(quick=args.quick),
    }
    try:
        for part in parts:
            started = time.perf_counter()
            try:
                results[part] = runners[part]()
            except Exception as exc:  # noqa: BLE001 - one broken part must not hide the others' figures
                traceback.print_exc()
                print(f"\n== {part}: FAILED TO RUN ({type(exc).__name__}: {exc})", flush=True)
                results[part] = {"error": f"{type(exc).__name__}: {exc}"}
            results.setdefault(part, {})["part_seconds"] = round(time.perf_counter() - started, 1)
    finally:
        h.shutdown_pool()
    results["seconds"] = round(time.perf_counter() - t0, 1)
    summary(results, parts)
    print(f"\ntotal {results['seconds']:.0f}s; {h.load_line()}")
    print("wrote", h.write_json("serving", results))


def summary(results: dict[str, Any], parts: list[str]) -> None:
    """Every line that has a target, in one place."""
    rows = []
    for part in parts:
        for r in results.get(part, {}).get("rows", []):
            if r.get("target"):
                rows.append(h.Row(f"[{part}] {r['metric']}", r["ours"], r["baseline"], r["ratio"], r["target"], r["verdict"]))
    if rows:
        h.print_table("Summary: every target", rows)


if __name__ == "__main__":
    main()

"""Index storage: flat float32 vs scalar-quantized HNSW storage with an exact re-rank (issue 14).

    flock /tmp/embserve-heavy.lock .venv/bin/python bench/bench_storage.py --tables tables [--table glove]
        [--factories HNSW16,SQ8 HNSW32,SQ8] [--seconds 4] [--rounds 3]

Rebuilds the table's rows under each quantized factory (export_table: build, efSearch tuned to
recall@10 >= 0.975 with the re-rank, keys.idx), then reports side by side with the table as it
is (flat storage): index file bytes, the tuned efSearch and held-out recall@10 from the
manifest, recall@10 of served answers against exact search on fresh queries, and
most_similar(key) calls/s of one client with the server CPU per call: rounds alternate between
the storages, and the best round of each is reported (least disturbed by other load).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import harness as h
import numpy as np
from embserve_client import Client
from embserve_format.bundle import INDEX, read_bundle, read_manifest
from embserve_index import VectorIndex, build_index, prepare_rows

SIZE_TARGET = 0.5  # sq8 index file <= 0.5x of flat
RECALL_TARGET = 0.975
RATE_TARGET = 0.9  # NN calls/s >= 0.9x of flat
QUERIES = 500


def recall_served(target: str, table: str, keys: list[str], truth: list[list[str]]) -> float:
    with Client(target) as c:
        hits = 0
        for k, want in zip(keys, truth):
            got = {n.key for n in c.most_similar(k, topn=10, table=table)}
            hits += len(got & set(want))
    return hits / (10 * len(keys))


def nn_rate(target: str, table: str, keys: list[str], pid: int, seconds: float) -> tuple[float, float]:
    """most_similar(key) calls/s of one client, and server CPU microseconds per call."""
    with Client(target) as c:
        for k in keys[:50]:
            c.most_similar(k, topn=10, table=table)
        cpu0, t0, n = h.cpu_seconds(pid), time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            c.most_similar(keys[n % len(keys)], topn=10, table=table)
            n += 1
        elapsed, cpu = time.perf_counter() - t0, h.cpu_seconds(pid) - cpu0
    return n / elapsed, cpu / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", type=Path, default=Path("tables"))
    p.add_argument("--table", default="glove")
    p.add_argument("--factories", nargs="+", default=["HNSW16,SQ8", "HNSW32,SQ8"], help="HNSW16,SQ8 is --index-storage sq8")
    p.add_argument("--seconds", type=float, default=4.0, help="per round and storage")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    from embserve_trainer.export import export_table

    src = h.newest_bundle(args.tables, args.table)
    b = read_bundle(src)
    print(f"# {args.table}: {b.count} x {b.vector_size}, flat index {b.index_info.get('factory')}; {h.load_line()}")
    rng = np.random.default_rng(0)
    qids = rng.choice(min(b.count, 100_000), size=QUERIES, replace=False)  # frequent keys, as users ask
    unit = prepare_rows(b.vectors, b.metric)
    _, I = VectorIndex.from_index(build_index(unit, "Flat")).search(unit[qids], 10, drop=qids[:, None])
    keys = [b.keys[int(i)] for i in qids]
    truth = [[b.keys[int(j)] for j in row] for row in I]
    del unit
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        root = h.isolate_table(args.tables, args.table, Path(tmp))
        names = {"flat": args.table}
        for factory in args.factories:
            name = "q" + factory.replace(",", "_").lower()
            t0 = time.perf_counter()
            export_table(root, name, b.vectors, list(b.keys), source={"kind": "bench"}, metric=b.metric, factory=factory)
            print(f"built {factory} in {time.perf_counter() - t0:.0f}s")
            names[factory] = name
        with h.EmbserveProcess(root) as server:
            server.wait_serving(timeout=900)
            rounds: dict[str, list[tuple[float, float]]] = {label: [] for label in names}
            for _ in range(args.rounds):
                for label, name in names.items():
                    rounds[label].append(nn_rate(server.target, name, keys, server.proc.pid, args.seconds))
            for label, name in names.items():
                path = h.newest_bundle(root, name)
                info = read_manifest(path)["index"]
                results.append({
                    "storage": label, "factory": info.get("factory"), "index_bytes": (path / INDEX).stat().st_size,
                    "ef_search": info.get("ef_search"), "rerank": info.get("rerank", 1), "tuned_recall": info.get("recall_at_10"),
                    "served_recall": recall_served(server.target, name, keys, truth),
                    "calls_per_s": max(r for r, _ in rounds[label]), "cpu_us": min(c for _, c in rounds[label]), "rounds": rounds[label],
                })
    flat = results[0]
    print(f"{'storage':<12} {'index MiB':>9} {'x flat':>7} {'ef':>4} {'rerank':>6} {'tuned r@10':>10} {'served r@10':>11} {'NN calls/s':>10} {'x flat':>7} {'CPU us/call':>11}")
    for r in results:
        print(f"{r['factory']:<12} {r['index_bytes'] / 2**20:>9.1f} {r['index_bytes'] / flat['index_bytes']:>7.3f} {r['ef_search']!s:>4} {r['rerank']:>6} "
              f"{r['tuned_recall']!s:>10} {r['served_recall']:>11.4f} {r['calls_per_s']:>10.0f} {r['calls_per_s'] / flat['calls_per_s']:>7.3f} {r['cpu_us']:>11.0f}")
    print("rounds (calls/s, server CPU us/call):", "; ".join(f"{r['factory']}: " + ", ".join(f"{a:.0f}/{c:.0f}" for a, c in r["rounds"]) for r in results))
    print(f"targets: index <= {SIZE_TARGET}x flat, recall@10 >= {RECALL_TARGET}, NN calls/s >= {RATE_TARGET}x flat; {h.load_line()}")
    h.write_json("storage", {"table": args.table, "results": results})


if __name__ == "__main__":
    main()

"""Millions of rows in little memory (issue 14): the seeded clustered 2M x 300 table with IVF-PQ.

    flock /tmp/embserve-heavy.lock .venv/bin/python bench/bench_clustered.py \\
        --data /tmp/clustered --tables /tmp/bigtables --glove-tables tables [--reuse]

1. Generates the clustered table into ``--data`` when it is not there (bench/gen_clustered.py).
2. Imports it with ``embserve-train import --index-storage ivfpq`` (the real CLI, a subprocess):
   wall seconds and the import's peak RSS. ``--reuse`` measures an existing bundle instead.
3. Index bytes against the raw rows' bytes; the manifest's tuned nprobe, re-rank and held-out recall.
4. Serves the table alone (the real ``embserve-server``): recall@10 of served ``most_similar(key)``
   answers against exact search over the raw rows (fresh keys, the key itself left out), then
   lookups and neighbour calls, then the server's peak RSS (VmHWM, runtime included) against the
   bytes of raw rows + index + keys (keys.txt and keys.idx).
5. Single-key Lookup server CPU per call on this table against the same call on GloVe 400k:
   raw-stub loops, alternating between the two servers over rounds, the least disturbed round of each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import harness as h
import numpy as np
from embserve_client import Client
from embserve_client.pb import embserve_pb2 as pb
from embserve_format.bundle import KEY_INDEX, Bundle, read_bundle, read_manifest
from embserve_index.rawrows import RawRows

MiB = 2**20
IMPORT_SECONDS_TARGET = 15 * 60
RECALL_TARGET = 0.95
INDEX_RATIO_TARGET = 0.1  # index bytes <= 0.1 x raw rows
RSS_RATIO_TARGET = 1.15  # peak RSS <= 1.15 x (raw rows + index + keys)
LOOKUP_CPU_TARGET = 1.1  # single-key Lookup server CPU per call <= 1.1 x GloVe's
QUERIES = 500


def import_table(data: Path, tables: Path, name: str) -> dict[str, Any]:
    """Run the import CLI; wall seconds and the child's peak RSS (from wait4's rusage)."""
    cmd = [str(h.BIN / "embserve-train"), "import", str(data / "vectors.npy"), "--format", "npy", "--vocab", str(data / "keys.txt"),
           "--tables", str(tables), "--name", name, "--index-storage", "ivfpq"]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"import failed with exit {os.waitstatus_to_exitcode(status)}")
    return {"seconds": seconds, "peak_rss": usage.ru_maxrss * 1024}


def served_recall(target: str, name: str, bundle: Bundle, pid: int, seed: int = 1) -> tuple[float, float, float]:
    """recall@10 of the server's most_similar(key) against exact cosine search over the raw rows,
    with the calls' mean wall ms and server CPU ms."""
    qids = np.random.default_rng(seed).choice(bundle.count, size=QUERIES, replace=False)
    exact = RawRows(np.asarray(bundle.vectors), normalized=True)
    queries = exact[qids]
    _, I = exact.knn(queries, 11, bundle.count)
    hits = 0
    with Client(target, timeout=60) as c:
        c.most_similar(bundle.keys[0], topn=10, table=name)
        cpu0, t0 = h.cpu_seconds(pid), time.perf_counter()
        for q, row in zip(qids.tolist(), I):
            truth = [bundle.keys[int(j)] for j in row if j != q][:10]
            got = {n.key for n in c.most_similar(bundle.keys[q], topn=10, table=name)}
            hits += len(got & set(truth))
        wall, cpu = time.perf_counter() - t0, h.cpu_seconds(pid) - cpu0
    return hits / (10 * QUERIES), wall / QUERIES * 1e3, cpu / QUERIES * 1e3


def exercise(target: str, name: str, keys: list[str]) -> None:
    """The calls whose memory the peak RSS includes: single and batch lookups, neighbour searches."""
    with Client(target, timeout=60) as c:
        for k in keys[:200]:
            c.lookup([k], table=name)
            c.most_similar(k, topn=10, table=name)
        for _ in range(20):
            c.lookup(keys, table=name)
        c.most_similar_batch(keys[:256], topn=10, table=name)


def lookup_cpu(servers: dict[str, tuple[h.EmbserveProcess, bytes]], rounds: int, seconds: float) -> dict[str, list[float]]:
    """Server CPU us per single-key Lookup call (raw stub, pre-serialized request), per round and server."""
    out: dict[str, list[float]] = {label: [] for label in servers}
    for _ in range(rounds):
        for label, (server, request) in servers.items():
            t, _ = h.run_clients([h.LoopSpec("raw", server.target, [request], seconds=seconds)], [server.proc.pid])
            out[label].append((t.server_cpu_per_call or 0.0) * 1e6)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("/tmp/clustered"))
    p.add_argument("--tables", type=Path, default=Path("/tmp/bigtables"))
    p.add_argument("--name", default="clustered")
    p.add_argument("--glove-tables", type=Path, default=Path("tables"))
    p.add_argument("--reuse", action="store_true", help="measure the newest existing bundle instead of importing")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    args = p.parse_args()
    print(f"# {h.load_line()}", flush=True)
    if not (args.data / "vectors.npy").exists():
        subprocess.run([sys.executable, str(h.BENCH / "gen_clustered.py"), "--out", str(args.data)], check=True)
    result: dict[str, Any] = {}
    if args.reuse and (args.tables / args.name).is_dir():
        result["import"] = None
    else:
        result["import"] = import_table(args.data, args.tables, args.name)
    bundle_dir = h.newest_bundle(args.tables, args.name)
    manifest = read_manifest(bundle_dir)
    size = {f: (bundle_dir / f).stat().st_size for f in manifest["files"]}
    rows_b, index_b = size["vectors.npy"], size["index.faiss"]
    keys_b = size["keys.txt"] + size.get(KEY_INDEX, 0)
    parts = rows_b + index_b + keys_b
    result.update(bundle=str(bundle_dir), files=size, index=manifest["index"])
    bundle = read_bundle(bundle_dir)
    sample = [bundle.keys[int(i)] for i in np.random.default_rng(2).choice(bundle.count, size=1024, replace=False)]
    with h.tmpdir("bench-clustered-") as tmp:
        big_root = h.isolate_table(args.tables, args.name, tmp / "big")
        glove_root = h.isolate_table(args.glove_tables, "glove", tmp / "glove")
        with h.EmbserveProcess(big_root) as big:
            result["ready_seconds"] = big.wait_serving(timeout=900)
            result["recall_served"], result["nn_ms"], result["nn_server_cpu_ms"] = served_recall(big.target, args.name, bundle, big.proc.pid)
            exercise(big.target, args.name, sample)
            with h.EmbserveProcess(glove_root) as glove:
                glove.wait_serving(timeout=600)
                single = pb.LookupRequest(keys=[sample[0]], table=args.name).SerializeToString()
                cat = pb.LookupRequest(keys=["cat"], table="glove").SerializeToString()
                result["lookup_cpu_us"] = lookup_cpu({args.name: (big, single), "glove": (glove, cat)}, args.rounds, args.seconds)
            result["peak_rss"] = h.status_kib(big.proc.pid, "VmHWM") * 1024
    imp = result["import"]
    idx = result["index"]
    cpu = {k: min(v) for k, v in result["lookup_cpu_us"].items()}
    rows = [
        h.Row("import + index build, seconds", imp and imp["seconds"], None, None, f"<= {IMPORT_SECONDS_TARGET}",
              h.verdict(imp["seconds"], IMPORT_SECONDS_TARGET, higher_is_better=False) if imp else "n/a"),
        h.Row("import peak RSS, MiB", imp and imp["peak_rss"] / MiB, rows_b / MiB, imp and imp["peak_rss"] / rows_b),
        h.Row("index bytes (MiB) vs raw rows", index_b / MiB, rows_b / MiB, index_b / rows_b, f"<= {INDEX_RATIO_TARGET}x",
              h.verdict(index_b / rows_b, INDEX_RATIO_TARGET, higher_is_better=False)),
        h.Row(f"recall@10, manifest held-out (nprobe {idx.get('nprobe')}, re-rank {idx.get('rerank')}x)", idx.get("recall_at_10"), None, None,
              f">= {RECALL_TARGET}", h.verdict(idx.get("recall_at_10"), RECALL_TARGET)),
        h.Row(f"recall@10 of served answers, {QUERIES} fresh keys", result["recall_served"], None, None, f">= {RECALL_TARGET}",
              h.verdict(result["recall_served"], RECALL_TARGET)),
        h.Row("most_similar(key) ms a call (wall, one client)", result["nn_ms"], None, None),
        h.Row("most_similar(key) server CPU ms a call", result["nn_server_cpu_ms"], None, None),
        h.Row("serving peak RSS (MiB) vs rows + index + keys", result["peak_rss"] / MiB, parts / MiB, result["peak_rss"] / parts,
              f"<= {RSS_RATIO_TARGET}x", h.verdict(result["peak_rss"] / parts, RSS_RATIO_TARGET, higher_is_better=False)),
        h.Row("single-key Lookup server CPU us/call vs GloVe's", cpu[args.name], cpu["glove"], cpu[args.name] / cpu["glove"],
              f"<= {LOOKUP_CPU_TARGET}x", h.verdict(cpu[args.name] / cpu["glove"], LOOKUP_CPU_TARGET, higher_is_better=False)),
    ]
    h.print_table(f"Clustered {bundle.count} x {bundle.vector_size}, {idx.get('factory')}", rows, ours=args.name, baseline="reference")
    print(f"lookup CPU us/call by round: {json.dumps(result['lookup_cpu_us'])}")
    h.write_json("clustered", {**result, "rows": h.rows_json(rows)})


if __name__ == "__main__":
    main()

"""Cold start, memory and ``--workers``: embserve-server on the prebuilt GloVe bundle.

    .venv/bin/python bench/bench_startup.py --tables tables [--quick]

- Cold start: process start of ``embserve-server`` -> grpc.health.v1 SERVING (polled every 10 ms
  on fresh connections). The bundle's files are in the page cache (a restart, not a cold disk).
- Peak RSS: VmHWM of the server after a burst of lookups and searches, vs the bytes of
  vectors.npy + index.faiss (mapped file pages count in RSS).
- ``--workers 2``: memory of each extra worker as the growth of the process tree's PSS (from
  /proc/PID/smaps_rollup; shared pages are split between the processes that map them) over one
  worker, plus each worker's private bytes (USS); and single-key lookup calls/s of two client
  processes (raw stubs, 4 connections and 2 calls in flight each) against 2 workers vs 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import harness as h
from bench_lookup import pick_keys
from embserve_client.pb import embserve_pb2 as pb

COLD_START_TARGET = 2.0  # seconds
RSS_TARGET = 1.3  # x (vectors.npy + index.faiss)
EXTRA_WORKER_TARGET = 0.10  # x table bytes per extra worker
WORKERS_TARGET = 1.7  # x one worker's calls/s

MiB = 1 << 20


def tree_memory(pids: list[int]) -> dict[str, Any]:
    per = {}
    for p in pids:
        try:
            sm = h.smaps_kib(p)
            per[p] = {"rss_kib": sm.get("Rss", 0), "pss_kib": sm.get("Pss", 0),
                      "uss_kib": sm.get("Private_Clean", 0) + sm.get("Private_Dirty", 0), "anon_kib": sm.get("Anonymous", 0), "hwm_kib": h.status_kib(p, "VmHWM")}
        except OSError:
            continue
    return {"processes": per, "pss_kib": sum(v["pss_kib"] for v in per.values())}


def touch_all(target: str, count: int, connections: int = 6, chunk: int = 4_096) -> None:
    """Look up every row over several fresh connections, so every worker maps every page."""
    import grpc

    for n in range(connections):
        opts = [*h.GRPC_OPTIONS, ("grpc.use_local_subchannel_pool", 1), ("bench.touch", n)]
        with grpc.insecure_channel(target, options=opts) as ch:
            call = ch.unary_unary(h.LOOKUP)
            for start in range(0, count, chunk):
                call(pb.LookupRequest(ids=range(start, min(count, start + chunk))).SerializeToString(), timeout=60)


def burst(target: str, single: str, batch: list[str], seconds: float) -> None:
    """Touch the serving paths (lookups of many keys, searches) so peak RSS reflects serving."""
    h.run_clients([h.LoopSpec("lookup", target, [batch], seconds=seconds, warmup_seconds=0.2)])
    h.run_clients([h.LoopSpec("nn", target, batch[:256], seconds=seconds, warmup_seconds=0.2)])


def measure(tables: Path, name: str, *, quick: bool) -> dict[str, Any]:
    trials = 1 if quick else 3
    seconds = 2.0 if quick else 5.0
    bundle = h.newest_bundle(tables, name)
    file_bytes = sum((bundle / f).stat().st_size for f in ("vectors.npy", "index.faiss") if (bundle / f).exists())
    bundle_bytes = sum(p.stat().st_size for p in bundle.iterdir() if p.is_file())
    single, batch = pick_keys(bundle)
    count = int(json.loads((bundle / "manifest.json").read_text())["count"])
    out: dict[str, Any] = {"table": name, "bundle": str(bundle), "vectors_plus_index_bytes": file_bytes, "bundle_bytes": bundle_bytes}
    rows: list[h.Row] = []
    with h.tmpdir("embserve-bench-start-") as tmp:
        root = h.isolate_table(tables, name, tmp)
        for f in bundle.iterdir():  # page cache: measure a restart, not the disk
            if f.is_file():
                f.read_bytes()
        starts = []
        for n in range(trials):
            with h.EmbserveProcess(root) as srv:
                starts.append(srv.wait_serving())
                if n == trials - 1:
                    burst(srv.target, single, batch, 1.0 if quick else 2.0)
                    touch_all(srv.target, count)
                    pid = srv.proc.pid
                    hwm = h.status_kib(pid, "VmHWM") * 1024
                    mem1 = tree_memory([pid])
        cold = statistics.median(starts)
        out.update(cold_start_seconds=starts, peak_rss_bytes=hwm, single_worker=mem1)
        rows.append(h.Row(f"cold start to SERVING, s (median of {trials})", cold, None, None, f"<= {COLD_START_TARGET:g} s",
                          h.verdict(cold, COLD_START_TARGET, higher_is_better=False), "all: " + ", ".join(f"{s:.2f}" for s in starts)))
        rows.append(h.Row("peak RSS (VmHWM), MiB vs vectors.npy+index.faiss", hwm / MiB, file_bytes / MiB, hwm / file_bytes, f"<= {RSS_TARGET}x",
                          h.verdict(hwm / file_bytes, RSS_TARGET, higher_is_better=False)))
        rows.append(h.Row("PSS of the single server process, MiB", mem1["pss_kib"] / 1024, file_bytes / MiB, mem1["pss_kib"] * 1024 / file_bytes))
        rows += workers(root, single, count, file_bytes, seconds, out)
    h.print_table(f"Start-up, memory and --workers, table {name} ({file_bytes / MiB:.0f} MiB vectors+index)", rows, baseline="reference")
    out["rows"] = h.rows_json(rows)
    return out


def workers(root: Path, single: str, count: int, file_bytes: int, seconds: float, out: dict[str, Any]) -> list[h.Row]:
    help_text = subprocess.run([str(h.BIN / "embserve-server"), "--help"], capture_output=True, text=True).stdout
    if "--workers" not in help_text:
        return [h.Row("extra worker memory", "n/a (no --workers)", None, None, f"<= {EXTRA_WORKER_TARGET:.0%}", "n/a"),
                h.Row("2 workers vs 1, calls/s", "n/a (no --workers)", None, None, f">= {WORKERS_TARGET}x", "n/a")]
    req = pb.LookupRequest(keys=[single]).SerializeToString()

    def spec(target: str) -> h.LoopSpec:
        return h.LoopSpec("raw", target, [req], seconds=seconds, warmup_seconds=1.0, depth=2, channels=4)

    results: dict[int, dict[str, Any]] = {}
    rounds = 1 if seconds < 3 else 2
    with h.EmbserveProcess(root, workers=1) as one, h.EmbserveProcess(root, workers=2) as two:
        servers = {1: one, 2: two}
        for n, srv in servers.items():
            srv.wait_serving()
            pids = srv.wait_all_workers(n)
            touch_all(srv.target, count)
            results[n] = {"timings": [], "memory": tree_memory(h.proc_tree(srv.proc.pid)), "workers": pids, "ready_seconds": srv.ready_seconds}
        for _ in range(rounds):  # alternate 1 and 2 workers: both see the same background load
            for n, srv in servers.items():
                t, _ = h.run_clients([spec(srv.target), spec(srv.target)], h.proc_tree(srv.proc.pid))
                results[n]["timings"].append(t)
    for r in results.values():
        r["timing"] = max(r["timings"], key=lambda t: t.rate)
    t1, t2 = results[1]["timing"], results[2]["timing"]
    m1, m2 = results[1]["memory"], results[2]["memory"]
    growth = (m2["pss_kib"] - m1["pss_kib"]) * 1024
    workers2 = [p for p in results[2]["workers"] if p in m2["processes"]]
    uss = [m2["processes"][p]["uss_kib"] * 1024 for p in workers2]
    pss = [m2["processes"][p]["pss_kib"] * 1024 for p in workers2]
    extra = max(uss) if uss else float("nan")
    others = sorted(set(m2["processes"]) - set(workers2))
    cpu_share = t2.extra.get("server_cpu_seconds_by_pid", {})
    out["workers"] = {
        str(n): {"timing": r["timing"].summary(), "memory": r["memory"], "worker_pids": r["workers"],
                 "rounds": [t.summary() for t in r["timings"]],
                 "server_cpu_seconds_by_pid": r["timing"].extra.get("server_cpu_seconds_by_pid")}
        for n, r in results.items()
    }
    ratio = t2.rate / t1.rate
    share = ", ".join(f"{cpu_share.get(str(p), 0):.1f}" for p in workers2)
    return [
        h.Row("extra worker: private bytes (USS) of a worker, MiB", extra / MiB, file_bytes / MiB, extra / file_bytes, f"<= {EXTRA_WORKER_TARGET:.0%}",
              h.verdict(extra / file_bytes, EXTRA_WORKER_TARGET, higher_is_better=False),
              "USS of each: " + " / ".join(f"{u / MiB:.0f}" for u in uss)),
        h.Row("  PSS of each of the 2 workers, MiB", " / ".join(f"{u / MiB:.0f}" for u in pss), file_bytes / MiB, None),
        h.Row("  process-tree PSS, 2 workers vs 1, MiB", m2["pss_kib"] / 1024, m1["pss_kib"] / 1024, growth / file_bytes,
              "", "", f"growth {growth / MiB:.0f} MiB (ratio column: growth / table bytes); supervisor pids {others}"),
        h.Row("2 workers vs 1, single-key calls/s (2 client processes)", t2.rate, t1.rate, ratio, f">= {WORKERS_TARGET}x",
              h.verdict(ratio, WORKERS_TARGET), f"worker CPU s: {share}; p50 {t2.p50 * 1e3:.2f} vs {t1.p50 * 1e3:.2f} ms"),
        h.Row("  server CPU us/call, 2 workers vs 1", _us(t2.server_cpu_per_call), _us(t1.server_cpu_per_call),
              None if not t1.server_cpu_per_call else (t2.server_cpu_per_call or 0) / t1.server_cpu_per_call),
        h.Row("  client CPU us/call (both client processes)", t2.client_cpu / max(t2.calls, 1) * 1e6, t1.client_cpu / max(t1.calls, 1) * 1e6, None),
        h.Row("  cold start with --workers 2, s", results[2]["ready_seconds"], results[1]["ready_seconds"], None),
    ]


def _us(v: float | None) -> float | None:
    return None if v is None else v * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", type=Path, default=Path("tables"))
    p.add_argument("--table", default="glove")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    t0 = time.perf_counter()
    try:
        part = measure(args.tables, args.table, quick=args.quick)
    finally:
        h.shutdown_pool()
    part["seconds"] = time.perf_counter() - t0
    print("wrote", h.write_json(f"startup-{args.table}", {"machine": h.machine(), **part}))




if __name__ == "__main__":
    main()

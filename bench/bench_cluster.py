"""Past one host on loopback: a 3-replica cluster under load, and the capacity model vs one replica.

    flock /tmp/embserve-heavy.lock .venv/bin/python bench/bench_cluster.py --tables tables

1. Capacity: one replica (the Deployment's container command, tests/loopback.py) serving the GloVe
   table answers single-key Lookups from client processes; its calls/s next to the capacity model's
   prediction for one replica (bench/capacity.py, from the newest `make bench` JSON). Target: within
   ±25%. The server's own CPU (cores) is printed too: on a shared 2-core box the clients take cores
   the replica would have in a pod.
2. Cluster: three replicas on 127.0.0.2-4 (one port), three paced client processes with one
   ``ipv4:`` target (round_robin + health checks), one of them with monotonic_reads:
   - steady state: calls per replica from each replica's /metrics, spread vs an even share (±25%);
   - SIGKILL one replica and restart it: failed calls, seconds until it answers load again;
   - rolling update to table version 2, one replica at a time, each waiting for SERVING: failed
     calls, each replica's versions (1 -> 2, never back), the monotonic reader's versions.
   Target: 0 failed calls in all, spread within ±25%.

Nothing here asserts; PASS/FAIL is printed next to each target and the JSON goes to bench/results/.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import capacity
import harness as h

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import loopback as lb  # noqa: E402 - the loopback cluster of the tests, not a copy of it
from waiting import wait_until  # noqa: E402 - the tests' one wait helper

SPREAD = 0.25
CAPACITY_TOLERANCE = 0.25
RETURN_CALLS = 30


def measure_capacity(tables: Path, table: str, *, seconds: float, clients: int) -> dict[str, Any]:
    """One replica's single-key Lookup calls/s vs the capacity model's prediction."""
    from embserve_client.pb import embserve_pb2 as pb

    path = capacity.newest_bench()
    figures = capacity.figures_from_bench(path) if path else capacity.DEFAULT_FIGURES
    predicted = capacity.single_lookups_per_s(figures)
    key = h.newest_bundle(tables, table).joinpath("keys.txt").read_text(encoding="utf-8").split("\n", 1)[0]
    request = pb.LookupRequest(keys=[key]).SerializeToString()
    with tempfile.TemporaryDirectory(prefix="embserve-bench-cluster-") as tmp:
        root = h.isolate_table(tables, table, Path(tmp))
        # Plaintext, no tokens: the model's figures are per call without TLS (docs/capacity.md).
        [replica] = lb.Cluster(Path(tmp), hosts=(lb.HOSTS[0],), secure=False).replicas
        replica.start([], tables=root, table=table)
        try:
            replica.wait_ready(timeout=600)
            # The project's client at one call in flight per process (as `make bench` measured the
            # model's figure), then raw calls with 4 in flight per process (a server under many
            # concurrent callers: gRPC handles several calls per wake-up, each costs less CPU).
            cases = {
                "embserve Client, depth 1": [h.LoopSpec("lookup", replica.address, [[key]], seconds=seconds) for _ in range(clients)],
                "raw gRPC, depth 4": [h.LoopSpec("raw", replica.address, [request], seconds=seconds, depth=4) for _ in range(clients)],
            }
            timings = {name: h.run_clients(specs, [replica.process.pid])[0] for name, specs in cases.items()}  # type: ignore[union-attr]
        finally:
            replica.terminate()
    rows, out = [], {"figures": figures.__dict__, "predicted_calls_per_s": predicted, "cases": {}}
    for name, timing in timings.items():
        cpu_us = (timing.server_cpu_per_call or 0) * 1e6
        cores = cpu_us * timing.rate / 1e6
        ratio = timing.rate / predicted
        rows += [
            h.Row(f"{name}: single-key calls/s (measured vs model)", timing.rate, predicted, ratio,
                  f"within ±{CAPACITY_TOLERANCE:.0%}", "PASS" if abs(ratio - 1) <= CAPACITY_TOLERANCE else "FAIL"),
            h.Row(f"  {name}: server CPU us/call (now vs the model's figure)", cpu_us, figures.single_us, cpu_us / figures.single_us),
            h.Row(f"  {name}: server cores busy (one process)", cores, capacity.CORES_PER_WORKER, cores / capacity.CORES_PER_WORKER),
        ]
        out["cases"][name] = {"measured": timing.summary(), "server_cores": cores}
    h.print_table(f"Capacity model vs one replica ({clients} client processes; model figures from {figures.source})", rows,
                  ours="measured", baseline="model")
    out["rows"] = h.rows_json(rows)
    return out


def measure_cluster(*, rate: float, steady_calls: int, timeout: float) -> dict[str, Any]:
    """Spread, kill-and-restart and a rolling update on three loopback replicas under paced load."""
    out: dict[str, Any] = {"rate_per_client": rate, "clients": 3}
    with tempfile.TemporaryDirectory(prefix="embserve-bench-cluster-") as tmp, lb.cluster(Path(tmp) / "c", versions=(1,)) as c:
        # Steady state and the spread.
        with lb.Load(c.target, client=c.client, clients=3, rate=rate, max_seconds=timeout) as load:
            wait_until("every replica answers", lambda: min(c.lookups()) > 0, timeout=timeout)
            before = c.lookups()
            t0 = time.monotonic()
            wait_until(f"{steady_calls} calls", lambda: sum(c.lookups()) - sum(before) >= steady_calls, timeout=timeout)
            elapsed = time.monotonic() - t0
            after = c.lookups()
        share = [a - b for a, b in zip(after, before)]
        even = sum(share) / len(share)
        worst = max(abs(s - even) / even for s in share)
        out["steady"] = {"calls_per_replica": share, "worst_deviation": worst, "calls_per_s": sum(share) / elapsed,
                         "failed": sum(r.failed for r in load.reports), "calls": sum(r.calls for r in load.reports)}

        # SIGKILL one replica mid-load and restart it.
        victim = c.replicas[1]
        with lb.Load(c.target, client=c.client, clients=3, rate=rate, max_seconds=timeout * 2) as load:
            before = victim.lookups()
            wait_until("load on the victim", lambda: victim.lookups() >= before + RETURN_CALLS, timeout=timeout)
            t_kill = time.monotonic()
            victim.kill()
            victim.start([1])
            ready = victim.wait_ready()
            t_ready = time.monotonic()
            wait_until("load back on the restarted replica", lambda: victim.lookups() > 0, timeout=timeout, poll=0.02)
            back = time.monotonic() - t_ready
        out["kill"] = {"restart_to_serving_s": t_ready - t_kill, "wait_ready_s": ready, "serving_to_first_call_s": back,
                       "failed": sum(r.failed for r in load.reports), "calls": sum(r.calls for r in load.reports),
                       "errors": [e for r in load.reports for e in r.errors]}

        # Rolling update to version 2.
        t0 = time.monotonic()
        with lb.Load(c.target, client=c.client, clients=3, monotonic=1, rate=rate, max_seconds=timeout * 4) as load, \
                lb.VersionWatcher(c.replicas, max_seconds=timeout * 4) as watch:
            start = c.lookups()
            wait_until("load on every replica", lambda: min(a - b for a, b in zip(c.lookups(), start)) >= RETURN_CALLS, timeout=timeout)
            for replica in c.replicas:
                replica.terminate()
                replica.start([2])
                replica.wait_ready()
                wait_until(f"load on {replica.host}", lambda r=replica: r.lookups() >= RETURN_CALLS, timeout=timeout)
                wait_until(f"version 2 from {replica.host}", lambda r=replica: watch.seen[r.host][-1:] == [2], timeout=timeout)
        [reader] = load.monotonic_reports
        out["rolling"] = {"seconds": time.monotonic() - t0, "failed": sum(r.failed for r in load.reports),
                          "calls": sum(r.calls for r in load.reports), "replica_versions": watch.seen,
                          "monotonic_reader_versions": reader.versions, "monotonic_went_back": reader.went_back,
                          "plain_readers_went_back": sum(r.went_back for r in load.reports if not r.monotonic),
                          "errors": [e for r in load.reports for e in r.errors]}
    s, k, r = out["steady"], out["kill"], out["rolling"]
    never_back = all(v == [1, 2] for v in r["replica_versions"].values()) and r["monotonic_went_back"] == 0
    rows = [
        h.Row("steady: calls/s over 3 replicas", s["calls_per_s"], None),
        h.Row("steady: worst replica vs even share", f"{s['worst_deviation']:.1%}", "0%", None, f"<= {SPREAD:.0%}",
              "PASS" if s["worst_deviation"] <= SPREAD else "FAIL", f"calls per replica {[int(x) for x in s['calls_per_replica']]}"),
        h.Row("SIGKILL + restart: failed calls", k["failed"], 0, None, "0", "PASS" if k["failed"] == 0 else "FAIL", f"of {k['calls']}"),
        h.Row("  kill -> SERVING again, s", k["restart_to_serving_s"], None),
        h.Row("  SERVING -> load reaches it, s", k["serving_to_first_call_s"], None),
        h.Row("rolling update 1 -> 2: failed calls", r["failed"], 0, None, "0", "PASS" if r["failed"] == 0 else "FAIL", f"of {r['calls']}"),
        h.Row("  replicas 1 -> 2 never back; monotonic reader never back", str(never_back), "True", None, "True",
              "PASS" if never_back else "FAIL", f"reader saw {r['monotonic_reader_versions']}"),
        h.Row("  plain readers' answers that went back (why monotonic_reads exists)", r["plain_readers_went_back"], None),
        h.Row("  rollout seconds (3 replicas)", r["seconds"], None),
    ]
    h.print_table("Loopback cluster: 3 replicas, one ipv4: target, round_robin + health checks", rows, ours="measured", baseline="target")
    out["rows"] = h.rows_json(rows)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", type=Path, default=Path("tables"), help="tables root holding the GloVe bundle")
    p.add_argument("--table", default="glove")
    p.add_argument("--seconds", type=float, default=5.0, help="capacity measurement window")
    p.add_argument("--clients", type=int, default=2, help="client processes for the capacity measurement")
    p.add_argument("--rate", type=float, default=100.0, help="calls/s per client process in the cluster part")
    p.add_argument("--steady-calls", type=int, default=3000)
    p.add_argument("--timeout", type=float, default=120.0, help="upper bound of every wait")
    args = p.parse_args()
    info = h.machine()
    print(f"bench_cluster: python {info['python']}, grpcio {info['grpcio']}; {h.load_line()}", flush=True)
    results: dict[str, Any] = {"machine": info}
    try:
        results["capacity"] = measure_capacity(args.tables, args.table, seconds=args.seconds, clients=args.clients)
        results["cluster"] = measure_cluster(rate=args.rate, steady_calls=args.steady_calls, timeout=args.timeout)
    finally:
        h.shutdown_pool()
    print(f"\n{h.load_line()}")
    print("wrote", h.write_json("cluster", results))


if __name__ == "__main__":
    main()

"""Soak: a long run of mixed load with reloads and hostile calls; does the server leak or slow down?

    .venv/bin/python bench/bench_soak.py [--minutes 10] [--reload-every 30] [--rate 200] [--log-format json [--log-calls]]

The real ``embserve-server`` (subprocess) serves a 20k x 64 HNSW table. Two client processes send a
paced mix of valid calls (lookups of 16 keys, nearest neighbours, similarity of key pairs) with a
hostile call mixed in every ``--hostile-every`` calls (bad arguments, unknown keys and tables,
oversized keys and batches, undecodable bytes), each of which must be refused with its documented
error. Every ``--reload-every`` seconds a new version is published and loaded through the Reload RPC
(and an old one deleted). The server's RSS and open file descriptors are sampled every 2 s.

Printed (and written to bench/results/soak-*.json), against the targets of issue 15:
- RSS growth after the first minute: max RSS after minute 1 vs RSS at minute 1 (target <= 5%);
- open file descriptors after minute 1: max - min (target: flat, <= 2);
- p99 latency of valid calls in the last minute vs the second minute (target <= 1.5x);
- failed valid calls and wrongly answered hostile calls (target: none);
- with ``--log-format json``: every line the server wrote parses with ``json.loads`` (target: all),
  and with ``--log-calls`` one call line per call (refused and failed ones limited to ``--log-rate``).
A "minute" is 60 s; runs shorter than 3 minutes (``--minutes``) use thirds of the run instead.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import harness as h
import numpy as np
from embserve_trainer.export import export_table

ROWS, DIM, FACTORY, TABLE = 20_000, 64, "HNSW16,Flat", "soak"
RSS_TARGET, FD_TARGET, P99_TARGET = 0.05, 2, 1.5
SAMPLE_EVERY = 2.0  # seconds between RSS/fd samples


def publish(tables: Path, version: int) -> None:
    """Version v: the same keys, rows nudged by v (a retrained table), with its HNSW index."""
    rng = np.random.default_rng(version)
    base = np.random.default_rng(0).normal(size=(ROWS, DIM)).astype(np.float32)
    vectors = base + 0.05 * rng.normal(size=(ROWS, DIM)).astype(np.float32)
    export_table(tables, TABLE, vectors, [f"w{i}" for i in range(ROWS)], source={"kind": "soak", "seed": version},
                 factory=FACTORY, version=version)


def hostile(c: Any, n: int) -> str | None:
    """One hostile call; returns None when refused as documented, else what went wrong."""
    from embserve_client import FailedPreconditionError, InvalidArgumentError, UnknownKeyError, UnknownTableError
    from embserve_client.pb import embserve_pb2 as pb

    cases: list[tuple[str, Any, type[BaseException] | tuple[type[BaseException], ...]]] = [
        ("unknown key", lambda: c.get_vector(f"nope-{n}"), UnknownKeyError),
        ("unknown table", lambda: c.get_vector("w1", table=f"nope{n % 7}"), UnknownTableError),
        ("topn over the limit", lambda: c.most_similar("w1", topn=100_000), InvalidArgumentError),
        ("oversized key", lambda: c.get_vector("x" * 5000), InvalidArgumentError),
        ("too many keys", lambda: c.stub.Lookup(pb.LookupRequest(keys=[f"w{i % ROWS}" for i in range(70_000)]), timeout=30), Exception),
        ("undecodable bytes", lambda: c.channel.unary_unary("/embserve.v1.EmbeddingService/Lookup")(b"\x12\x02\xff\xfe", timeout=30), Exception),
        ("subword policy on a table without n-grams", lambda: c.lookup(["zzz"], missing="subword"), FailedPreconditionError),
    ]
    name, call, expected = cases[n % len(cases)]
    try:
        call()
    except expected as exc:
        code = getattr(exc, "code", None)
        code = code() if callable(code) else code
        if name in ("too many keys", "undecodable bytes") and getattr(code, "name", "") != "INVALID_ARGUMENT":
            return f"{name}: {code}"
        return None
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return f"{name}: {type(exc).__name__}: {exc}"
    return f"{name}: answered"


def client_main(target: str, seed: int, seconds: float, rate: float, hostile_every: int, out: Any) -> None:
    """One client process: paced calls for ``seconds``; sends back (t, latency) of the valid calls."""
    from embserve_client import Client

    rng = np.random.default_rng(seed)
    times, lats, failures, wrong = [], [], [], []
    with Client(target, timeout=30) as c:
        start = time.monotonic()
        n = 0
        while (now := time.monotonic() - start) < seconds:
            n += 1
            if n % hostile_every == 0:
                problem = hostile(c, n // hostile_every)
                if problem:
                    wrong.append(problem)
            else:
                ids = rng.integers(0, ROWS, size=16)
                t0 = time.perf_counter()
                try:
                    kind = n % 3
                    if kind == 0:
                        c.lookup([f"w{i}" for i in ids])
                    elif kind == 1:
                        c.most_similar(f"w{ids[0]}", topn=10)
                    else:
                        c.similarity(f"w{ids[0]}", f"w{ids[1]}")
                    times.append(now)
                    lats.append(time.perf_counter() - t0)
                except Exception as exc:  # noqa: BLE001 - a failed valid call is a finding
                    failures.append(f"{type(exc).__name__}: {exc}")
            delay = n / rate - (time.monotonic() - start)  # paced: the offered load does not depend on latency
            if delay > 0:
                time.sleep(delay)
    out.put({"times": times, "lats": lats, "failures": failures[:20], "failed": len(failures), "wrong": wrong[:20],
             "wrong_count": len(wrong), "calls": n})


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def check_log(path: Path) -> dict[str, Any]:
    """Parse every line of the server's log with ``json.loads``; count call lines by code."""
    lines = unparseable = calls = suppressed = 0
    codes: dict[str, int] = {}
    bad: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            lines += 1
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                unparseable += 1
                if len(bad) < 5:
                    bad.append(line[:200].rstrip())
                continue
            if "method" in obj:
                calls += 1
                codes[obj["code"]] = codes.get(obj["code"], 0) + 1
                suppressed += int(obj.get("suppressed", 0))
    return {"lines": lines, "bytes": path.stat().st_size, "unparseable": unparseable, "call_lines": calls, "codes": codes,
            "suppressed": suppressed, "bad": bad}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--reload-every", type=float, default=30.0, help="seconds between published versions")
    ap.add_argument("--rate", type=float, default=200.0, help="calls/s offered, over both client processes")
    ap.add_argument("--hostile-every", type=int, default=10, help="one hostile call in this many")
    ap.add_argument("--log-format", choices=("text", "json"), default="text", help="the server's --log-format")
    ap.add_argument("--log-calls", action="store_true", help="the server logs every call (--log-calls, at INFO)")
    args = ap.parse_args()
    extra = ["--log-format", args.log_format] + (["--log-calls", "--log-level", "INFO"] if args.log_calls else [])
    seconds = args.minutes * 60
    minute = 60.0 if seconds >= 180 else seconds / 3
    print(h.load_line(), "(start)")
    with h.tmpdir("embserve-soak-") as tmp:
        tables = tmp / "tables"
        publish(tables, 1)
        with h.EmbserveProcess(tables, extra=extra) as server:
            server.wait_serving()
            pid = server.proc.pid
            samples: list[tuple[float, int, int]] = []  # (t, RSS KiB, fds)
            done = threading.Event()
            t_start = time.monotonic()

            def sample() -> None:
                while not done.is_set():
                    samples.append((time.monotonic() - t_start, h.status_kib(pid, "VmRSS"), fd_count(pid)))
                    done.wait(SAMPLE_EVERY)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            ctx = mp.get_context("spawn")
            out = ctx.Queue()
            procs = [ctx.Process(target=client_main, args=(server.target, seed, seconds, args.rate / 2, args.hostile_every, out))
                     for seed in range(2)]
            for p in procs:
                p.start()
            from embserve_client import Client

            version, reloads = 1, []
            with Client(server.target, timeout=120) as admin:
                while (elapsed := time.monotonic() - t_start) < seconds:
                    time.sleep(max(0.0, min(args.reload_every * version - elapsed, seconds - elapsed)))
                    if time.monotonic() - t_start >= seconds:
                        break
                    version += 1
                    publish(tables, version)
                    reloads.append([o[1] for o in admin.reload()])
                    if version > 2:  # delete the version before last: disk stays bounded, mmaps must let go
                        shutil.rmtree(tables / TABLE / str(version - 2))
                served = admin.table_info(TABLE).version
            results = [out.get(timeout=seconds + 120) for _ in procs]
            for p in procs:
                p.join(60)
            done.set()
            sampler.join(10)
            server.proc.send_signal(signal.SIGTERM)  # drain first: the last lines are checked too
            server.proc.wait(60)
            log_report = check_log(Path(server.log.name)) if args.log_format == "json" else None
    times = np.concatenate([r["times"] for r in results])
    lats = np.concatenate([r["lats"] for r in results])

    def p99(lo: float, hi: float) -> float:
        window = lats[(times >= lo) & (times < hi)]
        return float(np.percentile(window, 99)) if len(window) else float("nan")

    after = [s for s in samples if s[0] >= minute]
    at_minute = after[0] if after else samples[-1]
    rss_max = max(s[1] for s in after) if after else at_minute[1]
    growth = (rss_max - at_minute[1]) / at_minute[1]
    # A leak keeps growing; allocator warm-up levels off: the second half of the run tells them apart.
    second_half = [s for s in samples if s[0] >= seconds / 2] or samples[-1:]
    half_growth = (max(s[1] for s in second_half) - second_half[0][1]) / second_half[0][1]
    fds = [s[2] for s in after] or [at_minute[2]]
    p99_second, p99_last = p99(minute, 2 * minute), p99(seconds - minute, seconds)
    ratio = p99_last / p99_second
    failed = sum(r["failed"] for r in results)
    wrong = sum(r["wrong_count"] for r in results)
    calls = sum(r["calls"] for r in results)
    print(f"soak: {args.minutes:g} min, {calls} calls ({len(lats)} valid, {calls - len(lats) - failed} hostile), "
          f"{len(reloads)} reloads (served v{served}), windows of {minute:g} s")
    print(f"  RSS after the first window {at_minute[1] / 1024:.1f} MiB, max after {rss_max / 1024:.1f} MiB, final {samples[-1][1] / 1024:.1f} MiB: "
          f"growth {100 * growth:+.2f}% (target <= {100 * RSS_TARGET:.0f}%) {h.verdict(growth, RSS_TARGET, higher_is_better=False)}")
    print(f"  RSS over the second half of the run: {second_half[0][1] / 1024:.1f} -> max {max(s[1] for s in second_half) / 1024:.1f} MiB, "
          f"growth {100 * half_growth:+.2f}% (information: a leak grows here too)")
    print(f"  open fds: start {samples[0][2]}, after the first window {at_minute[2]}, min {min(fds)}, max {max(fds)}, final {samples[-1][2]}: "
          f"spread {max(fds) - min(fds)} (target <= {FD_TARGET}) {h.verdict(max(fds) - min(fds), FD_TARGET, higher_is_better=False)}")
    print(f"  p99 valid calls: second window {1e3 * p99_second:.2f} ms, last window {1e3 * p99_last:.2f} ms: "
          f"{ratio:.2f}x (target <= {P99_TARGET}x) {h.verdict(ratio, P99_TARGET, higher_is_better=False)}")
    print(f"  failed valid calls {failed}, hostile calls answered wrongly {wrong}, reload outcomes {sorted({o for r in reloads for o in r})}")
    for r in results:
        for line in r["failures"][:5] + r["wrong"][:5]:
            print("   ", line)
    if log_report is not None:
        print(f"  json log: {log_report['lines']} lines, {log_report['bytes'] / 2**20:.1f} MiB, unparseable {log_report['unparseable']} "
              f"(target 0) {h.verdict(log_report['unparseable'], 0, higher_is_better=False)}; call lines {log_report['call_lines']} "
              f"by code {log_report['codes']}, suppressed refusal lines {log_report['suppressed']}")
        for line in log_report["bad"]:
            print("   ", line)
    print(h.load_line(), "(end)")
    path = h.write_json("soak", {
        "log_format": args.log_format, "log_calls": args.log_calls, "json_log": log_report,
        "machine": h.machine(), "minutes": args.minutes, "window_seconds": minute, "calls": calls, "valid_calls": len(lats),
        "reloads": len(reloads), "rss_kib": {"minute_1": at_minute[1], "max_after": rss_max, "final": samples[-1][1]},
        "rss_growth": growth, "rss_growth_second_half": half_growth, "fds": {"start": samples[0][2], "minute_1": at_minute[2], "min": min(fds), "max": max(fds), "final": samples[-1][2]},
        "p99_seconds": {"second_minute": p99_second, "last_minute": p99_last}, "p99_ratio": ratio,
        "failed": failed, "hostile_wrong": wrong, "samples": samples,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

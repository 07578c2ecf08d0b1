"""Where a Lookup's server CPU goes: CPU per thread from /proc, then py-spy on the running server.

    .venv/bin/python bench/profile_lookup.py --tables tables [--table glove] [--keys 1024] [--seconds 8]
        [--keys-form packed|repeated] [--varied] [--flamegraph out.svg] [--src DIR]

Runs the real ``embserve-server`` (and a bare grpcio server answering the same bytes) under a
Client.lookup loop from a separate process, and prints:

1. server CPU per call split by thread (utime+stime of each /proc/PID/task/TID between two reads,
   divided by the calls made in between), ours beside the bare server: grpc's C threads included,
   which a Python profiler does not see;
2. a py-spy profile of our server (``record --native --threads --format raw``; idle stacks left
   out): per thread its share of the samples, and the frames where the samples are (self) and the
   frames they pass through (inclusive), each as a % of all samples.

Needs py-spy (requirements-dev.txt) and permission to ptrace the server (root, or
``kernel.yama.ptrace_scope=0``). Run it under the heavy lock like every benchmark.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_lookup
import harness as h
from embserve_client.pb import embserve_pb2 as pb

# Collapse the thread pool's numbered names and hex ids: threads doing the same job sum together.
_THREAD_NUMBER = re.compile(r"[-_ ]?\d+$")


def thread_cpu(pid: int) -> dict[int, tuple[str, float, float]]:
    """tid -> (thread name, user CPU seconds, system CPU seconds) so far, for every thread of ``pid``."""
    out = {}
    tck = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (name, int(fields[11]) / tck, int(fields[12]) / tck)
    return out


def per_thread(pid: int, spec: h.LoopSpec, names: dict[int, str] | None = None) -> tuple[dict[str, tuple[float, float]], int]:
    """Server CPU µs per call (user, system) by thread name (threads of one name summed) and the calls made.

    ``names``: tid -> Python thread name (from py-spy) where /proc's name is the process's own.
    """
    before = thread_cpu(pid)
    _, results = h.run_clients([spec])
    after = thread_cpu(pid)
    calls = sum(r["calls"] + r["warmup_calls"] for r in results)
    by_name: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for tid, (name, user, system) in after.items():
        _, user0, system0 = before.get(tid, (name, 0.0, 0.0))
        name = (names or {}).get(tid, name)
        acc = by_name[_THREAD_NUMBER.sub("", name) or name]
        acc[0] += user - user0
        acc[1] += system - system0
    return {k: (u / calls * 1e6, s / calls * 1e6) for k, (u, s) in by_name.items()}, calls


def print_threads(ours: dict[str, tuple[float, float]], bare: dict[str, tuple[float, float]]) -> None:
    print(f"\n== server CPU per call by thread, us user+system (threads of one name summed)   ({h.load_line()})")
    print(f"{'thread':<24}{'embserve':>18}{'bare':>18}")

    def cell(v: tuple[float, float]) -> str:
        return f"{sum(v):.0f} ({v[0]:.0f}+{v[1]:.0f})"

    zero = (0.0, 0.0)
    for name in sorted(set(ours) | set(bare), key=lambda n: -(sum(ours.get(n, zero)) + sum(bare.get(n, zero)))):
        o, b = ours.get(name, zero), bare.get(name, zero)
        if sum(o) >= 1 or sum(b) >= 1:
            print(f"{name:<24}{cell(o):>18}{cell(b):>18}")
    total = lambda d: (sum(v[0] for v in d.values()), sum(v[1] for v in d.values()))  # noqa: E731
    print(f"{'all':<24}{cell(total(ours)):>18}{cell(total(bare)):>18}")


def pyspy(pid: int, seconds: float, rate: int, out: Path) -> None:
    exe = shutil.which("py-spy") or str(h.BIN / "py-spy")
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate),
           "--native", "--threads", "--format", "raw", "--output", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# A sample whose stack holds one of these waits for work, a lock or the GIL: not CPU.
_WAITS = ("_queue_SimpleQueue_get", "PyThread_acquire_lock_timed", "epoll_wait", "take_gil", "pthread_cond_wait", "sem_wait", "sem_timedwait")
_THREAD = re.compile(r"thread \((\d+)\): (.*)")


def summarize(raw: Path, top: int) -> dict[str, Any]:
    """Per-thread sample shares, top self and inclusive frames of the busy samples in py-spy's raw output.

    py-spy's own idle filter does not see a thread blocked in native code (a queue, epoll), so
    samples inside the waits of ``_WAITS`` are counted apart, as idle.
    """
    threads: collections.Counter[str] = collections.Counter()
    self_: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    names: dict[int, str] = {}
    total = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        head = next((i for i, f in enumerate(frames) if _THREAD.match(f)), 0)
        m = _THREAD.match(frames[head])
        if m:
            names[int(m.group(1))] = m.group(2)
        total += n
        if any(w in f for f in frames for w in _WAITS):
            idle += n
            continue
        threads[m.group(2) if m else frames[head]] += n
        body = [_short(f) for f in frames[head + 1 :]] or ["(no frame)"]
        self_[body[-1]] += n
        for f in set(body):
            incl[f] += n
    busy = total - idle

    def pct(c: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / busy, 1)) for k, v in c.most_common(top)] if busy else []

    return {"samples": total, "idle_samples": idle, "threads": pct(threads), "self": pct(self_), "inclusive": pct(incl), "names": names}


def _short(frame: str) -> str:
    """``func (path/to/module.py:123)`` -> ``func (module.py:123)``."""
    m = re.match(r"(.*) \((.*?)(:\d+)?\)$", frame)
    if not m:
        return frame
    return f"{m.group(1)} ({Path(m.group(2)).name}{m.group(3) or ''})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", type=Path, default=Path("tables"))
    p.add_argument("--table", default="glove")
    p.add_argument("--keys", type=int, default=bench_lookup.BATCH_KEYS, help="keys per call (1 = the single key)")
    p.add_argument("--varied", action="store_true", help=f"cycle {bench_lookup.VARIED_BATCHES} different batches")
    p.add_argument("--keys-form", choices=("packed", "repeated"), default="packed", help="how the client sends keys")
    add_profile_options(p)
    args = p.parse_args()

    bundle = h.newest_bundle(args.tables, args.table)
    single, batch = bench_lookup.pick_keys(bundle)
    batches = [[single]] if args.keys == 1 else [batch[: args.keys]]
    if args.varied and args.keys > 1:
        batches = [bench_lookup.pick_keys(bundle, seed=1 + i)[1][: args.keys] for i in range(bench_lookup.VARIED_BATCHES)]
    options = {"packed_keys": args.keys_form == "packed"}

    def spec(target: str, seconds: float) -> h.LoopSpec:
        return h.LoopSpec("lookup", target, batches, seconds=seconds, client_options=options)

    request = pb.LookupRequest(keys=batches[0]).SerializeToString()  # for the bytes the bare server answers
    result = profile_against_bare(args, spec, "Lookup", h.LOOKUP, request)
    report(result, f"{len(batches[0])} keys a call, {len(batches)} batch(es), {args.keys_form} keys", f"profile-lookup-{args.keys}")


def add_profile_options(p: argparse.ArgumentParser) -> None:
    """The options :func:`profile_against_bare` reads (besides --tables and --table)."""
    p.add_argument("--seconds", type=float, default=8.0, help="each phase: the profile, then per-thread CPU of ours and of the bare server")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--flamegraph", type=Path, help="also write py-spy's flamegraph SVG here")
    p.add_argument("--raw", type=Path, help="keep py-spy's raw (collapsed) stacks in this file")
    p.add_argument("--src", type=Path, help="serve the code of this checkout (e.g. main before a change) instead of the installed one")


def profile_against_bare(args: argparse.Namespace, spec: Callable[[str, float], h.LoopSpec], name: str, method: str,
                         request: bytes) -> dict[str, Any]:
    """py-spy on the real server under ``spec``'s loop, then per-thread CPU of it and of a bare server.

    The bare server answers the bytes the real one answered to ``request`` (method ``name``, full
    path ``method``). ``args``: tables, table, src, seconds, rate, top, raw, flamegraph.
    """
    try:
        with h.tmpdir("embserve-profile-") as tmp:
            root = h.isolate_table(args.tables, args.table, tmp)
            with h.EmbserveProcess(root, src=args.src) as ours:
                ours.wait_serving(timeout=600)
                # The profile first: its thread names label the per-thread CPU read after it.
                raw = args.raw or tmp / "profile.txt"
                future = h.pool().submit(h.client_loop, spec(ours.target, args.seconds + 6))
                time.sleep(2.5)  # the client process's spawn and warm-up second (a benchmark, not a test)
                pyspy(ours.proc.pid, args.seconds, args.rate, raw)
                if args.flamegraph:
                    pyspy_svg(ours.proc.pid, args.flamegraph)
                future.result()
                s = summarize(raw, args.top)
                resp = h.raw_call(ours.target, method, request)
                with h.BareServer({name: resp}) as bare:
                    ours_t, calls = per_thread(ours.proc.pid, spec(ours.target, args.seconds), s["names"])
                    bare_t, bare_calls = per_thread(bare.pid, spec(bare.target, args.seconds))
    finally:
        h.shutdown_pool()
    return {"ours": ours_t, "bare": bare_t, "calls": calls, "bare_calls": bare_calls, "summary": s, "response_bytes": len(resp)}


def report(result: dict[str, Any], what: str, json_name: str) -> None:
    """Print the per-thread table and the py-spy shares of :func:`profile_against_bare`; write the JSON."""
    s = result["summary"]
    print_threads(result["ours"], result["bare"])
    print(f"calls: embserve {result['calls']}, bare {result['bare_calls']}; {what}, response {result['response_bytes']} bytes")
    print(f"\n== py-spy --native --threads: {s['samples']} samples, {s['idle_samples']} waiting (queue, epoll, locks, GIL); shares of the busy ones")
    for title in ("threads", "self", "inclusive"):
        print(f"-- {title} (% of busy samples)")
        for name, share in s[title]:
            print(f"{share:6.1f}  {name}")
    print("wrote", h.write_json(json_name, {"machine": h.machine(), "threads_us_per_call": {"ours": result["ours"], "bare": result["bare"]}, **s}))


def pyspy_svg(pid: int, out: Path) -> None:
    exe = shutil.which("py-spy") or str(h.BIN / "py-spy")
    subprocess.run([exe, "record", "--pid", str(pid), "--duration", "3", "--native", "--output", str(out)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()

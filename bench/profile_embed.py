"""Where one-text ``Embed``'s server CPU goes: CPU per thread from /proc, then py-spy on the running server.

    flock /tmp/embserve-heavy.lock .venv/bin/python bench/profile_embed.py --tables tables [--table distilled]
        [--texts 1] [--seconds 8] [--flamegraph out.svg] [--src DIR]

The Embed counterpart of profile_lookup.py (same readings, same output): the real
``embserve-server`` under a loop of identity-serialized ``Embed`` calls of ``--texts`` short texts
(bench_embed.py's sentences) from a separate process, then the same loop against a bare grpcio
server answering the same bytes, so the per-thread table shows what embserve adds, thread by thread.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import bench_embed
import harness as h
import profile_lookup as pl
from embserve_client.pb import embserve_pb2 as pb


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", type=Path, default=Path("tables"))
    p.add_argument("--table", default="distilled")
    p.add_argument("--texts", type=int, default=1, help="texts per call")
    p.add_argument("--seconds", type=float, default=8.0, help="each phase: the profile, then per-thread CPU of ours and of the bare server")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--flamegraph", type=Path, help="also write py-spy's flamegraph SVG here")
    p.add_argument("--raw", type=Path, help="keep py-spy's raw (collapsed) stacks in this file")
    p.add_argument("--src", type=Path, help="serve the code of this checkout instead of the installed one")
    args = p.parse_args()
    request = pb.EmbedRequest(table=args.table, texts=bench_embed.short_texts(args.texts)).SerializeToString()

    def spec(target: str, seconds: float) -> h.LoopSpec:
        return h.LoopSpec("raw", target, [request], seconds=seconds, method=bench_embed.EMBED)

    try:
        with h.tmpdir("embserve-profile-") as tmp:
            root = h.isolate_table(args.tables, args.table, tmp)
            with h.EmbserveProcess(root, src=args.src) as ours:
                ours.wait_serving(timeout=600)
                raw = args.raw or tmp / "profile.txt"
                future = h.pool().submit(h.client_loop, spec(ours.target, args.seconds + 6))
                time.sleep(2.5)  # the client process's spawn and warm-up second (a benchmark, not a test)
                pl.pyspy(ours.proc.pid, args.seconds, args.rate, raw)
                if args.flamegraph:
                    pl.pyspy_svg(ours.proc.pid, args.flamegraph)
                future.result()
                s = pl.summarize(raw, args.top)
                resp = h.raw_call(ours.target, bench_embed.EMBED, request)
                with h.BareServer({"Embed": resp}) as bare:
                    ours_t, calls = pl.per_thread(ours.proc.pid, spec(ours.target, args.seconds), s["names"])
                    bare_t, bare_calls = pl.per_thread(bare.pid, spec(bare.target, args.seconds))
    finally:
        h.shutdown_pool()
    pl.print_threads(ours_t, bare_t)
    print(f"calls: embserve {calls}, bare {bare_calls}; {args.texts} text(s) a call, response {len(resp)} bytes")
    print(f"\n== py-spy --native --threads: {s['samples']} samples, {s['idle_samples']} waiting (queue, epoll, locks, GIL); shares of the busy ones")
    for title in ("threads", "self", "inclusive"):
        print(f"-- {title} (% of busy samples)")
        for name, share in s[title]:
            print(f"{share:6.1f}  {name}")
    print("wrote", h.write_json(f"profile-embed-{args.texts}", {"machine": h.machine(), "threads_us_per_call": {"ours": ours_t, "bare": bare_t}, **s}))


if __name__ == "__main__":
    main()

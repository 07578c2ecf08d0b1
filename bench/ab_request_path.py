"""Single-key Lookup: what each part of the request path costs the running server, variant by variant.

    flock /tmp/embserve-heavy.lock .venv/bin/python bench/ab_request_path.py --tables TABLES [--table glove]
        [--variants served,guard,guard+metrics,guard+log,none,cached] [--processes 2] [--rounds 6] [--seconds 1.5]

Each variant is the real server (``app.run_worker``, the same options as ``embserve-server``) with
parts of the request path taken out before it starts:

- ``served``: as it serves (call log, metrics, call guard around every handler);
- ``guard``, ``guard+metrics``, ``guard+log``: only the named wrappers;
- ``none``: no wrapper at all;
- ``cached``: no wrapper, and Lookup answers the response of its first call (no lookup, no pack):
  grpc with protobuf parsing and nothing of ours.

``--processes`` servers of each variant run side by side with a bare grpcio server answering the
same bytes; a raw-stub client process (harness.run_clients: one key, repeated-string form) calls
each in turn, the order reversed every other round, and the server's CPU (utime+stime of all its
threads) over the calls is the figure. Two processes of the same code differ by about ±10 % on a 2-core VM (memory layout, the
neighbours), so each variant's lowest and median over all its processes and rounds are printed,
with the median's ratio to the bare server's. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path
from typing import Any

import harness as h
from embserve_client.pb import embserve_pb2 as pb

WRAPPERS = {"served": None, "guard": {"CallGuard"}, "guard+metrics": {"CallGuard", "MetricsWrapper"},
            "guard+log": {"CallGuard", "CallLog"}, "none": set(), "cached": set()}


def serve(variant: str, argv: list[str]) -> None:
    """Run one server of ``variant`` (this script re-run in a child process)."""
    from embserve_server import app, cli, service

    keep = WRAPPERS[variant]
    if keep is not None:
        add = app.add_servicer

        def add_kept(server: Any, descriptor: Any, servicer: Any, wrappers: Any) -> None:
            add(server, descriptor, servicer, [w for w in wrappers if type(w).__name__ in keep])

        app.add_servicer = add_kept  # type: ignore[assignment]
    if variant == "cached":
        lookup, first = service.EmbeddingService.Lookup, {}

        def cached(self: Any, request: Any, context: Any) -> Any:
            if "answer" not in first:
                first["answer"] = lookup(self, request, context)
            return first["answer"]

        service.EmbeddingService.Lookup = cached  # type: ignore[method-assign]
    sys.exit(cli.main(argv))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", type=Path, default=Path("tables"))
    p.add_argument("--table", default="glove")
    p.add_argument("--variants", default="served,guard,none,cached", help=f"comma list of {', '.join(WRAPPERS)}")
    p.add_argument("--processes", type=int, default=2, help="servers of each variant")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--seconds", type=float, default=1.5, help="each server's window a round")
    args = p.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in WRAPPERS]
    if unknown:
        p.error(f"--variants: {unknown} are not among {list(WRAPPERS)}")
    key = "cat"
    request = pb.LookupRequest(table=args.table, keys=[key]).SerializeToString()
    with h.tmpdir("embserve-ab-") as tmp, contextlib.ExitStack() as stack:
        root = h.isolate_table(args.tables, args.table, tmp)
        servers = []
        for variant in variants:
            for _ in range(args.processes):
                server = stack.enter_context(h.EmbserveProcess(root, program=[sys.executable, __file__, "serve", variant]))
                server.wait_serving(timeout=300)
                servers.append((variant, server.target, server.proc.pid))
        answer = h.raw_call(servers[0][1], h.LOOKUP, request)
        bare = stack.enter_context(h.BareServer({"Lookup": answer}))
        sides = [*servers, ("bare grpcio", bare.target, bare.pid)]
        per_call: dict[str, list[float]] = {}
        for r in range(args.rounds):
            for name, target, pid in sides if r % 2 == 0 else sides[::-1]:
                t, _ = h.run_clients([h.LoopSpec("raw", target, [request], seconds=args.seconds, warmup_seconds=0.3)], [pid])
                per_call.setdefault(name, []).append((t.server_cpu_per_call or 0) * 1e6)
        h.shutdown_pool()
    print(f"single-key Lookup ({key!r} on {args.table}), server CPU µs a call; {args.processes} process(es) a variant, "
          f"{args.rounds} rounds of {args.seconds} s; {h.load_line()}")
    base = statistics.median(per_call["bare grpcio"])
    for name in ["bare grpcio", *variants]:
        values = per_call[name]
        median = statistics.median(values)
        print(f"  {name:14s} lowest {min(values):6.0f}  median {median:6.0f}  median / bare {median / base:5.2f}x")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3:])
    else:
        main()

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
    pl.add_profile_options(p)
    args = p.parse_args()
    request = pb.EmbedRequest(table=args.table, texts=bench_embed.short_texts(args.texts)).SerializeToString()

    def spec(target: str, seconds: float) -> h.LoopSpec:
        return h.LoopSpec("raw", target, [request], seconds=seconds, method=bench_embed.EMBED)

    result = pl.profile_against_bare(args, spec, "Embed", bench_embed.EMBED, request)
    pl.report(result, f"{args.texts} text(s) a call", f"profile-embed-{args.texts}")


if __name__ == "__main__":
    main()

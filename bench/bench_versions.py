"""Memory of keeping a training run's snapshots loaded: ``--keep-versions 20`` vs one version.

    .venv/bin/python bench/bench_versions.py [--versions 20] [--rows 38776] [--dim 128]

Writes ``--versions`` bundles of one table with the same keys and different rows (what
``embserve-train train --model nexttoken --snapshot-every`` publishes; GCIDE's vocabulary size by
default, Flat index), then starts the real ``embserve-server`` twice on them, with
``--keep-versions 1`` and ``--keep-versions N``, asks every loaded version one question, and reads
/proc/PID/status: RssAnon (the process's own memory: key index, Python objects) and RssFile (mapped
bundle files: page cache, shared with other processes and reclaimable). Target (issue 12): N versions
stay under 1.5x the memory of one version; versions of one vocabulary share one key index.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import harness as h
import numpy as np
from embserve_client import Client
from embserve_trainer.export import export_table

TARGET = 1.5


def status_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def measure(tables: Path, keep: int, versions: int, keys: list[str]) -> dict[str, int]:
    with h.EmbserveProcess(tables, extra=["--keep-versions", str(keep)]) as server:
        server.wait_serving(timeout=600)
        with Client(f"127.0.0.1:{server.port}") as c:
            for v in range(max(1, versions - keep + 1), versions + 1):
                assert c.most_similar(keys[7], topn=5, version=v), v
                assert c.lookup(keys[:512], version=v).version == v
        return status_kib(server.proc.pid)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--versions", type=int, default=20)
    ap.add_argument("--rows", type=int, default=38_776)
    ap.add_argument("--dim", type=int, default=128)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    keys = [f"word{i}" for i in range(args.rows)]
    with h.tmpdir("embserve-bench-versions-") as tmp:
        for v in range(1, args.versions + 1):
            rows = rng.normal(size=(args.rows, args.dim)).astype(np.float32)
            export_table(tmp / "tables", "lm", rows, keys, source={"kind": "bench"}, version=v, factory="Flat")
        one = measure(tmp / "tables", 1, args.versions, keys)
        many = measure(tmp / "tables", args.versions, args.versions, keys)
        files = sum(p.stat().st_size for p in (tmp / "tables" / "lm" / "1").iterdir())
    rows = [
        h.Row(f"RssAnon KiB, keep {args.versions} vs keep 1", many["RssAnon"], one["RssAnon"], many["RssAnon"] / one["RssAnon"],
              f"<= {TARGET}x", h.verdict(many["RssAnon"] / one["RssAnon"], TARGET, higher_is_better=False), "the process's own memory"),
        h.Row(f"RssFile KiB, keep {args.versions} vs keep 1", many["RssFile"], one["RssFile"], many["RssFile"] / one["RssFile"],
              "", "", "mapped bundle files (page cache, shared)"),
        h.Row(f"VmRSS KiB, keep {args.versions} vs keep 1", many["VmRSS"], one["VmRSS"], many["VmRSS"] / one["VmRSS"]),
    ]
    h.print_table(f"{args.versions} versions of a {args.rows} x {args.dim} table (same keys) vs one", rows, baseline="keep 1")
    print(f"one version's files: {files / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()

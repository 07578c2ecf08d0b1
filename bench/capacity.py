"""The capacity model (docs/capacity.md): memory per replica, CPU per call, replicas for a load.

    .venv/bin/python bench/capacity.py                              # newest bench/results/serving-*.json
    .venv/bin/python bench/capacity.py --bench bench/results/serving-20261129-151432.json \\
        --rows 2000000 --dim 300 --lookups 50000 --nn 5000        # the worked example

Inputs are the figures `make bench` (bench/bench_serving.py) writes: server CPU µs per call of a
single-key Lookup, a 1024-key Lookup and an NN query, the in-process FAISS time of that NN query and
the table they were measured on. Without a JSON the figures of the 2026-11-29 run below are used.
Memory needs no bench: it is the bundle's bytes (vectors, index, keys.txt + keys.idx) plus the
runtime, all resident (deploy/k8s/deployment.yaml's resources come from :func:`resources` for the
default table; tests/browser_deploy/test_k8s.py checks that).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embserve_format import keyfile

RESULTS = Path(__file__).resolve().parent / "results"
MiB = 1 << 20
# One replica = one embserve-server process: Python serves about one core per process (the GIL);
# --workers N makes N processes sharing the tables' pages (replicas of N cores).
CORES_PER_WORKER = 1.0
TARGET_UTILISATION = 0.75  # plan replicas to run at 75% of their cores: headroom for bursts
SPARE_REPLICAS = 1  # N+1: a rollout (maxSurge/maxUnavailable) or a lost pod costs no capacity
# Memory of the running server beyond its table, measured on 2026-11-29 (smaps_rollup of an
# embserve-server serving a 10-row table): RSS 95 MB, of which 35.5 MB anonymous and ~60 MB shared
# libraries (Python, grpc, FAISS, numpy).
RUNTIME_BYTES = 95 * MiB
RUNTIME_ANON_BYTES = int(35.5 * MiB)
# Keys are mapped files, not Python objects: keys.txt (the key text and a newline) and keys.idx (its
# offsets, hashes and rows: embserve_format.keyfile.file_bytes). GloVe 6B's keys average 7.39 UTF-8
# bytes (3,356,474 bytes of keys.txt for 400,000 keys); with keys.idx 20.4 bytes a key in all.
GLOVE_KEY_TEXT_BYTES = 3_356_474 / 400_000  # mean bytes of a keys.txt line, newline included
# An HNSW graph costs about 8.5 * M bytes per row (2M int32 links on level 0, upper levels, offsets):
# GloVe's HNSW32 index.faiss is 188.85 MB = 400k x 50 x 4 storage + 400k x 272.
HNSW_LINK_BYTES_PER_M = 8.5


@dataclass(frozen=True)
class CpuFigures:
    """Server CPU µs per call measured on one table (the bench's), and that table."""

    single_us: float  # single-key Lookup
    batch_us: float  # batch_keys-key Lookup
    nn_us: float  # one NN query (HNSW, the bench's efSearch)
    faiss_us: float  # the FAISS search alone of that NN query, in-process
    rows: int
    dim: int
    batch_keys: int = 1024
    source: str = "defaults (make bench, 2026-11-29, load average 3.25 on 2 cores)"


# bench/results/serving-20261129-151432.json (GloVe 400k x 50, HNSW32 efSearch 96).
DEFAULT_FIGURES = CpuFigures(single_us=297.7, batch_us=535.6, nn_us=501.8, faiss_us=172.0, rows=400_000, dim=50)


@dataclass(frozen=True)
class Table:
    rows: int
    dim: int
    factory: str = "HNSW32,Flat"
    key_text_bytes: float = GLOVE_KEY_TEXT_BYTES  # mean bytes of a keys.txt line


def index_bytes(table: Table) -> int:
    """Bytes of index.faiss for the factories the trainer builds (Flat, HNSW<M>[,Flat]).

    Raises:
        ValueError: another factory (measure its index.faiss instead).
    """
    storage = table.rows * table.dim * 4
    if table.factory == "Flat":
        return storage
    match = re.fullmatch(r"HNSW(\d+)(?:,Flat)?", table.factory)
    if match is None:
        raise ValueError(f"factory {table.factory!r}: the model knows Flat and HNSW<M>[,Flat]; use the size of its index.faiss")
    return storage + int(table.rows * HNSW_LINK_BYTES_PER_M * int(match.group(1)))


def key_bytes(table: Table) -> int:
    """Mapped bytes of the keys: keys.txt + the keys.idx the trainer writes for it."""
    text = int(round(table.rows * table.key_text_bytes))
    return text + keyfile.file_bytes(table.rows, text)


def table_bytes(table: Table) -> int:
    """Resident bytes of one table version: vectors.npy + index.faiss + keys.txt + keys.idx (all mapped)."""
    return table.rows * table.dim * 4 + index_bytes(table) + key_bytes(table)


def memory_bytes(table: Table, *, workers: int = 1, worker_private_bytes: int = 16 * MiB) -> int:
    """Memory of one replica serving ``table``: runtime + table, plus each extra worker's private pages."""
    return RUNTIME_BYTES + table_bytes(table) + (workers - 1) * worker_private_bytes


def _ceil_mib(n: float, step: int = 64) -> int:
    return int(math.ceil(n / MiB / step) * step)


def resources(table: Table, *, workers: int = 1) -> dict[str, dict[str, str]]:
    """Kubernetes resources of a replica: requests = steady state; limits leave room for a second
    version loaded while the first serves (Reload or --poll-interval) and for gRPC/FAISS threads."""
    request = memory_bytes(table, workers=workers)
    limit = request + table_bytes(table)
    cores = workers * CORES_PER_WORKER
    return {
        "requests": {"cpu": f"{cores:g}", "memory": f"{_ceil_mib(request)}Mi"},
        "limits": {"cpu": f"{2 * cores:g}", "memory": f"{_ceil_mib(limit)}Mi"},
    }


def hpa_in_flight_target(*, workers: int = 1) -> str:
    """Average in-flight RPCs per pod to scale at: a CPU-bound handler is in flight while it runs,
    so (Little's law) in-flight ≈ busy cores; scale when it passes the target utilisation."""
    return f"{round(TARGET_UTILISATION * workers * CORES_PER_WORKER * 1000)}m"


def lookup_us(figures: CpuFigures, keys: int, dim: int) -> float:
    """Server CPU of a ``keys``-key Lookup on ``dim``-d vectors: fixed cost + cost per byte returned."""
    per_byte = (figures.batch_us - figures.single_us) / (figures.batch_keys * figures.dim * 4)
    return figures.single_us + per_byte * max(0, keys * dim * 4 - figures.dim * 4)


def nn_us(figures: CpuFigures, table: Table) -> float:
    """Server CPU of one HNSW NN query: the call's own cost + FAISS scaled by dim and log(rows)
    (HNSW visits O(efSearch * log n) nodes, each a dim-long distance)."""
    scale = (table.dim / figures.dim) * (math.log(table.rows) / math.log(figures.rows))
    return figures.nn_us - figures.faiss_us + figures.faiss_us * scale


def replicas(core_us_per_s: float, *, workers: int = 1) -> int:
    """Replicas for a load of ``core_us_per_s`` server CPU µs per second, at the target utilisation, N+1."""
    per_replica = 1e6 * TARGET_UTILISATION * workers * CORES_PER_WORKER
    return math.ceil(core_us_per_s / per_replica) + SPARE_REPLICAS


def single_lookups_per_s(figures: CpuFigures, *, cores: float = CORES_PER_WORKER) -> float:
    """Predicted single-key calls/s of one replica whose ``cores`` are all its own (no headroom)."""
    return cores * 1e6 / figures.single_us


def figures_from_bench(path: Path) -> CpuFigures:
    """The CPU figures of a bench/bench_serving.py JSON (parts lookup and neighbours).

    Raises:
        KeyError: the JSON lacks the lookup or neighbours part.
    """
    data = json.loads(path.read_text())
    best = data["lookup"]["best"]
    nn = data["neighbours"]
    rows, dim = _bundle_shape(Path(nn.get("bundle", "")), DEFAULT_FIGURES)
    return CpuFigures(
        single_us=best["client_single"]["ours"]["server_cpu_us_per_call"],
        batch_us=best["client_batch"]["ours"]["server_cpu_us_per_call"],
        nn_us=nn["ours"]["server_cpu_us_per_call"],
        faiss_us=nn["faiss_inproc"]["mean_ms"] * 1e3,
        rows=rows,
        dim=int(data["lookup"].get("dim", dim)),
        batch_keys=int(data["lookup"].get("batch_keys", 1024)),
        source=f"{path.name} (load average {data.get('machine', {}).get('loadavg', '?')})",
    )


def _bundle_shape(bundle: Path, fallback: CpuFigures) -> tuple[int, int]:
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
        return int(manifest["count"]), int(manifest["vector_size"])
    except (OSError, KeyError, ValueError):
        return fallback.rows, fallback.dim


def newest_bench() -> Path | None:
    found = sorted(RESULTS.glob("serving-*.json"))
    return found[-1] if found else None


def model(figures: CpuFigures, table: Table, *, lookups: float, batch_lookups: float, batch_keys: int, nn: float,
          workers: int = 1) -> dict[str, Any]:
    """The whole model for one table and load; what ``main`` prints."""
    cpu = {
        "single_lookup_us": lookup_us(figures, 1, table.dim),
        f"lookup_{batch_keys}_keys_us": lookup_us(figures, batch_keys, table.dim),
        "nn_us": nn_us(figures, table),
    }
    load = lookups * cpu["single_lookup_us"] + batch_lookups * cpu[f"lookup_{batch_keys}_keys_us"] + nn * cpu["nn_us"]
    return {
        "figures": figures.__dict__,
        "table": table.__dict__,
        "memory_per_replica_bytes": memory_bytes(table, workers=workers),
        "memory_parts_bytes": {"runtime": RUNTIME_BYTES, "vectors": table.rows * table.dim * 4, "index": index_bytes(table),
                               "keys": key_bytes(table)},
        "cpu_us_per_call": {k: round(v, 1) for k, v in cpu.items()},
        "load_cores": round(load / 1e6, 2),
        "workers_per_replica": workers,
        "replicas": replicas(load, workers=workers),
        "resources": resources(table, workers=workers),
        "hpa_in_flight_target": hpa_in_flight_target(workers=workers),
        "single_lookups_per_s_per_core": round(single_lookups_per_s(figures)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", type=Path, default=None, help="bench_serving JSON (default: newest in bench/results/, else built-in figures)")
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--dim", type=int, default=300)
    p.add_argument("--factory", default="HNSW32,Flat")
    p.add_argument("--lookups", type=float, default=50_000, help="single-key Lookup calls/s")
    p.add_argument("--batch-lookups", type=float, default=0, help="batch Lookup calls/s")
    p.add_argument("--batch-keys", type=int, default=1024)
    p.add_argument("--nn", type=float, default=5_000, help="NN queries/s")
    p.add_argument("--workers", type=int, default=1, help="embserve-server --workers per replica")
    args = p.parse_args()
    path = args.bench or newest_bench()
    figures = figures_from_bench(path) if path else DEFAULT_FIGURES
    table = Table(args.rows, args.dim, args.factory)
    out = model(figures, table, lookups=args.lookups, batch_lookups=args.batch_lookups, batch_keys=args.batch_keys, nn=args.nn,
                workers=args.workers)
    print(json.dumps(out, indent=2))



if __name__ == "__main__":
    main()

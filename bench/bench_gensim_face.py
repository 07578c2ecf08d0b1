"""gensim's face: ``RemoteKeyedVectors.evaluate_word_analogies`` vs gensim's in-process ``KeyedVectors``, one run.

    flock /tmp/embserve-heavy.lock .venv/bin/python bench/bench_gensim_face.py --tables tables        # full (~8 min of gensim)
    flock /tmp/embserve-heavy.lock .venv/bin/python bench/bench_gensim_face.py --tables tables --per-section 50

Both sides read the same GloVe bundle (``<tables>/glove``, 400k x 50): gensim gets its vectors and keys
in a ``KeyedVectors``; ours is the real ``embserve-server`` in a subprocess, asked through
``RemoteKeyedVectors`` with gensim's defaults (questions-words.txt from gensim's test data,
restrict_vocab 300000, case_insensitive, exact search). Prints both accuracies, whether every
section's correct/incorrect lists agree, the time ratio against the 1/20 target, and the same for
the approximate index (``exact=False``). Writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from embserve_client import RemoteKeyedVectors
from embserve_format.bundle import list_versions, read_bundle
from embserve_trainer.evaluate import ANALOGY_SET, gensim_test_data
from gensim.models import KeyedVectors

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_evaluate import subset_questions  # noqa: E402
from harness import EmbserveProcess, load_line, machine, write_json  # noqa: E402

TARGET_RATIO = 20.0  # gensim's time / ours, at least


def counts(sections: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    return [(s["section"], len(s["correct"]), len(s["incorrect"])) for s in sections]


def timed(call: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = call()
    return time.perf_counter() - t0, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", type=Path, default=Path("tables"), help="tables root holding the glove bundle")
    ap.add_argument("--table", default="glove")
    ap.add_argument("--per-section", type=int, default=0, help="only the first N questions of each section (0 = all)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    version = list_versions(args.tables, args.table)[-1]
    bundle = read_bundle(args.tables / args.table / str(version))
    questions = gensim_test_data() / ANALOGY_SET
    with tempfile.TemporaryDirectory() as tmp:
        if args.per_section:
            subset_questions(questions, Path(tmp) / "questions.txt", args.per_section)
            questions = Path(tmp) / "questions.txt"
        kv = KeyedVectors(vector_size=bundle.vector_size)
        kv.add_vectors(list(bundle.keys), np.asarray(bundle.vectors, dtype=np.float32))
        print(f"{bundle.name} v{bundle.version}: {bundle.count} x {bundle.vector_size}; questions {questions.name}"
              f"{f' (first {args.per_section} per section)' if args.per_section else ''}; {load_line()}", flush=True)

        with EmbserveProcess(args.tables) as server:
            server.wait_serving()
            target = f"127.0.0.1:{server.port}"
            with RemoteKeyedVectors(target, table=args.table) as rkv, RemoteKeyedVectors(target, table=args.table, exact=False) as approx:
                rkv.evaluate_word_analogies(str(questions))  # warm-up: the server's case-folded vocabulary is built once
                approx.evaluate_word_analogies(str(questions))
                ours_s, (ours_score, ours) = timed(lambda: rkv.evaluate_word_analogies(str(questions)))
                approx_s, (approx_score, approx_sections) = timed(lambda: approx.evaluate_word_analogies(str(questions)))
        print(f"ours done ({ours_s:.2f} s); gensim in-process now; {load_line()}", flush=True)
        gensim_s, (gensim_score, theirs) = timed(lambda: kv.evaluate_word_analogies(str(questions)))

    same = counts(ours) == counts(theirs) and all(a["correct"] == b["correct"] for a, b in zip(ours, theirs))
    differ = sum(abs(a[1] - b[1]) for a, b in zip(counts(approx_sections), counts(theirs)))
    ratio, approx_ratio = gensim_s / ours_s, gensim_s / approx_s
    print()
    print(f"{'evaluate_word_analogies':<44}{'accuracy':>10}{'seconds':>10}{'gensim/ours':>13}")
    print(f"{'gensim KeyedVectors (in-process)':<44}{100 * gensim_score:>9.2f}%{gensim_s:>10.2f}{'':>13}")
    print(f"{'RemoteKeyedVectors exact (default)':<44}{100 * ours_score:>9.2f}%{ours_s:>10.2f}{ratio:>12.1f}x"
          f"  target >= {TARGET_RATIO:.0f}x: {'PASS' if ratio >= TARGET_RATIO else 'FAIL'}")
    print(f"{'RemoteKeyedVectors exact=False (HNSW)':<44}{100 * approx_score:>9.2f}%{approx_s:>10.2f}{approx_ratio:>12.1f}x")
    print(f"exact: same correct/incorrect per section as gensim: {'YES' if same else 'NO'}; "
          f"approximate: {differ} correct counts differ over all sections")
    for (name, c, i), (_, gc, gi) in zip(counts(ours), counts(theirs)):
        print(f"  {name:<30} ours {c:>5}/{c + i:<5} gensim {gc:>5}/{gc + gi:<5}{'' if (c, i) == (gc, gi) else '  DIFFERENT'}")
    print(load_line())
    path = write_json("gensim_face", {
        "machine": machine(), "table": {"name": bundle.name, "version": bundle.version, "count": bundle.count},
        "per_section": args.per_section, "gensim_seconds": gensim_s, "ours_seconds": ours_s, "approx_seconds": approx_s,
        "ratio": ratio, "approx_ratio": approx_ratio, "target_ratio": TARGET_RATIO, "same_sections": same,
        "gensim_score": gensim_score, "ours_score": ours_score, "approx_score": approx_score,
        "sections": {"ours": counts(ours), "gensim": counts(theirs), "approx": counts(approx_sections)},
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

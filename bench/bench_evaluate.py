"""Evaluation: ours (batched FAISS) vs gensim's KeyedVectors.evaluate_* on the same vectors, one run.

    .venv/bin/python bench/bench_evaluate.py --bundle /tmp/t/glove            # full gensim run (~8 min)
    .venv/bin/python bench/bench_evaluate.py --bundle /tmp/t/glove --per-section 100   # gensim on a subset

Prints both sets of figures, whether every section's correct count agrees, and the time ratio of
gensim's ``evaluate_word_analogies`` to ours on the same questions, for both of our searches: the
default (the bundle's HNSW index, as ``embserve-train evaluate`` runs) and ``--exact`` brute force.
Writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from embserve_format.bundle import read_bundle
from embserve_index import prepare_rows
from embserve_trainer.evaluate import (
    ANALOGY_SET,
    PAIR_SETS,
    RESTRICT_VOCAB,
    bundle_index_search,
    evaluate_bundle,
    evaluate_word_analogies,
    exact_search,
    gensim_test_data,
    resolve_bundle,
    vocab_index,
)
from gensim.models import KeyedVectors

RESULTS = Path(__file__).resolve().parent / "results"


def subset_questions(src: Path, dst: Path, per_section: int) -> None:
    """The first ``per_section`` questions of every section (gensim's full run takes minutes)."""
    out, n = [], 0
    for line in src.read_text(encoding="utf8").splitlines(keepends=True):
        if line.startswith(": "):
            out.append(line)
            n = 0
        elif n < per_section:
            out.append(line)
            n += 1
    dst.write_text("".join(out), encoding="utf8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True, help="bundle dir or table dir (newest version)")
    p.add_argument("--restrict-vocab", type=int, default=RESTRICT_VOCAB)
    p.add_argument("--per-section", type=int, default=0, help="gensim on the first N questions per section only (0 = all)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    bundle = read_bundle(resolve_bundle(args.bundle))
    vectors, keys = np.asarray(bundle.vectors), list(bundle.keys)
    data = gensim_test_data()
    questions = data / ANALOGY_SET
    tmp = tempfile.TemporaryDirectory()
    if args.per_section:
        questions = Path(tmp.name) / "questions-subset.txt"
        subset_questions(data / ANALOGY_SET, questions, args.per_section)

    # --- ours: the full report (as `embserve-train evaluate` computes it), then the same questions as gensim
    # through the default search (the bundle's index when it has one) and through exact brute force.
    t0 = time.perf_counter()
    _, ours = evaluate_bundle(args.bundle, restrict_vocab=args.restrict_vocab)
    ours_total_s = time.perf_counter() - t0
    n = min(args.restrict_vocab, len(keys))
    rows = prepare_rows(vectors[:n], "cosine")
    vocab = vocab_index(keys, n, True)
    # The default search is the index when the bundle has one (else exact, measured once).
    indexed = bundle_index_search(bundle, n)
    searches = {"default": indexed, "exact": exact_search(rows)} if indexed else {"exact": exact_search(rows)}
    ours_q, ours_s = {}, {}
    for label, search in searches.items():
        t0 = time.perf_counter()
        ours_q[label] = evaluate_word_analogies(rows, keys, vocab, questions, search=search)
        ours_s[label] = time.perf_counter() - t0

    # --- gensim on the same vectors, same files, default settings.
    kv = KeyedVectors(vectors.shape[1], dtype=np.float32)
    kv.add_vectors(keys, vectors)
    gensim_pairs = {}
    for name, fname in PAIR_SETS.items():
        pearson, spearman, oov = kv.evaluate_word_pairs(str(data / fname), restrict_vocab=args.restrict_vocab)
        gensim_pairs[name] = {"spearman": float(spearman.statistic), "pearson": float(pearson.statistic), "oov_ratio": oov}
    print(f"gensim evaluate_word_analogies on {questions.name} (this is the slow part)...", flush=True)
    t0 = time.perf_counter()
    g_score, g_sections = kv.evaluate_word_analogies(str(questions), restrict_vocab=args.restrict_vocab)
    gensim_analogy_s = time.perf_counter() - t0
    g_counts = {s["section"]: len(s["correct"]) for s in g_sections}
    mismatches = {}
    for label, q in ours_q.items():
        o_counts = {s["section"]: s["correct"] for s in q["sections"]}
        o_counts["Total accuracy"] = q["total"]["correct"]
        mismatches[label] = {k: (o_counts.get(k), v) for k, v in g_counts.items() if o_counts.get(k) != v}
    ratios = {label: gensim_analogy_s / seconds for label, seconds in ours_s.items()}
    print()
    print(f"table {bundle.name} v{bundle.version}: {len(keys)} x {vectors.shape[1]}, restrict_vocab={args.restrict_vocab}")
    print(f"{'metric':<34}{'gensim':>12}{'embserve':>12}{'diff':>10}")
    for name in PAIR_SETS:
        g, o = gensim_pairs[name]["spearman"], ours["word_pairs"][name]["spearman"]
        print(f"{name + ' spearman':<34}{g:>12.4f}{o:>12.4f}{o - g:>+10.4f}")
    gq = len(g_sections[-1]["correct"]) + len(g_sections[-1]["incorrect"])
    for label, q in ours_q.items():
        acc = q["total"]["accuracy"]
        print(f"{'analogies accuracy, ' + label + ' (' + q['search'] + ')':<34}{g_score:>12.4f}{acc:>12.4f}"
              f"{acc - g_score:>+10.4f}")
        print(f"{'  answered':<34}{gq:>12}{q['total']['answered']:>12}")
        print(f"{'  seconds (same questions)':<34}{gensim_analogy_s:>12.2f}{ours_s[label]:>12.2f}")
    print(f"{'full analogy set accuracy (ours)':<34}{'':>12}{ours['analogies']['total']['accuracy']:>12.4f}")
    print(f"{'ours, whole report incl. pairs':<34}{'':>12}{ours_total_s:>12.2f}")
    for label, ratio in ratios.items():
        verdict = "PASS" if ratio >= 30 else "FAIL"
        print(f"speed-up on evaluate_word_analogies, {label} ({ours_q[label]['search']}): {ratio:.1f}x "
              f"(need >= 30x) {verdict}")
        diff = mismatches[label]
        print(f"  per-section correct counts vs gensim: {'identical' if not diff else f'differ {diff}'}")

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"evaluate-{bundle.name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({
        "bundle": str(bundle.path), "machine": platform.machine(), "python": platform.python_version(),
        "questions": questions.name, "per_section": args.per_section,
        "gensim": {"pairs": gensim_pairs, "analogy_accuracy": g_score, "analogy_seconds": gensim_analogy_s,
                   "section_correct": g_counts},
        "ours": {"report": ours, "analogy_seconds_same_questions": ours_s, "report_seconds": ours_total_s,
                 "same_questions": ours_q},
        "speedup": ratios, "section_mismatches": mismatches,
    }, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Training: embserve-train vs plain gensim, same text, same parameters, side by side in one run.

    .venv/bin/python bench/bench_train.py --repeats 3           # GCIDE, skip-gram 100d, 5 epochs (~2 min per model)
    .venv/bin/python bench/bench_train.py --corpus FILE --epochs 1

"Plain gensim" is ``Word2Vec(LineSentence(tokens.txt), ...)`` on the token file our tokenizer writes
(so both see exactly the same tokens), with gensim's defaults for everything not set here. Both
train() calls are timed the same way: raw words / seconds of ``model.train``. Quality comes from the
same evaluator (proven identical to gensim's by tests/pure/test_evaluate.py). Writes bench/results/*.json.
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
from embserve_format.text import Tokenizer
from embserve_trainer.corpus import document_mode, resolve_corpus
from embserve_trainer.evaluate import evaluate_table
from embserve_trainer.export import export_table
from embserve_trainer.train import TrainConfig, tokenize_corpus, train_table
from gensim.models import Word2Vec
from gensim.models.word2vec import LineSentence

RESULTS = Path(__file__).resolve().parent / "results"
GCIDE = Path("/usr/share/dictd/gcide.dict.dz")


def neighbours(vectors: np.ndarray, keys: list[str], word: str, k: int = 10) -> list[str]:
    if word not in keys:
        return []
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    i = keys.index(word)
    order = np.argsort(-(unit @ unit[i]))
    return [keys[j] for j in order if j != i][:k]


def run_gensim(tokens: Path, config: TrainConfig, n_docs: int) -> tuple[Word2Vec, float, int]:
    model = Word2Vec(
        vector_size=config.dim, window=config.window, min_count=config.min_count, max_final_vocab=config.max_vocab,
        sample=config.sample, negative=config.negative, hs=0, sg=config.sg, workers=config.workers,
        seed=config.seed, epochs=config.epochs, alpha=config.alpha, min_alpha=config.min_alpha,
    )
    model.build_vocab(corpus_iterable=LineSentence(str(tokens)))
    t0 = time.perf_counter()
    # The same call Word2Vec(sentences=...) makes from its constructor.
    _, raw = model.train(corpus_iterable=LineSentence(str(tokens)), total_examples=model.corpus_count,
                         total_words=model.corpus_total_words, epochs=config.epochs)
    return model, time.perf_counter() - t0, raw


def run_ours(corpus: Path, config: TrainConfig) -> dict:
    """The whole pipeline as `embserve-train train` runs it: stream, tokenize, train, evaluate, export."""
    t0 = time.perf_counter()
    trained = train_table([corpus], config)
    report = evaluate_table(trained.vectors, trained.keys)
    with tempfile.TemporaryDirectory() as tables:
        export_table(tables, "bench", trained.vectors, trained.keys, source=trained.source, counts=trained.counts,
                     extras=trained.extras, files={"eval.json": json.dumps(report)})
    t = trained.source["training"]
    return {"train_seconds": t["seconds"], "words_per_second": t["words_per_second"], "wall_seconds": time.perf_counter() - t0,
            "report": report, "vocabulary": len(trained.keys), "vectors": trained.vectors, "keys": trained.keys,
            "cleaner": trained.source["tokenizer"]["cleaner"]}


def summary(run: dict) -> dict:
    r = run["report"]
    return {"train_seconds": run["train_seconds"], "words_per_second": run["words_per_second"],
            "wall_seconds": run["wall_seconds"], "vocabulary": run["vocabulary"],
            "wordsim353": r["word_pairs"]["wordsim353"]["spearman"], "simlex999": r["word_pairs"]["simlex999"]["spearman"],
            "analogies": r["analogies"]["total"]["accuracy"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=GCIDE)
    p.add_argument("--model", default="skipgram", choices=("skipgram", "cbow"))
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--workers", type=int, default=TrainConfig().workers)
    p.add_argument("--repeats", type=int, default=1, help="runs per side with seeds 1..N (multi-threaded training is noisy)")
    p.add_argument("--no-loss", action="store_true", help="ours without gensim's loss computation (gensim's default)")
    p.add_argument("--word", default="dog")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    files = resolve_corpus([args.corpus])
    ours_runs, gensim_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tokens = Path(tmp) / "tokens.txt"  # gensim's input: exactly the tokens our tokenizer produces
        n_docs = n_tokens = 0
        for seed in range(1, args.repeats + 1):
            config = TrainConfig(model=args.model, dim=args.dim, epochs=args.epochs, workers=args.workers, seed=seed,
                                 compute_loss=not args.no_loss)
            ours = run_ours(args.corpus, config)
            ours_runs.append(ours)
            if not n_docs:
                tokenizer = Tokenizer(cleaner=ours["cleaner"])
                _, n_docs, n_tokens, _ = tokenize_corpus(files, tokenizer, document_mode(files, "auto"), tokens)
            t0 = time.perf_counter()
            model, g_seconds, g_raw = run_gensim(tokens, config, n_docs)
            g_keys, g_vectors = list(model.wv.index_to_key), np.asarray(model.wv.vectors)
            gensim_runs.append({"train_seconds": g_seconds, "words_per_second": g_raw / g_seconds,
                                "wall_seconds": time.perf_counter() - t0, "report": evaluate_table(g_vectors, g_keys),
                                "vocabulary": len(g_keys), "vectors": g_vectors, "keys": g_keys})
            g, o = summary(gensim_runs[-1]), summary(ours)
            print(f"seed {seed}: wordsim {g['wordsim353']:.4f} / {o['wordsim353']:.4f}, simlex {g['simlex999']:.4f} / "
                  f"{o['simlex999']:.4f}, words/s {g['words_per_second']:.0f} / {o['words_per_second']:.0f} (gensim / ours)", flush=True)

    g_sum, o_sum = [summary(r) for r in gensim_runs], [summary(r) for r in ours_runs]

    def mean(rows: list[dict], key: str) -> float:
        return float(np.mean([r[key] for r in rows]))

    def sd(rows: list[dict], key: str) -> float:
        return float(np.std([r[key] for r in rows]))

    print()
    print(f"{args.corpus.name}: {n_docs} documents, {n_tokens} tokens; {args.model} {args.dim}d, {args.epochs} epochs, "
          f"window {TrainConfig.window}, negative {TrainConfig.negative}, workers {args.workers}; mean of {args.repeats} run(s)")
    print(f"{'':<26}{'gensim':>18}{'embserve':>18}")
    for key, fmt in (("vocabulary", "{:.0f}"), ("train_seconds", "{:.1f}"), ("words_per_second", "{:.0f}"),
                     ("wall_seconds", "{:.1f}"), ("wordsim353", "{:.4f}"), ("simlex999", "{:.4f}"), ("analogies", "{:.4f}")):
        g = fmt.format(mean(g_sum, key)) + (f" ±{sd(g_sum, key):.3f}" if args.repeats > 1 and key in ("wordsim353", "simlex999", "analogies") else "")
        o = fmt.format(mean(o_sum, key)) + (f" ±{sd(o_sum, key):.3f}" if args.repeats > 1 and key in ("wordsim353", "simlex999", "analogies") else "")
        print(f"{key:<26}{g:>18}{o:>18}")
    ratio = mean(o_sum, "words_per_second") / mean(g_sum, "words_per_second")
    best = max(r["words_per_second"] for r in o_sum) / max(r["words_per_second"] for r in g_sum)
    print(f"words/s ratio embserve/gensim: {ratio:.2f} of means, {best:.2f} best-of-{args.repeats} (need >= 0.9); "
          f"embserve computes the training loss: {not args.no_loss}")
    g_nn = neighbours(gensim_runs[0]["vectors"], gensim_runs[0]["keys"], args.word)
    o_nn = neighbours(ours_runs[0]["vectors"], ours_runs[0]["keys"], args.word)
    print(f"gensim   most_similar({args.word!r}): {', '.join(g_nn)}")
    print(f"embserve most_similar({args.word!r}): {', '.join(o_nn)}")

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"train-{args.corpus.name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({
        "corpus": str(args.corpus), "model": args.model, "dim": args.dim, "epochs": args.epochs, "workers": args.workers,
        "machine": platform.machine(), "documents": n_docs, "tokens": n_tokens,
        "gensim": {"runs": g_sum, "neighbours": g_nn, "reports": [r["report"] for r in gensim_runs]},
        "embserve": {"runs": o_sum, "neighbours": o_nn, "reports": [r["report"] for r in ours_runs]},
        "words_per_second_ratio": ratio, "words_per_second_ratio_best": best, "embserve_computes_loss": not args.no_loss,
    }, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

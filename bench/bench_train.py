"""Training: embserve-train vs plain gensim, same text, same parameters, side by side in one run.

    .venv/bin/python bench/bench_train.py                       # GCIDE, skip-gram 100d, 5 epochs (~5 min)
    .venv/bin/python bench/bench_train.py --corpus FILE --epochs 1

"Plain gensim" is ``Word2Vec(LineSentence(tokens.txt), ...)`` on the token file our tokenizer writes
(so both see exactly the same tokens), with gensim's defaults for everything not set here. Both
train() calls are timed the same way: raw words / seconds of ``model.train``. Quality comes from the
same evaluator (proven identical to gensim's by tests/test_evaluate.py). Writes bench/results/*.json.
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
from embserve_trainer.corpus import document_mode, resolve_corpus
from embserve_trainer.evaluate import evaluate_table
from embserve_trainer.export import export_table
from embserve_trainer.tokenize import Tokenizer
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
    _, raw = model.train(corpus_iterable=LineSentence(str(tokens)), total_examples=model.corpus_count,
                         epochs=config.epochs)
    return model, time.perf_counter() - t0, raw


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=GCIDE)
    p.add_argument("--model", default="skipgram", choices=("skipgram", "cbow"))
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--workers", type=int, default=TrainConfig().workers)
    p.add_argument("--word", default="dog")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = TrainConfig(model=args.model, dim=args.dim, epochs=args.epochs, workers=args.workers)

    # --- ours: the whole pipeline (stream, tokenize, train, evaluate, export)
    t0 = time.perf_counter()
    trained = train_table([args.corpus], config)
    ours_report = evaluate_table(trained.vectors, trained.keys)
    with tempfile.TemporaryDirectory() as tables:
        export_table(tables, "bench", trained.vectors, trained.keys, source=trained.source, counts=trained.counts,
                     extras=trained.extras, files={"eval.json": json.dumps(ours_report)})
    ours_total = time.perf_counter() - t0
    ours_train = trained.source["training"]

    # --- plain gensim on the same tokens
    files = resolve_corpus([args.corpus])
    tokenizer = Tokenizer(cleaner=trained.source["tokenizer"]["cleaner"])
    with tempfile.TemporaryDirectory() as tmp:
        tokens = Path(tmp) / "tokens.txt"
        _, n_docs, n_tokens, _ = tokenize_corpus(files, tokenizer, document_mode(files, "auto"), tokens)
        t0 = time.perf_counter()
        model, g_seconds, g_raw = run_gensim(tokens, config, n_docs)
        g_total = time.perf_counter() - t0
    g_keys = list(model.wv.index_to_key)
    g_vectors = np.asarray(model.wv.vectors)
    g_report = evaluate_table(g_vectors, g_keys)
    g_wps = g_raw / g_seconds

    rows = [
        ("vocabulary", len(g_keys), len(trained.keys)),
        ("train seconds", round(g_seconds, 1), ours_train["seconds"]),
        ("train words/s", round(g_wps), round(ours_train["words_per_second"])),
        ("wall seconds (pipeline)", round(g_total, 1), round(ours_total, 1)),
        ("WordSim-353 rho", round(g_report["word_pairs"]["wordsim353"]["spearman"], 4),
         round(ours_report["word_pairs"]["wordsim353"]["spearman"], 4)),
        ("SimLex-999 rho", round(g_report["word_pairs"]["simlex999"]["spearman"], 4),
         round(ours_report["word_pairs"]["simlex999"]["spearman"], 4)),
        ("analogies accuracy", round(g_report["analogies"]["total"]["accuracy"], 4),
         round(ours_report["analogies"]["total"]["accuracy"], 4)),
    ]
    print()
    print(f"{args.corpus.name}: {n_docs} documents, {n_tokens} tokens; {config.model} {config.dim}d, "
          f"{config.epochs} epochs, window {config.window}, negative {config.negative}, workers {config.workers}")
    print(f"{'':<26}{'gensim':>14}{'embserve':>14}")
    for name, g, o in rows:
        print(f"{name:<26}{g!s:>14}{o!s:>14}")
    ratio = ours_train["words_per_second"] / g_wps
    print(f"words/s ratio embserve/gensim: {ratio:.2f} (need >= 0.9)")
    g_nn, o_nn = neighbours(g_vectors, g_keys, args.word), neighbours(trained.vectors, trained.keys, args.word)
    print(f"gensim   most_similar({args.word!r}): {', '.join(g_nn)}")
    print(f"embserve most_similar({args.word!r}): {', '.join(o_nn)}")

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"train-{args.corpus.name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({
        "corpus": str(args.corpus), "config": trained.source["parameters"], "machine": platform.machine(),
        "documents": n_docs, "tokens": n_tokens,
        "gensim": {"train_seconds": g_seconds, "words_per_second": g_wps, "report": g_report, "neighbours": g_nn},
        "embserve": {"training": ours_train, "wall_seconds": ours_total, "report": ours_report, "neighbours": o_nn},
        "words_per_second_ratio": ratio,
    }, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

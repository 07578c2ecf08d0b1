"""Skip-gram vs next-token LM on GCIDE: same tokenizer, same vocabulary, same dimension, one run.

    flock /tmp/embserve-heavy.lock .venv/bin/python bench/bench_lm.py --max-minutes 14 --snapshot-every 300
    .venv/bin/python bench/bench_lm.py --max-minutes 2 --snapshot-every 50                # a quick look

Both models read the corpus through the same tokenizer (GCIDE cleaner) and build the same vocabulary
(gensim's ``build_vocab_from_freq`` with the same min-count; the script checks the keys are equal).
Prints for each: wall time, tokens/s, WordSim-353 / SimLex-999 rho, analogy accuracy, the LM's
held-out perplexity, the neighbours of cat, kitten, boat and king, and the LM's snapshot series
(first, middle, last) with the share of training time its snapshots cost. Targets (issue 12):
LM WordSim-353 >= 0.35 and rising first -> last snapshot, perplexity falling, >= 5 animals among
cat's 10 nearest at the last snapshot. Writes bench/results/lm-*.json; the LM's versions stay
under --tables for ``embserve-train curve``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from bench_train import neighbours
from embserve_format.bundle import list_versions, read_bundle
from embserve_format.text import Tokenizer
from embserve_trainer.corpus import document_mode, resolve_corpus
from embserve_trainer.evaluate import evaluate_table
from embserve_trainer.lm import train_nexttoken
from embserve_trainer.lm_config import LMConfig
from embserve_trainer.lm_data import build_data
from embserve_trainer.train import TrainConfig, train_table

RESULTS = Path(__file__).resolve().parent / "results"
GCIDE = Path("/usr/share/dictd/gcide.dict.dz")
WORDS = ("cat", "kitten", "boat", "king")
# For the "animals among cat's neighbours" target: GCIDE's animal words a reader would accept.
ANIMALS = set("""dog dogs cat cats kitten kittens puppy rabbit rabbits hare fox wolf bear lion tiger leopard panther
monkey ape squirrel rat rats mouse mice weasel ferret badger otter beaver mole hedgehog deer goat sheep ox cow horse
pig hog boar ass mule camel elephant bird birds duck goose hen fowl pigeon dove sparrow crow owl hawk eagle parrot
snake lizard frog toad fish salmon trout eel whale seal bat insect spider bee ant fly beetle worm jackal hyena civet
marten polecat sable ermine mink lynx ocelot cougar puma jaguar cheetah raccoon skunk opossum porcupine marmot
chipmunk gopher vole shrew hamster guinea antelope gazelle buffalo bison elk moose reindeer caribou llama alpaca
calf lamb colt foal pup cub kid pony donkey zebra giraffe hippopotamus rhinoceros kangaroo sloth armadillo anteater
lemur baboon gorilla chimpanzee orang monkeys dogs wolves foxes bears swine cattle poultry animal beast mammal
rodent quadruped feline canine vermin""".split())


def scores(report: dict) -> dict:
    pairs = report["word_pairs"]
    return {"wordsim353": pairs["wordsim353"]["spearman"], "simlex999": pairs["simlex999"]["spearman"],
            "analogies": report["analogies"]["total"]["accuracy"] if "analogies" in report else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=GCIDE)
    p.add_argument("--tables", type=Path, default=Path("/tmp/embserve-bench-lm"), help="LM versions go here (replaced)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--sg-epochs", type=int, default=5)
    p.add_argument("--layers", type=int, default=LMConfig.layers)
    p.add_argument("--heads", type=int, default=LMConfig.heads)
    p.add_argument("--context", type=int, default=LMConfig.context)
    p.add_argument("--batch", type=int, default=LMConfig.batch)
    p.add_argument("--lr", type=float, default=LMConfig.lr)
    p.add_argument("--warmup", type=int, default=LMConfig.warmup_steps)
    p.add_argument("--embedding-decay", type=float, default=LMConfig.embedding_decay)
    p.add_argument("--max-steps", type=int, default=100_000)
    p.add_argument("--epochs", type=int, default=10, help="LM passes over the corpus at most")
    p.add_argument("--max-minutes", type=float, default=14.0, help="LM training budget (the schedule follows it)")
    p.add_argument("--snapshot-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--skip-skipgram", action="store_true")
    args = p.parse_args()

    files = resolve_corpus([args.corpus])
    tokenizer = Tokenizer(cleaner="gcide" if args.corpus.name.startswith("gcide") else "none")
    documents = document_mode(files, "auto")
    load = os.getloadavg()
    rows: dict[str, dict] = {}

    if not args.skip_skipgram:
        t0 = time.perf_counter()
        sg = train_table([args.corpus], TrainConfig(dim=args.dim, min_count=args.min_count, epochs=args.sg_epochs,
                                                    workers=2, seed=args.seed), tokenizer=tokenizer)
        report = evaluate_table(sg.vectors, sg.keys)
        rows["skip-gram"] = {"wall_seconds": time.perf_counter() - t0, "train_seconds": sg.source["training"]["seconds"],
                             "tokens_per_second": sg.source["training"]["words_per_second"], **scores(report),
                             "heldout_perplexity": None, "vocabulary": len(sg.keys),
                             "neighbours": {w: neighbours(sg.vectors, sg.keys, w) for w in WORDS}}
        sg_keys = sg.keys
        print(f"skip-gram done: {rows['skip-gram']}", flush=True)

    config = LMConfig(dim=args.dim, layers=args.layers, heads=args.heads, context=args.context, batch=args.batch,
                      lr=args.lr, warmup_steps=args.warmup, embedding_decay=args.embedding_decay,
                      epochs=args.epochs, max_steps=args.max_steps, max_minutes=args.max_minutes,
                      min_count=args.min_count, seed=args.seed, device="cpu")
    shutil.rmtree(args.tables / "gcide-lm", ignore_errors=True)
    t0 = time.perf_counter()
    data = build_data(files, tokenizer, documents, min_count=args.min_count, max_vocab=None, context=args.context,
                      names=str(args.corpus))
    final = train_nexttoken([args.corpus], config, tables=args.tables, name="gcide-lm", tokenizer=tokenizer,
                            documents=documents, snapshot_every=args.snapshot_every, data=data)
    wall = time.perf_counter() - t0
    bundle = read_bundle(final)
    training = bundle.manifest["source"]["training"]
    report = json.loads((final / "eval.json").read_text())
    vectors, keys = np.asarray(bundle.vectors), list(bundle.keys)
    if not args.skip_skipgram:
        print(f"same vocabulary as skip-gram: {keys == sg_keys} ({len(keys)} keys)")
    rows["next-token LM"] = {"wall_seconds": wall, "train_seconds": training["seconds"],
                             "tokens_per_second": training["tokens_per_second"], **scores(report),
                             "heldout_perplexity": training["heldout_perplexity"], "vocabulary": len(keys),
                             "neighbours": {w: neighbours(vectors, keys, w) for w in WORDS}}
    centred = evaluate_table(vectors - vectors.mean(axis=0), keys, analogies=False)
    rows["LM table mean-centred (diagnostic)"] = {**scores(centred), "neighbours": {
        w: neighbours(vectors - vectors.mean(axis=0), keys, w) for w in WORDS}}

    print(f"\n{args.corpus.name}: dim {args.dim}; LM {args.layers} layers, {args.heads} heads, context {args.context}, "
          f"batch {args.batch}, lr {args.lr}, {training['step']} steps, {training['tokens_seen']:,} tokens; "
          f"load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, after {os.getloadavg()[0]:.2f}")
    print(f"{'':<36}{'wall s':>8}{'train s':>9}{'tok/s':>9}{'WS353':>8}{'SimLex':>8}{'analogy':>9}{'ppl':>8}")
    for name, r in rows.items():
        def f(key: str, fmt: str, r: dict = r) -> str:
            return fmt.format(r[key]) if r.get(key) is not None else "-"
        print(f"{name:<36}{f('wall_seconds', '{:.0f}'):>8}{f('train_seconds', '{:.0f}'):>9}"
              f"{f('tokens_per_second', '{:.0f}'):>9}{f('wordsim353', '{:.3f}'):>8}{f('simlex999', '{:.3f}'):>8}"
              f"{f('analogies', '{:.3f}'):>9}{f('heldout_perplexity', '{:.1f}'):>8}")
    for name, r in rows.items():
        for w in WORDS:
            print(f"{name:<36}{w:>7}: {', '.join(r['neighbours'][w])}")

    print("\nLM snapshots (version, step, tokens, train loss, held-out perplexity, WordSim-353, SimLex-999):")
    versions = list_versions(args.tables, "gcide-lm")
    series = []
    for v in versions:
        b = read_bundle(args.tables / "gcide-lm" / str(v))
        t = b.manifest["source"]["training"]
        series.append({"version": v, **{k: t.get(k) for k in ("step", "tokens_seen", "train_loss", "heldout_perplexity",
                                                              "wordsim353", "simlex999")}})
        print("  " + "  ".join(f"{k} {val:.4g}" if isinstance(val, float) else f"{k} {val}" for k, val in series[-1].items()))
    picks = {"first": versions[0], "middle": versions[len(versions) // 2], "last": versions[-1]}
    shown = {}
    for label, v in picks.items():
        b = read_bundle(args.tables / "gcide-lm" / str(v))
        vec, ks = np.asarray(b.vectors), list(b.keys)
        shown[label] = {"version": v, "step": b.manifest["source"]["training"]["step"],
                        **{w: neighbours(vec, ks, w) for w in ("cat", "kitten", "boat")}}
        print(f"{label} (v{v}, step {shown[label]['step']}):")
        for w in ("cat", "kitten", "boat"):
            print(f"    {w}: {', '.join(shown[label][w])}")
    ws = [s["wordsim353"] for s in series]
    ppl = [s["heldout_perplexity"] for s in series]
    animals = [w for w in shown["last"]["cat"] if w in ANIMALS]
    cost = training["snapshot_seconds_total"] / training["seconds"]
    print("\ntargets:")
    print(f"  LM WordSim-353 {ws[-1]:.3f} >= 0.35: {'PASS' if ws[-1] >= 0.35 else 'FAIL'}; "
          f"rising first {ws[0]:.3f} -> last {ws[-1]:.3f}: {'PASS' if ws[-1] > ws[0] else 'FAIL'}")
    print(f"  held-out perplexity falling across snapshots {[round(x, 1) for x in ppl]}: "
          f"{'PASS' if all(b < a for a, b in zip(ppl, ppl[1:], strict=False)) else 'FAIL'}")
    print(f"  animals among cat's 10 nearest at the last snapshot: {len(animals)} {animals}: "
          f"{'PASS' if len(animals) >= 5 else 'FAIL'}")
    print(f"  snapshots cost {100 * cost:.1f}% of training time ({training['snapshot_seconds_total']:.1f} s over "
          f"{len(versions) - 1} snapshots, every {args.snapshot_every} steps): {'PASS' if cost < 0.05 else 'FAIL'}")

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"lm-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "series": series,
                               "neighbours": shown, "snapshot_cost": cost, "load": load}, indent=2) + "\n")
    print(f"wrote {out}; versions under {args.tables / 'gcide-lm'}")


if __name__ == "__main__":
    main()

"""Text-vector quality: a GCIDE reverse dictionary (definition -> headword), MRR per encoder, side by side.

5,000 seeded (headword, definition) pairs (bench/gcide_pairs.py); every encoder embeds the 5,000
definitions and the 5,000 headwords as text; for each definition the headwords are ranked by cosine
and MRR = mean(1 / rank of its own headword) (ties count half). Encoders:

- the all-MiniLM-L6-v2 transformer (sentence-transformers, in the distill virtualenv) -- the ceiling;
- model2vec's own ``StaticModel.encode`` of the distilled MiniLM (the folder ``--save-model2vec`` kept);
- the ``minilm-distilled`` bundle, pooled as its manifest says (bench/text_encoders.py);
- the ``minilm`` bundle (MiniLM's raw input embedding table), plain mean;
- ``glove`` and ``gcide`` (skip-gram on GCIDE) bundles: plain mean; their pooling weights alone; the
  bundle's pooling as written (weights and ``component.npy``, SIF's common component); and the SIF
  coefficient swept (1e-3, 1e-4, 1e-5), to show on the dev split how the default was picked;
- variants that try to beat model2vec on the same base: the distilled rows with model2vec's baked-in
  Zipf-rank SIF divided out and SIF from GCIDE token counts instead (several ``a``); a common component
  taken from a reference corpus nobody here wrote (gensim's Lee background corpus, 300 news articles:
  the first principal direction of their pooled vectors, Arora et al.'s recipe, as
  ``distill --common-component`` stores it); and
  ``minilm-distilled-words`` when present (``distill --vocabulary`` with GloVe's 20,000 most frequent
  words missing from MiniLM's vocabulary, bench/distill_vocabulary.py).

``--split dev`` draws the pairs from those the reported (test) sample does not hold, so parameters can
be chosen there and reported on ``test``; it skips the transformer and model2vec's own encode.

    .venv/bin/python bench/bench_text_quality.py --tables tables --model2vec m2v-folder [--python .venv/tools/distill/bin/python]

texts/s: the encoders' own in-process speed over the 5,000 definitions (embserve's pooling here is a
Python reference loop, not the server's Embed; bench_embed_speed measures that).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from embserve_format.bundle import list_versions
from embserve_trainer.transformer import minilm_sample_paths

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gcide_pairs import GCIDE, sample_pairs  # noqa: E402
from text_encoders import BundleEncoder, distill_side, timed  # noqa: E402


def mrr(defs: np.ndarray, heads: np.ndarray) -> float:
    """Mean reciprocal rank of head i for definition i (rows unit length or zero; ties count half)."""
    sims = defs @ heads.T  # (n, n)
    own = np.diag(sims)[:, None]
    rank = 1 + (sims > own).sum(axis=1) + 0.5 * ((sims == own).sum(axis=1) - 1)
    return float(np.mean(1.0 / rank))


def newest(tables: Path, name: str) -> Path:
    versions = list_versions(tables, name)
    if not versions:
        raise SystemExit(f"{tables}/{name}: no bundle; build the default tables first (scripts/default-tables.sh)")
    return tables / name / str(versions[-1])


def gcide_token_counts(encoder: BundleEncoder, path: Path = GCIDE) -> np.ndarray:
    """How often each row's token occurs in GCIDE, tokenized by the bundle's own tokenizer."""
    from embserve_format.text import clean_gcide
    from embserve_trainer.corpus import iter_documents, resolve_corpus

    counts = np.zeros(len(encoder.vectors), np.int64)
    batch: list[str] = []
    for doc in iter_documents(resolve_corpus([path]), "paragraph"):
        batch.append(clean_gcide(doc))
        if len(batch) == 4096:
            counts += np.bincount(np.concatenate([np.asarray(i, np.int64) for i in encoder.token_ids(batch)] or [[]]),
                                  minlength=len(counts))
            batch = []
    if batch:
        counts += np.bincount(np.concatenate([np.asarray(i, np.int64) for i in encoder.token_ids(batch)]), minlength=len(counts))
    return counts


LEE = Path(__import__("gensim").__file__).parent / "test" / "test_data" / "lee_background.cor"


def probabilities(encoder: BundleEncoder) -> np.ndarray:
    """The token probabilities the bundle's weights came from: counts, else Zipf over the row order."""
    counts = encoder.bundle / "counts.npy"
    if encoder.pooling.get("probabilities") == "counts" and counts.exists():
        c = np.load(counts, allow_pickle=False).astype(np.float64)
        return c / c.sum()
    inv_rank = 1 / np.arange(1, len(encoder.vectors) + 1)
    return inv_rank / inv_rank.sum()


def describe(pooling: dict) -> str:
    cc = " + common component" if pooling.get("common_component") else ""
    return f"{pooling.get('weights')} a={pooling.get('a', 0):g}{cc}"


def with_corpus_component(encoder: BundleEncoder) -> BundleEncoder:
    """``encoder`` removing the common component of the Lee corpus's documents (one per line), as
    ``embserve-train distill --common-component lee_background.cor`` stores it."""
    from embserve_trainer.pooling import corpus_component

    texts = [t for t in LEE.read_text(encoding="utf-8").splitlines() if t.strip()]
    encoder.component = corpus_component(encoder.vectors, encoder.token_ids(texts), encoder.weights)
    return encoder


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tables", type=Path, required=True, help="holds minilm-distilled, minilm, glove, gcide")
    p.add_argument("--model2vec", type=Path, required=True, help="the model2vec folder of minilm-distilled")
    p.add_argument("--python", default=str(Path(sys.prefix) / "tools" / "distill" / "bin" / "python"),
                   help="the distill virtualenv's interpreter (sentence-transformers, model2vec)")
    p.add_argument("--pairs", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=Path("/tmp/embserve-bench-quality"))
    p.add_argument("--split", choices=("test", "dev"), default="test",
                   help="test: the reported pairs; dev: pairs disjoint from them (seed + 1), for choosing parameters")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args()

    t0 = time.perf_counter()
    dev = args.split == "dev"
    pairs = sample_pairs(args.pairs, args.seed + 1, held_out_from=args.seed) if dev else sample_pairs(args.pairs, args.seed)
    heads, defs = [h for h, _ in pairs], [d for _, d in pairs]
    print(f"{len(pairs)} GCIDE pairs ({args.split} split) in {time.perf_counter() - t0:.0f} s; e.g. {heads[0]!r}: {defs[0]!r}")
    rows: list[tuple[str, float, float | None]] = []

    def side(label: str, mode: str, model: Path) -> None:
        d, rate = distill_side(args.python, mode, model, defs, args.work)
        h, _ = distill_side(args.python, mode, model, heads, args.work)
        rows.append((label, mrr(d, h), rate))
        print(f"  {label}: MRR {rows[-1][1]:.3f}, {rate:,.0f} texts/s", flush=True)

    def ours(label: str, enc: BundleEncoder) -> BundleEncoder:
        d, rate = timed(enc, defs)
        rows.append((label, mrr(d, enc.encode(heads)), rate))
        print(f"  {label}: MRR {rows[-1][1]:.3f}, {rate:,.0f} texts/s", flush=True)
        return enc

    if not dev:
        side("all-MiniLM-L6-v2 transformer (sentence-transformers)", "st", minilm_sample_paths()[0].parent)
        side("model2vec StaticModel.encode, distilled MiniLM", "m2v", args.model2vec)
    distilled = newest(args.tables, "minilm-distilled")
    enc = ours("minilm-distilled bundle, manifest pooling", BundleEncoder(distilled))
    ours("minilm raw input table, plain mean", BundleEncoder(newest(args.tables, "minilm"), plain=True))
    for name in ("glove", "gcide"):
        bundle = newest(args.tables, name)
        ours(f"{name}, plain mean", BundleEncoder(bundle, plain=True))
        weighted = BundleEncoder(bundle, component=False)
        a = weighted.pooling.get("a")
        ours(f"{name}, {weighted.pooling.get('weights')} weights a={a:g}, no component", weighted)
        if weighted.weights is not None:
            p = probabilities(weighted)
            for other in (1e-3, 1e-4, 1e-5):
                if other != a:
                    swept = BundleEncoder(bundle, weights=(other / (other + p)).astype(np.float32))
                    ours(f"{name}, {weighted.pooling.get('weights')} weights a={other:g} + component", swept)
        ours(f"{name}, bundle pooling ({describe(weighted.pooling)})", BundleEncoder(bundle))

    # Beat model2vec on the same base. (1) A common component from a reference corpus.
    ours("distilled + common component of Lee-corpus documents", with_corpus_component(BundleEncoder(distilled)))
    if list_versions(args.tables, "minilm-distilled-words"):  # (2) whole words as extra rows
        words = newest(args.tables, "minilm-distilled-words")
        ours("minilm-distilled-words (+20k GloVe words), manifest pooling", BundleEncoder(words))
        ours("minilm-distilled-words + common component of Lee-corpus documents", with_corpus_component(BundleEncoder(words)))
    # (3) Divide out model2vec's baked-in Zipf-rank SIF, weigh by GCIDE counts instead.
    config = json.loads((args.model2vec / "config.json").read_text())
    a0, n = float(config["sif_coefficient"]), len(enc.vectors)
    inv_rank = 1 / np.arange(2, n + 2)
    baked = a0 / (a0 + inv_rank / inv_rank.sum())  # model2vec.distill.inference.compute_weights
    counts = gcide_token_counts(enc)
    prob = counts / counts.sum()
    unbaked = np.asarray(enc.vectors, np.float64) / baked[:, None]
    for a in (1e-3, 1e-4, 1e-5):
        w = (a / (a + prob)).astype(np.float32)

        variant = BundleEncoder(distilled, weights=w)
        variant.vectors = unbaked.astype(np.float32)
        ours(f"distilled, GCIDE-count SIF a={a:g} instead of Zipf rank", variant)

    width = max(len(r[0]) for r in rows)
    print(f"\n{'encoder':<{width}}  {'MRR':>6}  {'texts/s':>9}")
    for label, score, rate in rows:
        print(f"{label:<{width}}  {score:6.3f}  {rate:9,.0f}" if rate else f"{label:<{width}}  {score:6.3f}")
    base = dict((r[0], r[1]) for r in rows)
    raw = base["minilm raw input table, plain mean"]
    print(f"\ndistilled / raw input mean: {base['minilm-distilled bundle, manifest pooling'] / raw:.2f}x (target >= 1.8x)")
    for name in ("glove", "gcide"):
        plain = base[f"{name}, plain mean"]
        weights_only = next(s for lbl, s, _ in rows if lbl.startswith(f"{name},") and lbl.endswith("no component"))
        pooled = next(s for lbl, s, _ in rows if lbl.startswith(f"{name}, bundle pooling"))
        print(f"{name}: bundle pooling / plain {pooled / plain:.2f}x, weights alone / plain {weights_only / plain:.2f}x (target >= 3x)")
    if args.out:
        args.out.write_text(json.dumps([{"encoder": r[0], "mrr": r[1], "texts_per_s": r[2]} for r in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

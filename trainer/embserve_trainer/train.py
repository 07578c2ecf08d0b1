"""Learn an embedding table from a corpus with gensim: skip-gram / CBOW (negative sampling) or fastText.

Three passes over disk, none holding the corpus in memory:

1. tokenize: stream documents -> tokens -> a temporary token file (one document per line, at most
   10,000 tokens each) while counting token frequencies;
2. vocabulary: gensim's ``build_vocab_from_freq`` on those counts (min-count, max-vocab, sampling);
3. train: gensim streams the token file ``epochs`` times; a tqdm bar shows words/s, epoch, ETA and
   (word2vec) each finished epoch's loss; gensim's own progress lines are DEBUG (cli.py).

    trained = train_table([Path("corpus.txt.gz")], TrainConfig(model="skipgram", dim=100))
    trained.vectors  # (count, dim) float32, rows in descending frequency
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from embserve_format.bundle import NGRAMS
from embserve_format.text import Tokenizer
from gensim.models import FastText, Word2Vec
from gensim.models.callbacks import CallbackAny2Vec

from embserve_trainer.corpus import CorpusFile, corpus_sha256, document_mode, iter_documents, resolve_corpus
from embserve_trainer.progress import bar, logs_above_bars

logger = logging.getLogger(__name__)

MODELS = ("skipgram", "cbow", "fasttext", "fasttext-cbow")
PROGRESS_EVERY = 2_000  # documents between progress-bar updates (tqdm calls cost ~µs; docs are many)


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


@dataclass(frozen=True)
class TrainConfig:
    """Every hyper-parameter of a training run, recorded in the manifest as ``source.parameters``."""

    model: str = "skipgram"  # one of MODELS; "fasttext" is skip-gram with subword n-grams
    dim: int = 100  # vector size
    window: int = 5  # max context distance (gensim samples the effective window in 1..window)
    min_count: int = 5  # tokens seen fewer times are dropped
    max_vocab: int | None = None  # keep only the N most frequent tokens (gensim max_final_vocab)
    epochs: int = 5
    negative: int = 5  # negative samples per positive one (hs=0: negative sampling only)
    ns_exponent: float = 0.75  # unigram^0.75 noise distribution (word2vec's choice)
    sample: float = 1e-3  # down-sampling threshold of frequent tokens
    alpha: float = 0.025  # initial learning rate, decayed linearly to min_alpha
    min_alpha: float = 0.0001
    workers: int = field(default_factory=default_workers)
    seed: int = 1  # gensim seed; bit-for-bit reproducible only with workers=1
    minn: int = 3  # fastText: shortest character n-gram
    maxn: int = 6  # fastText: longest character n-gram
    # fastText n-gram hash buckets. gensim defaults to 2M, i.e. 800 MB of float32 at 100d shipped
    # in every bundle; 200k keeps ngrams.npy at 80 MB with few collisions for dictionary-size vocabularies.
    bucket: int = 200_000
    compute_loss: bool = True  # word2vec only: gensim reports no loss for fastText

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}: use one of {', '.join(MODELS)}")
        for name in ("dim", "window", "min_count", "epochs", "workers", "minn", "maxn", "bucket"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.max_vocab is not None and self.max_vocab < 1:
            raise ValueError(f"--max-vocab must be a positive integer, got {self.max_vocab!r}")
        if self.negative < 1:
            raise ValueError(f"--negative must be >= 1 (training uses negative sampling), got {self.negative!r}")
        if not 0 <= self.sample < 1:
            raise ValueError(f"--sample must be in [0, 1), got {self.sample!r}")
        if self.minn > self.maxn:
            raise ValueError(f"--minn {self.minn} is larger than --maxn {self.maxn}")

    @property
    def is_fasttext(self) -> bool:
        return self.model.startswith("fasttext")

    @property
    def sg(self) -> int:
        return 0 if self.model in ("cbow", "fasttext-cbow") else 1


@dataclass
class Trained:
    """A trained table, ready for :func:`embserve_trainer.export.export_table`."""

    vectors: np.ndarray  # (count, dim) float32, row i = keys[i]
    keys: list[str]  # most frequent first
    counts: np.ndarray  # (count,) int64 corpus frequencies, descending
    source: dict[str, Any]  # manifest provenance (parameters, seed, corpus sha256, tokenizer...)
    extras: dict[str, Any]  # manifest extras (tokenizer, subword settings)
    ngrams: np.ndarray | None = None  # fastText: (bucket, dim) float32 n-gram vectors
    model: Any = None  # the gensim model (tests and benches compare against it)


class TokenFile:
    """The tokenised corpus on disk as gensim wants it: an iterable of token lists, re-iterable per epoch.

    ``on_words`` (if set) is called with the running word count every :data:`PROGRESS_EVERY` documents:
    gensim's producer thread iterates this, so the count is what has been handed to the workers.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.on_words: Any = None

    def __iter__(self) -> Iterator[list[str]]:
        report, words, pending = self.on_words, 0, 0
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                tokens = line.split()
                if report is not None:
                    words += len(tokens)
                    pending += 1
                    if pending == PROGRESS_EVERY:
                        report(words)
                        words = pending = 0
                yield tokens
        if report is not None and words:
            report(words)


def tokenize_corpus(
    files: list[CorpusFile], tokenizer: Tokenizer, documents: str, out: Path
) -> tuple[Counter[str], int, int, int]:
    """Stream ``files`` through ``tokenizer`` into ``out`` (one document per line).

    Returns:
        (token counts in first-seen order, documents written, tokens, documents that were split).
    """
    counts: Counter[str] = Counter()
    n_docs = n_tokens = n_split = 0
    progress = bar(None, "tokenize", unit="doc")
    try:
        with open(out, "w", encoding="utf-8") as f:
            for i, text in enumerate(iter_documents(files, documents)):
                pieces = 0
                for tokens in tokenizer.chunks(text):
                    counts.update(tokens)
                    f.write(" ".join(tokens))
                    f.write("\n")
                    n_docs += 1
                    n_tokens += len(tokens)
                    pieces += 1
                n_split += pieces > 1
                if i % PROGRESS_EVERY == 0:
                    progress.update(i - progress.n)
                    progress.set_postfix(tokens=n_tokens, refresh=False)
    finally:
        progress.close()
    return counts, n_docs, n_tokens, n_split


class TrainingProgress(CallbackAny2Vec):
    """tqdm bar over words x epochs with the current epoch and (word2vec) the loss of each finished epoch.

    gensim's ``get_latest_training_loss()`` is a running total since ``train()`` began: each job adds
    its pairs' losses to a float32 copy and writes it back, and gensim never resets it per epoch, so
    the total stops growing correctly (additions under half a float32 step vanish) on long runs. The
    epoch's loss is the growth of that total over the epoch; setting the total to 0 at each epoch's
    start gives exactly that growth and keeps the float32 sum as small as it can be. Mid-epoch the bar
    shows the last finished epoch's loss (a partial sum would not compare with anything), and each
    epoch's loss is logged at INFO as it ends.
    """

    def __init__(self, total_words: int, epochs: int, desc: str, track_loss: bool) -> None:
        self.epochs, self.track_loss = epochs, track_loss
        self.epoch = 0
        self.losses: list[float] = []
        self.bar = bar(total_words * epochs, desc, unit="word")

    def words(self, n: int) -> None:
        self.bar.update(n)

    def _postfix(self, refresh: bool) -> None:
        shown = {"epoch": f"{self.epoch}/{self.epochs}"}
        if self.losses:
            shown[f"loss(epoch {len(self.losses)})"] = f"{self.losses[-1]:.4g}"
        self.bar.set_postfix(shown, refresh=refresh)

    def on_epoch_begin(self, model: Any) -> None:
        self.epoch += 1
        if self.track_loss:
            model.running_training_loss = 0.0  # the epoch's loss is this total's growth (class docstring)
        self._postfix(refresh=False)

    def on_epoch_end(self, model: Any) -> None:
        if self.track_loss:
            loss = float(model.get_latest_training_loss())
            self.losses.append(loss)
            logger.info("epoch %d/%d: training loss %.6g", self.epoch, self.epochs, loss)
        self._postfix(refresh=True)

    def close(self) -> None:
        self.bar.close()


def build_model(config: TrainConfig) -> Word2Vec:
    """The untrained gensim model for ``config`` (no corpus yet)."""
    common = dict(
        vector_size=config.dim, window=config.window, min_count=config.min_count,
        max_final_vocab=config.max_vocab, sample=config.sample, negative=config.negative, hs=0,
        ns_exponent=config.ns_exponent, alpha=config.alpha, min_alpha=config.min_alpha, sg=config.sg,
        workers=config.workers, seed=config.seed, epochs=config.epochs,
    )
    if config.is_fasttext:
        return FastText(min_n=config.minn, max_n=config.maxn, bucket=config.bucket, **common)
    return Word2Vec(compute_loss=config.compute_loss, **common)


def open_corpus(
    corpus: Iterable[Path], tokenizer: Tokenizer | None, documents: str
) -> tuple[list[CorpusFile], Tokenizer, str, str, str, dict[str, str]]:
    """What every trainer needs before reading a corpus: its files, tokenizer, document mode and digests.

    Returns:
        (files, tokenizer — the gcide cleaner when a GCIDE dictd file is among the files, else none —,
        document mode, a short description of the files, the combined sha256, sha256 per file).

    Raises:
        ValueError: missing, unreadable or unsupported corpus files.
    """
    files = resolve_corpus(corpus)
    if tokenizer is None:
        gcide = any(f.kind == "dictd" and f.path.name.lower().startswith("gcide") for f in files)
        tokenizer = Tokenizer(cleaner="gcide" if gcide else "none")
    documents = document_mode(files, documents)
    names = ", ".join(str(f.path) for f in files[:3]) + (f" (+{len(files) - 3} more)" if len(files) > 3 else "")
    digest, per_file = corpus_sha256(files)
    return files, tokenizer, documents, names, digest, per_file


def train_table(
    corpus: list[Path],
    config: TrainConfig | None = None,
    *,
    tokenizer: Tokenizer | None = None,
    documents: str = "auto",
    work_dir: Path | None = None,
) -> Trained:
    """Train a table on ``corpus``.

    Args:
        corpus: files and/or directories (plain, .gz, .bz2, .xz, dictd .dict/.dict.dz).
        config: hyper-parameters (default: skip-gram 100d, 5 epochs, window 5, min-count 5).
        tokenizer: tokenisation settings (default: NFKC, lower-case, word tokens; cleaner
            "gcide" when a GCIDE dictd file is in the corpus, else "none").
        documents: "line", "paragraph" or "auto" (paragraphs for dictd, lines otherwise).
        work_dir: where the temporary token file goes (default: the system temp directory).

    Returns:
        The trained table with its manifest provenance.

    Raises:
        ValueError: missing/unreadable/unsupported corpus files, a corpus without tokens, or no token
            reaching ``min_count`` (messages name the files and the fix).
    """
    config = config or TrainConfig()
    files, tokenizer, documents, names, digest, per_file = open_corpus(corpus, tokenizer, documents)

    with tempfile.TemporaryDirectory(prefix="embserve-train-", dir=work_dir) as tmp:
        token_path = Path(tmp) / "tokens.txt"
        counts, n_docs, n_tokens, n_split = tokenize_corpus(files, tokenizer, documents, token_path)
        if n_tokens == 0:
            raise ValueError(
                f"{names}: no tokens found in the corpus; give files that contain text "
                f"(cleaner {tokenizer.cleaner!r}, pattern {tokenizer.pattern!r})"
            )
        logger.info("corpus: %d documents, %d tokens, %d distinct (%d documents split)", n_docs, n_tokens, len(counts), n_split)
        top_word, top_count = counts.most_common(1)[0]
        if top_count < config.min_count:
            raise ValueError(
                f"{names}: no token occurs at least --min-count={config.min_count} times "
                f"(most frequent: {top_word!r} x{top_count}); lower --min-count or add more text"
            )

        model = build_model(config)
        # Counter keeps first-seen order, exactly like gensim's own vocabulary scan.
        model.build_vocab_from_freq(dict(counts), corpus_count=n_docs)
        model.corpus_total_words = n_tokens
        del counts
        tokens = TokenFile(token_path)
        progress = TrainingProgress(n_tokens, config.epochs, f"train {config.model}", config.compute_loss and not config.is_fasttext)
        tokens.on_words = progress.words
        t0 = time.perf_counter()
        try:
            with logs_above_bars():  # each epoch's loss line lands above the bar, not inside it
                effective, raw = model.train(
                    corpus_iterable=tokens, total_examples=n_docs, total_words=n_tokens, epochs=config.epochs,
                    compute_loss=progress.track_loss, callbacks=[progress],
                )
        finally:
            progress.close()
        seconds = time.perf_counter() - t0

    wv = model.wv
    keys = [str(k) for k in wv.index_to_key]
    vectors = np.ascontiguousarray(wv.vectors, dtype=np.float32)  # fastText: already word + n-gram mean
    freq = np.array([wv.get_vecattr(i, "count") for i in range(len(keys))], dtype=np.int64)
    training = {
        "seconds": round(seconds, 3),
        "raw_words": int(raw),
        "effective_words": int(effective),
        "words_per_second": round(raw / seconds, 1) if seconds > 0 else None,
        "epoch_losses": progress.losses or None,
    }
    logger.info("trained %d x %d in %.1f s (%.0f words/s)", *vectors.shape, seconds, raw / max(seconds, 1e-9))
    tok_settings = tokenizer.settings()
    source = {
        "kind": "trained",
        "model": config.model,
        "engine": "gensim",
        "parameters": asdict(config),
        "seed": config.seed,
        "workers": config.workers,
        "input": [str(f.path) for f in files],
        "input_sha256": digest,
        "inputs_sha256": per_file,
        "documents": documents,
        "tokenizer": tok_settings,
        "corpus": {"documents": n_docs, "tokens": n_tokens, "split_documents": n_split, "vocabulary": len(keys)},
        "training": training,
    }
    extras: dict[str, Any] = {"tokenizer": tok_settings, "frequency_ordered": True}
    ngrams = None
    if config.is_fasttext:
        ngrams = np.ascontiguousarray(wv.vectors_ngrams, dtype=np.float32)
        extras["subword"] = {
            "file": NGRAMS, "minn": config.minn, "maxn": config.maxn, "bucket": config.bucket,
            "hash": "fasttext-fnv1a", "combine": "mean",
        }
    return Trained(vectors, keys, freq, source, extras, ngrams, model)

"""Next-token training data: the skip-gram vocabulary, the corpus as token ids, windows and a held-out slice.

The corpus goes through exactly the pipeline skip-gram uses (``train.tokenize_corpus``: the same
streamed files, the same recorded tokenizer) and the vocabulary comes from gensim's own
``build_vocab_from_freq`` with the same ``min_count`` / ``max_vocab``, so both models learn rows for
the same keys in the same (frequency) order. Tokens outside the vocabulary are dropped, as word2vec
drops them; documents are concatenated in corpus order (nanoGPT's ``train.bin``).

The id stream is held as one int32 array (4 bytes a token: GCIDE's 4.5M tokens are 18 MB). Its last
``heldout_fraction`` (at least one window) is the held-out slice whose perplexity is reported; its
token range is recorded in the manifest.

    data = build_data(files, tokenizer, "paragraph", min_count=5, max_vocab=None, context=64, ...)
    data.keys[:3], data.train.shape, data.heldout.shape
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from embserve_format.text import Tokenizer

from embserve_trainer.corpus import CorpusFile
from embserve_trainer.train import TrainConfig, build_model, tokenize_corpus

logger = logging.getLogger(__name__)

HELDOUT_FRACTION = 0.01  # the tail of the id stream kept out of training
MAX_HELDOUT_TOKENS = 200_000  # perplexity over more costs time without changing the figure


@dataclass(frozen=True)
class LMData:
    """The corpus as ids over the skip-gram vocabulary."""

    keys: list[str]  # row i = keys[i], most frequent first
    counts: np.ndarray  # (V,) int64 corpus frequencies
    train: np.ndarray  # (N_train,) int32 ids
    heldout: np.ndarray  # (N_heldout,) int32 ids, the tail of the stream
    documents: int
    tokens: int  # all corpus tokens, before dropping out-of-vocabulary ones
    split_documents: int

    def describe(self) -> dict[str, int]:
        """Counts recorded in the manifest (``source.corpus``)."""
        n_train = len(self.train)
        return {
            "documents": self.documents, "tokens": self.tokens, "split_documents": self.split_documents,
            "vocabulary": len(self.keys), "in_vocabulary_tokens": n_train + len(self.heldout),
            "train_tokens": n_train, "heldout_tokens": len(self.heldout),
            "heldout_start": n_train, "heldout_end": n_train + len(self.heldout),
        }


def skipgram_vocabulary(counts: dict[str, int], n_docs: int, min_count: int, max_vocab: int | None) -> tuple[list[str], np.ndarray]:
    """The vocabulary skip-gram would build from these counts (gensim's own code, so it is the same)."""
    model = build_model(TrainConfig(min_count=min_count, max_vocab=max_vocab, workers=1))
    model.build_vocab_from_freq(counts, corpus_count=n_docs)
    wv = model.wv
    keys = [str(k) for k in wv.index_to_key]
    freq = np.array([wv.get_vecattr(i, "count") for i in range(len(keys))], dtype=np.int64)
    return keys, freq


def encode(token_path: Path, vocab: dict[str, int]) -> np.ndarray:
    """Ids of every in-vocabulary token of the token file, in order (int32, grown chunk by chunk)."""
    chunks: list[np.ndarray] = []
    buf: list[int] = []
    with open(token_path, encoding="utf-8") as f:
        for line in f:
            buf.extend(i for i in map(vocab.get, line.split()) if i is not None)
            if len(buf) >= 1 << 20:
                chunks.append(np.array(buf, dtype=np.int32))
                buf = []
    chunks.append(np.array(buf, dtype=np.int32))
    return np.concatenate(chunks)


def build_data(
    files: list[CorpusFile],
    tokenizer: Tokenizer,
    documents: str,
    *,
    min_count: int,
    max_vocab: int | None,
    context: int,
    names: str,
    work_dir: Path | None = None,
) -> LMData:
    """Tokenise ``files`` like skip-gram does and turn them into training and held-out ids.

    Raises:
        ValueError: no tokens, no token reaching ``min_count``, or too few tokens for one training
            window plus one held-out window of ``context`` tokens (the message names the flag).
    """
    with tempfile.TemporaryDirectory(prefix="embserve-lm-", dir=work_dir) as tmp:
        token_path = Path(tmp) / "tokens.txt"
        counts, n_docs, n_tokens, n_split = tokenize_corpus(files, tokenizer, documents, token_path)
        if n_tokens == 0:
            raise ValueError(f"{names}: no tokens found in the corpus; give files that contain text")
        top_word, top_count = counts.most_common(1)[0]
        if top_count < min_count:
            raise ValueError(
                f"{names}: no token occurs at least --min-count={min_count} times "
                f"(most frequent: {top_word!r} x{top_count}); lower --min-count or add more text"
            )
        keys, freq = skipgram_vocabulary(dict(counts), n_docs, min_count, max_vocab)
        del counts
        ids = encode(token_path, {k: i for i, k in enumerate(keys)})
    # One window needs context + 1 ids (inputs and the shifted targets); training and held-out need one each.
    need = 2 * (context + 1)
    if len(ids) < need:
        raise ValueError(
            f"{names}: corpus too small for --context {context}: {len(ids)} in-vocabulary tokens, "
            f"at least {need} needed (one training and one held-out window); lower --context or add text"
        )
    n_held = min(MAX_HELDOUT_TOKENS, max(context + 1, int(len(ids) * HELDOUT_FRACTION)))
    logger.info("corpus: %d documents, %d tokens, vocabulary %d, %d ids (%d held out)",
                n_docs, n_tokens, len(keys), len(ids), n_held)
    return LMData(keys, freq, ids[:-n_held], ids[-n_held:], n_docs, n_tokens, n_split)


def epoch_windows(n_tokens: int, context: int, seed: int, epoch: int) -> np.ndarray:
    """Start offsets of the non-overlapping training windows of ``epoch``, shuffled.

    Derived from (seed, epoch) alone, so a resumed run rebuilds the same order from its step count.
    Each epoch shifts the window grid by a random phase so boundaries differ between epochs.
    """
    rng = np.random.default_rng([seed, epoch])
    span = context + 1
    phase = int(rng.integers(0, span)) if n_tokens - span >= span else 0
    starts = np.arange(phase, n_tokens - span + 1, span, dtype=np.int64)
    if len(starts) == 0:  # fewer than one window after the phase shift
        starts = np.zeros(1, dtype=np.int64)
    return rng.permutation(starts)


def heldout_windows(n_tokens: int, context: int) -> np.ndarray:
    """Start offsets of the held-out windows: consecutive, non-overlapping, in order."""
    span = context + 1
    return np.arange(0, n_tokens - span + 1, span, dtype=np.int64)

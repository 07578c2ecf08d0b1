"""What `embserve-train train` prints while it trains: each epoch's loss, and gensim's chatter only with -v."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import planted_corpus
from embserve_format.text import Tokenizer
from gensim.models import Word2Vec
from gensim.models.callbacks import CallbackAny2Vec
from gensim.models.word2vec import LineSentence

EPOCHS = 3
EPOCH_LINE = re.compile(r"INFO embserve_trainer\.train: epoch (\d+)/(\d+): training loss (\S+)")


def _train(tmp_path: Path, corpus: Path, *extra: str) -> tuple[str, dict]:
    tables = tmp_path / "tables"
    result = subprocess.run(
        [sys.executable, "-m", "embserve_trainer.cli", *extra, "train", "--corpus", str(corpus), "--tables", str(tables),
         "--name", "planted", "--dim", "16", "--window", "3", "--min-count", "2", "--epochs", str(EPOCHS), "--workers", "1",
         "--seed", "7"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((Path(result.stdout.strip().splitlines()[-1]) / "manifest.json").read_text())
    return result.stderr, manifest


class _Totals(CallbackAny2Vec):
    """gensim's running loss total at each epoch's end, never reset (its own semantics)."""

    def __init__(self) -> None:
        self.totals: list[float] = []

    def on_epoch_end(self, model: Word2Vec) -> None:
        self.totals.append(float(model.get_latest_training_loss()))


def test_each_epochs_loss_is_logged_and_gensims_progress_is_debug(tmp_path: Path) -> None:
    corpus = planted_corpus(tmp_path / "c.txt")
    stderr, manifest = _train(tmp_path, corpus)
    assert not re.search(r" INFO gensim\.", stderr), f"gensim's progress lines reached the default log level:\n{stderr[-2000:]}"
    logged = [(int(e), int(n), float(loss)) for e, n, loss in EPOCH_LINE.findall(stderr)]
    assert [(e, n) for e, n, _ in logged] == [(k, EPOCHS) for k in range(1, EPOCHS + 1)], stderr
    losses = manifest["source"]["training"]["epoch_losses"]
    np.testing.assert_allclose([loss for *_, loss in logged], losses, rtol=1e-5)  # the log shows 6 digits

    # Oracle: plain gensim on the same tokens (one worker: deterministic); an epoch's loss is the growth of
    # gensim's running total over that epoch, not the total itself.
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("".join(" ".join(Tokenizer()(line)) + "\n" for line in corpus.read_text().splitlines()))
    totals = _Totals()
    Word2Vec(sentences=LineSentence(str(tokens)), vector_size=16, window=3, min_count=2, epochs=EPOCHS, workers=1, seed=7,
             sg=1, negative=5, hs=0, sample=1e-3, compute_loss=True, callbacks=[totals])
    growth = np.diff([0.0, *totals.totals])
    np.testing.assert_allclose(losses, growth, rtol=1e-3)  # float32 sums that start from 0 vs from the run's total
    assert losses[-1] < totals.totals[-1] * 0.9  # not the cumulative figure


def test_verbose_shows_gensims_progress(tmp_path: Path) -> None:
    stderr, _ = _train(tmp_path, planted_corpus(tmp_path / "c.txt"), "-v")
    assert re.search(r"INFO gensim\.models\.word2vec: EPOCH \d", stderr), stderr[-2000:]

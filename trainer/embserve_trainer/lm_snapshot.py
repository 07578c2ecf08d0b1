"""Publish a next-token model's input table as a version: held-out perplexity, eval.json, the bundle.

Every snapshot and the final table go through :func:`embserve_trainer.export.export_table` (atomic,
next free version). The manifest's ``source.training`` carries where training stood::

    {"step": 500, "tokens_seen": 2048000, "train_loss": 5.91, "heldout_loss": 5.62,
     "heldout_perplexity": 275.8, "snapshot": true, "final": false, "seconds": 151.2, ...}

Snapshots are cheap on purpose (they must cost < 5% of training time): a Flat index (no HNSW build or
recall tuning; a dictionary's vocabulary is small) and word pairs only in eval.json. The final
version gets the default index and the analogy test too.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from embserve_format.bundle import validate_name

from embserve_trainer.evaluate import evaluate_table
from embserve_trainer.export import export_table
from embserve_trainer.lm_data import LMData, heldout_windows
from embserve_trainer.lm_model import NextTokenModel

logger = logging.getLogger(__name__)

SNAPSHOT_FACTORY = "Flat"


def check_tables_writable(tables: Path, name: str) -> None:
    """Fail before any training if ``tables`` cannot take a new bundle of table ``name``.

    Raises:
        ValueError: an invalid name, or a tables directory that cannot be created or written.
    """
    validate_name(name)
    try:
        tables.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=tables)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"--tables {tables}: cannot write there ({exc.strerror or exc}); "
                         "pass a writable directory") from exc


@torch.no_grad()
def heldout_loss(model: NextTokenModel, ids: np.ndarray, context: int, batch: int, device: torch.device) -> float:
    """Mean NLL (nats per token) of the model on the held-out ids, in consecutive windows."""
    was_training = model.training
    model.eval()
    starts = heldout_windows(len(ids), context)
    total, n = 0.0, 0
    for i in range(0, len(starts), batch):
        xy = torch.from_numpy(np.stack([ids[s : s + context + 1] for s in starts[i : i + batch]]).astype(np.int64)).to(device)
        loss = model.loss(xy[:, :-1], xy[:, 1:])
        tokens = xy[:, 1:].numel()
        total += float(loss) * tokens
        n += tokens
    model.train(was_training)
    return total / max(n, 1)


class Publisher:
    """Publishes the model's current input table as the next version of ``name`` under ``tables``."""

    def __init__(self, tables: Path, name: str, data: LMData, model: NextTokenModel, *, source: dict[str, Any],
                 extras: dict[str, Any], metric: str, factory: str | None, seed: int, evaluate: bool, batch: int,
                 device: torch.device, pooling: str = "auto") -> None:
        self.tables, self.name, self.data, self.model = tables, name, data, model
        self.pooling = pooling  # embserve_trainer.pooling mode: "auto" = SIF from the corpus counts
        self.source, self.extras, self.metric, self.factory = source, extras, metric, factory
        self.seed, self.evaluate, self.batch, self.device = seed, evaluate, batch, device
        self.snapshot_seconds = 0.0

    def publish(self, step: int, tokens_seen: int, train_loss: float | None, seconds: float, *, final: bool,
                history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Evaluate and export the table now. Returns the record (step, losses, version, path...)."""
        t0 = time.perf_counter()
        vectors = self.model.embedding_table().float().cpu().numpy().copy()  # (V, C), detached from training
        loss = heldout_loss(self.model, self.data.heldout, self.model.cfg.context, self.batch, self.device)
        files: dict[str, Any] = {}
        pairs: dict[str, float | None] = {}
        if self.evaluate:
            report = evaluate_table(vectors, self.data.keys, analogies=final)
            files["eval.json"] = json.dumps(report, indent=2, sort_keys=True) + "\n"
            pairs = {k: v.get("spearman") for k, v in report["word_pairs"].items()}
        record: dict[str, Any] = {
            "step": step, "tokens_seen": tokens_seen, "train_loss": train_loss, "heldout_loss": loss,
            "heldout_perplexity": math.exp(min(loss, 700.0)), "seconds": round(seconds, 3),
            "tokens_per_second": round(tokens_seen / seconds, 1) if seconds > 0 else None,
            "snapshot": not final, "final": final, **pairs,
        }
        if final:
            record["snapshot_seconds_total"] = round(self.snapshot_seconds, 3)
            record["history"] = [{k: v for k, v in h.items() if k != "path"} for h in history or []]
        source = {**self.source, "training": record}
        path = export_table(
            self.tables, self.name, vectors, self.data.keys, source=source, metric=self.metric,
            counts=self.data.counts, factory=self.factory if final else SNAPSHOT_FACTORY, extras=self.extras,
            files=files, seed=self.seed, pooling=self.pooling,
        )
        cost = time.perf_counter() - t0
        if not final:
            self.snapshot_seconds += cost
        logger.info("%s step %d: held-out perplexity %.1f, %s -> %s (%.2f s)", "final" if final else "snapshot",
                    step, record["heldout_perplexity"], ", ".join(f"{k} {v:.3f}" for k, v in pairs.items() if v is not None),
                    path, cost)
        return {**record, "version": int(path.name), "path": str(path), "publish_seconds": round(cost, 3)}

"""Learn a table the way a language model does: next-token prediction by gradient descent (PyTorch).

``embserve-train train --model nexttoken`` trains :class:`~embserve_trainer.lm_model.NextTokenModel`
on the same streamed corpus, tokenizer and vocabulary as skip-gram and exports its INPUT embedding
table as a bundle. The stages, one module each (nanoGPT's layout):

- ``lm_config``: the hyper-parameters (no torch: the CLI reads its defaults);
- ``lm_data``: corpus -> skip-gram vocabulary -> int32 ids, shuffled windows per epoch, held-out tail;
- ``lm_model``: the pre-norm causal Transformer with an adaptive softmax head;
- ``lm_checkpoint``: atomic, versioned checkpoints for SIGINT/SIGTERM and ``--resume``;
- ``lm_snapshot``: held-out perplexity, eval.json and publishing a table version (snapshots, final);
- this module: the training loop.

Determinism: on CPU with ``torch.use_deterministic_algorithms(True)``, the data order derived from
(seed, epoch) and the RNG state in the checkpoint, an interrupted-and-resumed run ends with the same
table, bit for bit, as an uninterrupted one.

    result = train_nexttoken([Path("corpus.txt")], LMConfig(dim=128), tables=Path("tables"), name="lm")
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from embserve_format.text import Tokenizer

from embserve_trainer.lm_checkpoint import default_checkpoint, load_checkpoint, save_checkpoint
from embserve_trainer.lm_config import LMConfig
from embserve_trainer.lm_data import LMData, build_data, epoch_windows
from embserve_trainer.lm_model import ModelConfig, NextTokenModel
from embserve_trainer.lm_snapshot import Publisher, check_tables_writable
from embserve_trainer.progress import bar
from embserve_trainer.train import open_corpus

logger = logging.getLogger(__name__)


NOT_COMPARED_ON_RESUME = ("device",)  # may change between runs (a resumed CPU run may move to a GPU)


class Interrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint (``--resume`` continues)."""

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(f"interrupted at step {step}; checkpoint written to {checkpoint}; "
                         "run the same command with --resume to continue")
        self.step, self.checkpoint = step, checkpoint


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device visible to torch; use --device cpu or auto")
    return torch.device(device)


def progress_of(config: LMConfig, step: int, total: int, seconds: float) -> float:
    """How far the run is, 0..1: by steps, or by the clock under ``max_minutes`` if that is further."""
    done = step / max(1, total)
    if config.max_minutes is not None:
        done = max(done, seconds / (60.0 * config.max_minutes))
    return min(1.0, done)


def learning_rate(config: LMConfig, step: int, total: int, seconds: float = 0.0) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at the end (stateless: resumes exactly)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.max_minutes is None:
        progress = min(1.0, (step - config.warmup_steps) / max(1, total - config.warmup_steps))
    else:
        progress = progress_of(config, step, total, seconds)
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (config.lr - floor) * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: NextTokenModel, config: LMConfig) -> torch.optim.AdamW:
    """AdamW; matrices of the blocks and head decay, the input table by ``embedding_decay``, the rest not."""
    if model.cfg.tied:  # the table is the output rows: head shortlist + tail output matrices
        table = [p for n, p in model.named_parameters() if n == "head.head.weight" or
                 (n.startswith("head.tail.") and n.endswith(".1.weight")) or n == "head.weight"]
    else:
        table = [p for n, p in model.named_parameters() if n == "wte.weight"]
    ids = {id(p) for p in table}
    matrices = [p for n, p in model.named_parameters() if p.dim() >= 2 and id(p) not in ids and not n.startswith("wpe.")]
    seen = {id(p) for p in table + matrices}
    rest = [p for p in model.parameters() if id(p) not in seen]
    groups = [
        {"params": table, "weight_decay": config.embedding_decay},
        {"params": matrices, "weight_decay": config.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95))


@contextmanager
def stop_requests() -> Iterator[list[int]]:
    """SIGINT/SIGTERM set a flag (the loop stops at the next step boundary) instead of raising mid-step."""
    flag: list[int] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, _frame: Any) -> None:
        logger.warning("%s received: stopping after this step", signal.Signals(signum).name)
        flag.append(signum)

    for s in previous:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@dataclass
class Schedule:
    steps_per_epoch: int
    total_steps: int


def schedule(data: LMData, config: LMConfig) -> Schedule:
    windows = max(1, (len(data.train) - 1) // (config.context + 1) - 1)  # a phase shift may cost one window
    per_epoch = max(1, windows // config.batch)
    total = per_epoch * config.epochs
    return Schedule(per_epoch, min(total, config.max_steps) if config.max_steps else total)


def batch_at(data: LMData, config: LMConfig, step: int, spe: int, cache: dict[int, np.ndarray]) -> np.ndarray:
    """(B, T+1) ids of optimizer step ``step``: a pure function of (seed, step), hence exact on resume."""
    epoch, i = divmod(step, spe)
    if epoch not in cache:
        cache.clear()
        cache[epoch] = epoch_windows(len(data.train), config.context, config.seed, epoch)
    starts = cache[epoch][i * config.batch : (i + 1) * config.batch]
    return np.stack([data.train[s : s + config.context + 1] for s in starts]).astype(np.int64)


def train_nexttoken(
    corpus: list[Path],
    config: LMConfig,
    *,
    tables: Path,
    name: str,
    tokenizer: Tokenizer | None = None,
    documents: str = "auto",
    snapshot_every: int | None = None,
    resume: bool = False,
    checkpoint: Path | None = None,
    metric: str = "cosine",
    factory: str | None = None,
    pooling: str = "auto",
    evaluate: bool = True,
    work_dir: Path | None = None,
    data: LMData | None = None,
) -> Path:
    """Train the next-token model and publish its input table (plus a version per snapshot).

    Args:
        corpus: files and/or directories, as for skip-gram.
        config: hyper-parameters.
        tables: tables root directory; name: table name.
        tokenizer: as for skip-gram (default: gcide cleaner for GCIDE dictd files, else none).
        documents: "line", "paragraph" or "auto".
        snapshot_every: publish the table every N optimizer steps (and at step 0); None: only the final one.
        resume: continue from ``checkpoint``.
        checkpoint: checkpoint file (default ``<tables>/.checkpoints/<name>.pt``).
        metric, factory: as for every bundle (factory only for the final version; snapshots are Flat).
        pooling: pooling weights mode (embserve_trainer.pooling; "auto": SIF from the corpus counts, "none": plain mean).
        evaluate: write eval.json (WordSim-353, SimLex-999; analogies for the final version).
        work_dir: directory for the temporary token file.
        data: the corpus already encoded by :func:`lm_data.build_data` with these files, tokenizer and
            config (benchmarks share one tokenisation between runs); default: built here.

    Returns:
        The final bundle directory.

    Raises:
        ValueError: bad flags, corpus, tables directory or checkpoint (the message names which).
        Interrupted: SIGINT/SIGTERM; the checkpoint was written first.
    """
    if snapshot_every is not None and (isinstance(snapshot_every, bool) or snapshot_every < 1):
        raise ValueError(f"--snapshot-every must be a positive number of steps, got {snapshot_every!r}")
    check_tables_writable(tables, name)
    checkpoint = checkpoint or default_checkpoint(tables, name)
    device = resolve_device(config.device)
    files, tokenizer, documents, names, digest, per_file = open_corpus(corpus, tokenizer, documents)
    parameters = asdict(config)
    compared = {k: v for k, v in parameters.items() if k not in NOT_COMPARED_ON_RESUME}
    state = load_checkpoint(checkpoint, parameters=compared, corpus_sha256=digest) if resume else None

    data = data or build_data(files, tokenizer, documents, min_count=config.min_count, max_vocab=config.max_vocab,
                      context=config.context, names=names, work_dir=work_dir)
    plan = schedule(data, config)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(config.seed)
    model = NextTokenModel(ModelConfig(vocab_size=len(data.keys), dim=config.dim, layers=config.layers,
                                       heads=config.heads, context=config.context, cutoffs=config.cutoffs,
                                       tied=config.tied)).to(device)
    optimizer = make_optimizer(model, config)
    step = tokens_seen = 0
    loss_sum, loss_n, history, seconds = 0.0, 0, [], 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        step, tokens_seen, seconds = state["step"], state["tokens_seen"], state["seconds"]
        loss_sum, loss_n, history = state["loss_sum"], state["loss_n"], list(state["history"])
        logger.info("resuming %s at step %d/%d", checkpoint, step, plan.total_steps)

    tok = tokenizer.settings()
    source = {
        "kind": "trained", "model": "nexttoken", "engine": "torch", "parameters": parameters, "seed": config.seed,
        "input": [str(f.path) for f in files], "input_sha256": digest, "inputs_sha256": per_file,
        "documents": documents, "tokenizer": tok, "corpus": data.describe(),
        "architecture": {"type": "decoder-only transformer, pre-norm, causal self-attention",
                         "parameters": sum(p.numel() for p in model.parameters()),
                         "head": type(model.head).__name__, "cutoffs": model.cfg.adaptive_cutoffs(),
                         "tied_embeddings": config.tied,
                         "exported": "input table = adaptive softmax output rows" if config.tied else "input embedding (wte)"},
    }
    publisher = Publisher(tables, name, data, model, source=source, extras={"tokenizer": tok, "frequency_ordered": True},
                          metric=metric, factory=factory, seed=config.seed, evaluate=evaluate, batch=config.batch, device=device,
                          pooling=pooling)

    def snapshot_state() -> dict[str, Any]:
        return {"parameters": compared, "corpus_sha256": digest, "step": step, "tokens_seen": tokens_seen,
                "seconds": seconds, "loss_sum": loss_sum, "loss_n": loss_n, "history": history,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}

    tokens_per_step = config.batch * config.context
    progress = bar(plan.total_steps * tokens_per_step, "train nexttoken", unit="tok", initial=step * tokens_per_step)
    cache: dict[int, np.ndarray] = {}
    model.train()
    try:
        with stop_requests() as stop:
            while True:
                if snapshot_every and step % snapshot_every == 0 and step < plan.total_steps and \
                        not any(h["step"] == step for h in history):
                    history.append(publisher.publish(step, tokens_seen, loss_sum / loss_n if loss_n else None,
                                                     seconds, final=False))
                    loss_sum, loss_n = 0.0, 0
                if step >= plan.total_steps or progress_of(config, step, plan.total_steps, seconds) >= 1.0:
                    break
                if stop:
                    save_checkpoint(checkpoint, snapshot_state())
                    raise Interrupted(step, checkpoint)
                t0 = time.perf_counter()
                xy = torch.from_numpy(batch_at(data, config, step, plan.steps_per_epoch, cache)).to(device)
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(config, step, plan.total_steps, seconds)
                loss = model.loss(xy[:, :-1], xy[:, 1:])  # inputs (B, T), targets shifted by one (B, T)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                value = float(loss.item())
                if not math.isfinite(value):
                    raise ValueError(f"training diverged at step {step} (loss {value}); lower --lr (now {config.lr})")
                step += 1
                tokens_seen += tokens_per_step
                loss_sum, loss_n = loss_sum + value, loss_n + 1
                seconds += time.perf_counter() - t0
                progress.update(tokens_per_step)
                progress.set_postfix(step=f"{step}/{plan.total_steps}", loss=f"{value:.3f}", refresh=False)
    finally:
        progress.close()
    path = publisher.publish(step, tokens_seen, loss_sum / loss_n if loss_n else None, seconds, final=True,
                             history=history)["path"]
    checkpoint.unlink(missing_ok=True)  # the run is complete: its final table is published
    return Path(path)

"""Checkpoints of a next-token run: written atomically, versioned, loaded without arbitrary pickles.

A checkpoint holds everything a resumed run needs to continue exactly where the interrupted one
stopped: model and optimizer state, the step (the data position is derived from it, see
``lm_data.epoch_windows``), torch's RNG state, the running loss and the snapshot history, plus the
run's parameters and corpus digest so ``--resume`` refuses a checkpoint of a different run.

It is written next to the tables (``<tables>/.checkpoints/<name>.pt``: hidden, so servers ignore it)
through a temporary file, fsync and ``os.replace``: a crash leaves the previous checkpoint or the
new one, never half of one. ``torch.load(weights_only=True)`` reads only tensors and plain
containers, so a checkpoint cannot run code.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from embserve_format.bundle_writer import write_atomically

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "embserve-lm-checkpoint/1"
CHECKPOINT_DIR = ".checkpoints"


def default_checkpoint(tables_dir: Path, name: str) -> Path:
    return Path(tables_dir) / CHECKPOINT_DIR / f"{name}.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (plus the format header) to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda f: torch.save({"format": CHECKPOINT_FORMAT, **state}, f))
    logger.info("checkpoint written: %s (step %d)", path, state.get("step", -1))


def load_checkpoint(path: Path, *, parameters: dict[str, Any], corpus_sha256: str) -> dict[str, Any]:
    """Read a checkpoint and check it belongs to this run.

    Args:
        path: the checkpoint file.
        parameters: this run's parameters (``asdict(LMConfig)``); they must equal the checkpoint's.
        corpus_sha256: this run's corpus digest; it must equal the checkpoint's.

    Raises:
        ValueError: no checkpoint, an unreadable or foreign file, or a checkpoint of another run
            (the message names the differing flag).
    """
    if not path.is_file():
        raise ValueError(f"--resume: no checkpoint at {path}; start without --resume (or pass --checkpoint PATH)")
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt/foreign file
        raise ValueError(f"{path}: not a readable embserve checkpoint ({exc}); delete it and start again") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: checkpoint format {found!r}, expected {CHECKPOINT_FORMAT!r}")
    if state["corpus_sha256"] != corpus_sha256:
        raise ValueError(f"--resume: {path} was trained on another corpus (sha256 {state['corpus_sha256'][:12]}…); "
                         "pass the same --corpus files")
    saved = state["parameters"]
    for key in sorted(set(saved) | set(parameters)):
        if _norm(saved.get(key)) != _norm(parameters.get(key)):
            raise ValueError(f"--resume: --{key.replace('_', '-')} is {parameters.get(key)!r} but the checkpoint "
                             f"{path} was trained with {saved.get(key)!r}; pass the same value")
    return state


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value

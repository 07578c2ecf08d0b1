"""The next-token run's hyper-parameters: one frozen block, importable without torch.

``cli`` takes its flag defaults from here, so ``embserve-train train --help`` and the without-torch
error work on an install without the ``[lm]`` extra; ``lm`` (which needs torch) trains with it.
"""

from __future__ import annotations

from dataclasses import dataclass

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class LMConfig:
    """Every hyper-parameter of a next-token run, recorded in the manifest as ``source.parameters``."""

    dim: int = 128  # model width = vector size of the exported table
    layers: int = 2
    heads: int = 4
    context: int = 64  # tokens per training window
    batch: int = 64  # windows per optimizer step
    epochs: int = 1  # passes over the training windows (the schedule's length unless max_steps is set)
    max_steps: int | None = None  # stop (and end the schedule) after this many steps
    # Stop (and end the schedule) after this much training time, whichever of the limits comes first.
    # The schedule then follows the clock: such a run is not reproducible bit for bit.
    max_minutes: float | None = None
    lr: float = 3e-3  # AdamW peak learning rate
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 200  # linear warm-up
    weight_decay: float = 0.1  # on matrices of the blocks and the head only
    embedding_decay: float = 0.0  # on the input table: decay shrinks rarely-updated rows toward zero
    min_count: int = 5
    max_vocab: int | None = None
    cutoffs: tuple[int, ...] = (2_000, 10_000)
    tied: bool = False  # input table = the adaptive softmax's output rows (see lm_model)
    seed: int = 1
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("dim", "layers", "heads", "context", "batch", "epochs", "min_count", "warmup_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "warmup_steps" else 1):
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"--max-minutes must be positive, got {self.max_minutes!r}")
        for name in ("max_steps", "max_vocab"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.dim % self.heads:
            raise ValueError(f"--dim {self.dim} must be a multiple of --heads {self.heads}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be positive, got {self.lr!r}")
        if self.device not in DEVICES:
            raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")

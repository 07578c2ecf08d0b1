"""A small decoder-only Transformer (nanoGPT's shape: pre-norm blocks, causal self-attention) whose
output is PyTorch's adaptive softmax over a word vocabulary.

Input and output embeddings are untied by default: ``wte`` is learnt only through what the blocks
need from each input word, and ``nn.AdaptiveLogSoftmaxWithLoss`` owns its own output matrices.
With ``tied=True`` there is no ``wte``: the adaptive softmax runs with ``div_value=1`` so every
cluster's output matrix is full width, and the input table IS those matrices stacked in id order
(head shortlist rows, then each tail cluster's rows). Every row then also learns as an output
vector of the words it predicts, which is word2vec's signal. Either way the exported table is
the input table the model reads.

    model = NextTokenModel(ModelConfig(vocab_size=40_000, dim=128, layers=2, heads=4, context=64))
    out = model(idx, targets)   # idx, targets: (B, T) int64 -> out.loss (mean NLL per token)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    dim: int = 128  # width of the model = vector size of the exported table
    layers: int = 2
    heads: int = 4
    context: int = 64  # tokens a prediction may look back on
    mlp_ratio: int = 4
    dropout: float = 0.0  # none by default: runs are short and dropout would draw RNG inside forward
    cutoffs: tuple[int, ...] = (2_000, 10_000)  # adaptive softmax clusters (frequency-ordered ids)
    div_value: float = 4.0  # each tail cluster is div_value times narrower than the previous one (untied)
    tied: bool = False  # input table = the adaptive softmax's output rows (forces div_value 1)

    def adaptive_cutoffs(self) -> list[int]:
        """The cutoffs that fit this vocabulary (AdaptiveLogSoftmaxWithLoss needs 0 < c < vocab_size)."""
        return [c for c in self.cutoffs if 0 < c < self.vocab_size]


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # each (B, T, C)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))  # (B, h, T, C/h)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    """Pre-norm: x + attn(ln(x)), then x + mlp(ln(x)) (GPT-2 / nanoGPT)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.dim)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.dim)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.dim, cfg.mlp_ratio * cfg.dim), nn.GELU(), nn.Linear(cfg.mlp_ratio * cfg.dim, cfg.dim),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NextTokenModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.dim % cfg.heads:
            raise ValueError(f"--dim {cfg.dim} must be a multiple of --heads {cfg.heads}")
        self.cfg = cfg
        if not cfg.tied:
            self.wte = nn.Embedding(cfg.vocab_size, cfg.dim)  # the table we serve
        self.wpe = nn.Embedding(cfg.context, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.dim)
        cutoffs = cfg.adaptive_cutoffs()
        if cutoffs:
            self.head: nn.Module = nn.AdaptiveLogSoftmaxWithLoss(
                cfg.dim, cfg.vocab_size, cutoffs, div_value=1.0 if cfg.tied else cfg.div_value)
        else:  # a vocabulary smaller than the first cutoff: a plain softmax is cheaper and the same thing
            self.head = nn.Linear(cfg.dim, cfg.vocab_size)
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled down by depth so the residual stream starts near unit size.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, C) final hidden states."""
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)
        x = F.embedding(idx, self.input_table()) + self.wpe(pos)  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood (nats) per target token."""
        h = self.hidden(idx).reshape(-1, self.cfg.dim)  # (B*T, C)
        flat = targets.reshape(-1)
        if isinstance(self.head, nn.AdaptiveLogSoftmaxWithLoss):
            return self.head(h, flat).loss
        return F.cross_entropy(self.head(h), flat)

    def input_table(self) -> torch.Tensor:
        """The (V, C) rows the model reads its input from (row i = token id i)."""
        if not self.cfg.tied:
            return self.wte.weight
        if isinstance(self.head, nn.Linear):
            return self.head.weight
        head = cast(nn.AdaptiveLogSoftmaxWithLoss, self.head)
        # head.head: (shortlist + n_clusters, C); its first `shortlist` rows are words, the rest cluster logits.
        parts = [head.head.weight[: head.shortlist_size]] + [tail[1].weight for tail in head.tail]  # type: ignore[index]
        return torch.cat(parts, dim=0)

    def embedding_table(self) -> torch.Tensor:
        """The input embedding rows, (V, C), detached."""
        return self.input_table().detach()

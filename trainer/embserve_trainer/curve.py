"""``embserve-train curve``: how a table formed, read back from its versions (snapshots of one run).

Each snapshot version of a next-token run records in its manifest (``source.training``) the step,
tokens seen, training loss and held-out perplexity, and in eval.json its WordSim-353 / SimLex-999
Spearman rho. This module collects them across versions and draws four panels with matplotlib
(imported only here, only when a curve is drawn).

    points = read_curve(Path("tables"), "gcide-lm")   # [CurvePoint(version=1, step=0, ...), ...]
    plot_curve(points, "gcide-lm", Path("curve.png"))
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from embserve_format.bundle import bundle_path, list_versions, read_manifest

logger = logging.getLogger(__name__)

EVAL_FILE = "eval.json"


@dataclass(frozen=True)
class CurvePoint:
    version: int
    step: int
    tokens_seen: int
    train_loss: float | None
    heldout_perplexity: float | None
    wordsim353: float | None
    simlex999: float | None


def read_curve(tables: Path, name: str) -> list[CurvePoint]:
    """The training points of the newest run of table ``name`` (versions whose manifest records a step).

    A run's versions have increasing steps; a step that does not increase starts a new run, and only
    the newest run is returned.

    Raises:
        ValueError: no such table, or no version with training steps (not a next-token run).
    """
    versions = list_versions(tables, name)
    if not versions:
        raise ValueError(f"--tables {tables}: no versions of table {name!r}; check the table name and --tables")
    runs: list[list[CurvePoint]] = []
    for v in versions:
        path = bundle_path(tables, name, v)
        training = (read_manifest(path).get("source") or {}).get("training") or {}
        if "step" not in training or "heldout_perplexity" not in training:
            continue
        pairs: dict[str, float | None] = {}
        if (path / EVAL_FILE).is_file():
            report = json.loads((path / EVAL_FILE).read_text(encoding="utf-8"))
            pairs = {k: r.get("spearman") for k, r in report.get("word_pairs", {}).items()}
        point = CurvePoint(v, int(training["step"]), int(training["tokens_seen"]), training.get("train_loss"),
                           training.get("heldout_perplexity"), pairs.get("wordsim353"), pairs.get("simlex999"))
        if not runs or point.step <= runs[-1][-1].step:
            runs.append([])
        runs[-1].append(point)
    if not runs:
        raise ValueError(f"table {name!r} in {tables} has no versions with training steps: "
                         "curve needs the snapshots of an `embserve-train train --model nexttoken` run")
    return runs[-1]


def plot_curve(points: list[CurvePoint], name: str, out: Path) -> Path:
    """Draw loss, held-out perplexity, WordSim-353 and SimLex-999 against the step; write ``out`` (PNG/SVG/PDF).

    Raises:
        ValueError: matplotlib missing, or ``out`` cannot be written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ValueError(f"curve needs matplotlib ({exc}): pip install matplotlib") from exc
    steps = [p.step for p in points]
    panels = [
        ("training loss (nats/token)", [p.train_loss for p in points], False),
        ("held-out perplexity", [p.heldout_perplexity for p in points], True),
        ("WordSim-353 Spearman ρ", [p.wordsim353 for p in points], False),
        ("SimLex-999 Spearman ρ", [p.simlex999 for p in points], False),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    for ax, (title, values, log) in zip(axes.flat, panels, strict=True):
        xs = [s for s, v in zip(steps, values, strict=True) if v is not None]
        ys = [v for v in values if v is not None]
        ax.plot(xs, ys, marker="o", markersize=3)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if log and ys:
            ax.set_yscale("log")
        if not ys:  # e.g. a toy vocabulary that covers no test pair
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
    for ax in axes[1]:
        ax.set_xlabel("optimizer step")
    last = points[-1]
    fig.suptitle(f"{name}: versions {points[0].version}-{last.version}, {last.tokens_seen:,} tokens seen")
    fig.tight_layout()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    except OSError as exc:
        raise ValueError(f"--out {out}: cannot write the picture ({exc.strerror or exc})") from exc
    finally:
        plt.close(fig)
    return out

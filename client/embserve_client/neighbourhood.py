"""Neighbourhood maps from a server: :func:`fetch_map` over gRPC and :func:`draw_map` with matplotlib.

The layout itself is the format core's :mod:`embserve_format.maplayout` (shared with the server's
explorer); matplotlib is imported only when drawing (the client's ``map`` extra).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from embserve_format.maplayout import DEFAULT_SECOND, DEFAULT_TOPN, MapPoint, NeighbourhoodMap, build_map

if TYPE_CHECKING:
    from embserve_client.client import Client

__all__ = ["check_drawable", "draw_map", "fetch_map"]

MAP_EXTRA_HINT = "pip install 'embserve-client[map]'"


def fetch_map(
    client: Client,
    key: str,
    *,
    table: str | None = None,
    topn: int = DEFAULT_TOPN,
    second: int = DEFAULT_SECOND,
    method: str = "pca",
) -> NeighbourhoodMap:
    """:func:`build_map` over gRPC: Search for the neighbours, Lookup (normalised) for the vectors.

    Raises:
        UnknownKeyError, UnknownTableError, InvalidArgumentError: as the server answers.
    """
    seen: dict[str, Any] = {}

    def search(keys: Sequence[str], n: int) -> list[list[tuple[str, float]]]:
        result = client.search([client.query(k) for k in keys], table=table, topn=n)
        seen.update(table=result.table, version=result.version)
        return [[(nb.key, nb.score) for nb in row] for row in result.neighbors()]

    def vectors(keys: Sequence[str]) -> np.ndarray:
        return client.get_vectors(list(keys), table=table, normalize=True)

    nmap = build_map(key, search, vectors, topn=topn, second=second, method=method)
    return replace(nmap, table=seen.get("table", ""), version=seen.get("version", 0))


# Colours shared in spirit with the explorer's CSS: centre, neighbours, second ring.
COLOURS = {"centre": "#d62728", "neighbour": "#1f77b4", "second": "#9aa5b1"}


def check_drawable(out: str | Path) -> Path:
    """Fail early (before any server call) when ``out`` cannot be drawn: bad suffix, no matplotlib.

    Raises:
        ValueError: unsupported file suffix.
        ImportError: matplotlib is not installed (the message names the extra to install).
    """
    path = Path(out)
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ValueError(f"out: {str(path)!r} should end in .png, .svg or .pdf")
    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError(f"drawing a map needs matplotlib: {MAP_EXTRA_HINT}")
    return path


def draw_map(nmap: NeighbourhoodMap, out: str | Path, *, size: tuple[float, float] = (9.0, 7.0), dpi: int = 120) -> Path:
    """Draw ``nmap`` to an image file (format from the suffix: .png, .svg, .pdf) with matplotlib.

    Raises:
        ImportError: matplotlib is not installed (message says which extra to install).
        ValueError: unsupported file suffix.
    """
    path = check_drawable(out)
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    by_key = {p.key: p for p in nmap.points}
    style: dict[str, tuple[float, float]] = {"centre": (110, 12), "neighbour": (46, 9.5), "second": (16, 7.5)}  # dot area pt^2, font pt
    with plt.rc_context({"svg.fonttype": "none"}):  # SVG keeps text as text
        fig, ax = plt.subplots(figsize=size, dpi=dpi)
        try:
            for a, b, _ in sorted(nmap.edges, key=lambda e: e[0] == nmap.key):  # the key's edges on top
                pa, pb = by_key[a], by_key[b]
                strong = a == nmap.key
                ax.plot([pa.x, pb.x], [pa.y, pb.y], color="#7fb0d8" if strong else "#d5dbe1", lw=1.1 if strong else 0.6, zorder=1)
            for role in ("second", "neighbour", "centre"):
                pts = [p for p in nmap.points if p.role == role]
                ax.scatter([p.x for p in pts], [p.y for p in pts], s=style[role][0], color=COLOURS[role], zorder=2, edgecolors="white", linewidths=0.7)
            where = f"{nmap.table} v{nmap.version}  " if nmap.table else ""
            var = f" ({nmap.explained[0]:.0%} + {nmap.explained[1]:.0%} of the variance)" if nmap.explained else ""
            ax.set_title(f"neighbourhood of {nmap.key!r}   {where}{nmap.method.upper()}{var}", fontsize=11, color="#1f2328")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color("#d0d7de")
            fig.tight_layout()
            _fit_equal(ax, [p.x for p in nmap.points], [p.y for p in nmap.points])
            _label_points(ax, nmap, style, dpi)
            fig.savefig(path, dpi=dpi, facecolor="white")
        finally:
            plt.close(fig)
    return path


def _fit_equal(ax: Any, xs: list[float], ys: list[float]) -> None:
    """Limits that hold every point (plus room for labels) at ONE scale for x and y, grown along
    one axis to the axes' own shape so the whole frame is used and distances stay honest."""
    span = max(max(xs) - min(xs), max(ys) - min(ys), 1e-6)
    x0, x1 = min(xs) - 0.05 * span, max(xs) + 0.16 * span  # labels sit right of their dots
    y0, y1 = min(ys) - 0.06 * span, max(ys) + 0.06 * span
    box = ax.get_window_extent()
    want = box.width / box.height  # x units per y unit on screen must be 1
    if (x1 - x0) / (y1 - y0) < want:
        grow = (want * (y1 - y0) - (x1 - x0)) / 2
        x0, x1 = x0 - grow, x1 + grow
    else:
        grow = ((x1 - x0) / want - (y1 - y0)) / 2
        y0, y1 = y0 - grow, y1 + grow
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)


def _label_points(ax: Any, nmap: NeighbourhoodMap, style: dict[str, tuple[float, float]], dpi: int) -> None:
    """Greedy labels: the key, neighbours by rank, then the rest; each tries four sides of its dot
    and a second-ring label that fits nowhere is left out (the explorer shows it on hover)."""
    px = dpi / 72.0  # pixels per point
    xy = ax.transData.transform([(p.x, p.y) for p in nmap.points])  # (n, 2) display pixels
    radii = [np.sqrt(style[p.role][0] / np.pi) * px + 1 for p in nmap.points]  # scatter sizes are areas in pt^2
    taken = [(x - r, y - r, x + r, y + r) for (x, y), r in zip(xy, radii)]  # the dots
    order = sorted(range(len(nmap.points)), key=lambda i: _priority(nmap.points[i]))
    sides = ((5, 1, "left", "bottom"), (-5, 1, "right", "bottom"), (0, 5, "center", "bottom"), (0, -5, "center", "top"))
    for i in order:
        p = nmap.points[i]
        font = style[p.role][1]
        label = f"{p.key} {p.similarity:.2f}" if p.role == "neighbour" else p.key
        w, h = len(label) * font * 0.6 * px, font * 1.15 * px
        tries = []
        for dx, dy, ha, va in sides:
            x0 = xy[i, 0] + dx * px - (w if ha == "right" else w / 2 if ha == "center" else 0)
            y0 = xy[i, 1] + dy * px - (h if va == "top" else 0)
            box = (x0, y0, x0 + w, y0 + h)
            hits = sum(box[0] < t[2] and box[2] > t[0] and box[1] < t[3] and box[3] > t[1] for j, t in enumerate(taken) if j != i)
            tries.append((hits, dx, dy, ha, va, box))
            if not hits:
                break
        hits, dx, dy, ha, va, box = min(tries, key=lambda t: t[0])  # first free side, else least crowded
        if hits and p.role == "second":
            continue
        taken.append(box)
        ax.annotate(
            label, (p.x, p.y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, fontsize=font, zorder=3,
            color="#6b7785" if p.role == "second" else "#111111", weight="bold" if p.role == "centre" else "normal",
        )


def _priority(p: MapPoint) -> float:
    return 0.0 if p.role == "centre" else float(p.rank) if p.role == "neighbour" else 1000.0 - p.similarity

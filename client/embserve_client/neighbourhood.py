"""A key's neighbourhood as a 2-D map: the key, its neighbours and their neighbours, laid out flat.

The one implementation of the map, shared by ``embserve map`` (which feeds it gRPC calls) and the
server's web explorer (which feeds it the query core directly)::

    nmap = build_map("cat", search, vectors, topn=10, second=5)   # search/vectors: callables
    nmap.points[0]   # MapPoint(key='cat', x=0.0, y=0.0, role='centre', ...)

Layout: PCA (numpy SVD) of the unit-normalised vectors, translated so the centre key sits at
(0, 0) and scaled so the farthest point is at distance 1. t-SNE (scikit-learn) and UMAP (umap-learn)
are offered only where those packages are installed. Only numpy is imported at module level;
:func:`draw_map` imports matplotlib (the client's ``map`` extra) when called.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embserve_client.wire import unit

if TYPE_CHECKING:
    from embserve_client.client import Client

__all__ = ["MapPoint", "NeighbourhoodMap", "align", "available_methods", "build_map", "check_drawable", "draw_map", "fetch_map", "pca_2d"]

DEFAULT_TOPN = 10  # neighbours of the key
DEFAULT_SECOND = 5  # neighbours of each neighbour (0 = none)
METHODS = ("pca", "tsne", "umap")
_OPTIONAL = {"tsne": "sklearn", "umap": "umap"}  # method -> module that provides it
MAP_EXTRA_HINT = "pip install 'embserve-client[map]'"

# search(keys, topn) -> per key, its (neighbour, score) list, best first, the key itself excluded.
SearchFn = Callable[[Sequence[str], int], list[list[tuple[str, float]]]]
# vectors(keys) -> (len(keys), dim) float32 rows, in order.
VectorsFn = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class MapPoint:
    key: str
    x: float
    y: float
    role: str  # "centre", "neighbour" (of the key) or "second" (neighbour of a neighbour)
    similarity: float  # cosine similarity to the centre key
    rank: int = 0  # 1-based rank among the key's neighbours; 0 for other points
    score: float | None = None  # the search score of a neighbour (the table's metric)
    via: str = ""  # for "second" points: the neighbour that brought it in


@dataclass(frozen=True)
class NeighbourhoodMap:
    key: str
    method: str
    points: list[MapPoint]
    edges: list[tuple[str, str, float]]  # (from, to, search score): key->neighbour, neighbour->its own
    explained: list[float] = field(default_factory=list)  # PCA: variance ratio of x and y
    table: str = ""
    version: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the explorer's ``/api/map`` answer)."""
        out = asdict(self)
        out["edges"] = [{"source": a, "target": b, "score": s} for a, b, s in self.edges]
        return out


def available_methods() -> list[str]:
    """Layout methods usable here: "pca" always, "tsne"/"umap" when their package is installed."""
    return ["pca"] + [m for m, mod in _OPTIONAL.items() if importlib.util.find_spec(mod) is not None]


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Project rows onto their first two principal components.

    Args:
        x: (n, d) array.

    Returns:
        ((n, 2) float64 coordinates, [variance ratio of component 1, of component 2]). Components a
        degenerate input lacks (n < 3, d < 2) are zeros. Signs are fixed (largest loading positive)
        so the same input always gives the same picture.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    out = np.zeros((n, 2))
    if n < 2:
        return out, [0.0, 0.0]
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)  # vt: (min(n, d), d)
    k = min(2, vt.shape[0])
    comps = vt[:k]
    signs = np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    out[:, :k] = centred @ comps.T
    var = s**2
    total = float(var.sum())
    ratios = [float(var[i] / total) if total > 0 and i < k else 0.0 for i in range(2)]
    return out, ratios


def _layout(unit_rows: np.ndarray, method: str) -> tuple[np.ndarray, list[float]]:
    n = len(unit_rows)
    if method == "pca" or n < 5:  # t-SNE/UMAP need a handful of points; PCA is exact for few
        return pca_2d(unit_rows)
    if method == "tsne":
        from sklearn.manifold import TSNE

        tsne = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", metric="cosine", random_state=0)
        return np.asarray(tsne.fit_transform(unit_rows), dtype=np.float64), []
    import umap

    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), metric="cosine", random_state=0)
    return np.asarray(reducer.fit_transform(unit_rows), dtype=np.float64), []


def build_map(
    key: str,
    search: SearchFn,
    vectors: VectorsFn,
    *,
    topn: int = DEFAULT_TOPN,
    second: int = DEFAULT_SECOND,
    method: str = "pca",
    table: str = "",
    version: int = 0,
) -> NeighbourhoodMap:
    """The map of ``key``: its ``topn`` neighbours and each neighbour's ``second`` neighbours.

    Two searches (the key; then all neighbours in one batch) and one vector lookup.

    Raises:
        ValueError: ``method`` unknown or not installed, ``topn`` < 1 or ``second`` < 0. Errors of
        ``search``/``vectors`` (unknown key, limits) pass through unchanged.
    """
    if method not in available_methods():
        raise ValueError(f"method: {method!r} is not available here (available: {', '.join(available_methods())})")
    if topn < 1:
        raise ValueError(f"topn: {topn} must be positive")
    if second < 0:
        raise ValueError(f"second: {second} must not be negative")
    first = search([key], topn)[0]
    ring2 = search([k for k, _ in first], second) if (second and first) else [[] for _ in first]
    keys: dict[str, None] = dict.fromkeys([key, *(k for k, _ in first)])  # ordered set
    via: dict[str, str] = {}
    for (parent, _), row in zip(first, ring2):
        for k, _ in row:
            if k not in keys:
                keys[k] = None
                via[k] = parent
    order = list(keys)
    unit_rows = unit(np.asarray(vectors(order), dtype=np.float64))  # (n, dim)
    xy, explained = _layout(unit_rows, method)
    xy = xy - xy[0]  # the key at the origin
    radius = float(np.linalg.norm(xy, axis=1).max())
    if radius > 0:
        xy /= radius
    sims = unit_rows @ unit_rows[0]
    rank = {k: i for i, (k, _) in enumerate(first, 1)}
    scores = dict(first)
    points = [
        MapPoint(
            key=k,
            x=round(float(xy[i, 0]), 6),
            y=round(float(xy[i, 1]), 6),
            role="centre" if i == 0 else ("neighbour" if k in rank else "second"),
            similarity=round(float(sims[i]), 6),
            rank=rank.get(k, 0),
            score=None if k not in scores else float(scores[k]),
            via=via.get(k, ""),
        )
        for i, k in enumerate(order)
    ]
    edges = [(key, k, float(s)) for k, s in first]
    # Neighbour -> its own neighbours, except back to the key (that edge is already drawn).
    edges += [(parent, k, float(s)) for (parent, _), row in zip(first, ring2) for k, s in row if k not in (parent, key)]
    return NeighbourhoodMap(key=key, method=method, points=points, edges=edges, explained=explained, table=table, version=version)


def align(nmap: NeighbourhoodMap, reference: NeighbourhoodMap) -> NeighbourhoodMap:
    """``nmap`` rotated (or reflected) to best match ``reference`` on the keys both show.

    Orthogonal Procrustes: the 2x2 orthogonal R minimising ||A R - B|| over the shared points
    (A in ``nmap``, B in ``reference``) is U V^T of the SVD of A^T B. Both maps have their key at
    the origin and radius 1, and R keeps distances, so only the picture's orientation changes:
    consecutive snapshots of a training run then show points moving rather than the whole map
    flipping. Fewer than two shared points leave ``nmap`` as it is.
    """
    ref = {p.key: (p.x, p.y) for p in reference.points}
    shared = [(p.x, p.y, *ref[p.key]) for p in nmap.points if p.key in ref]
    if len(shared) < 2:
        return nmap
    pairs = np.asarray(shared, dtype=np.float64)  # (m, 4): x, y in nmap, then in reference
    u, _, vt = np.linalg.svd(pairs[:, :2].T @ pairs[:, 2:])
    rot = u @ vt
    xy = np.asarray([(p.x, p.y) for p in nmap.points], dtype=np.float64) @ rot
    points = [replace(p, x=round(float(x), 6), y=round(float(y), 6)) for p, (x, y) in zip(nmap.points, xy)]
    return replace(nmap, points=points)


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

"""A key's neighbourhood as a 2-D map: the key, its neighbours and their neighbours, laid out flat.

The one implementation of the map's layout, shared by ``embserve map`` (the client feeds it gRPC
calls: :mod:`embserve_client.neighbourhood`) and the server's web explorer (which feeds it the query
core directly)::

    nmap = build_map("cat", search, vectors, topn=10, second=5)   # search/vectors: callables
    nmap.points[0]   # MapPoint(key='cat', x=0.0, y=0.0, role='centre', ...)

Layout: PCA (numpy SVD) of the unit-normalised vectors, translated so the centre key sits at
(0, 0) and scaled so the farthest point is at distance 1. t-SNE (scikit-learn) and UMAP (umap-learn)
are offered only where those packages are installed. numpy only.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from embserve_format.arrays import unit

__all__ = ["DEFAULT_SECOND", "DEFAULT_TOPN", "METHODS", "MapPoint", "NeighbourhoodMap", "align", "available_methods", "build_map", "pca_2d"]

DEFAULT_TOPN = 10  # neighbours of the key
DEFAULT_SECOND = 5  # neighbours of each neighbour (0 = none)
METHODS = ("pca", "tsne", "umap")
_OPTIONAL = {"tsne": "sklearn", "umap": "umap"}  # method -> module that provides it

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



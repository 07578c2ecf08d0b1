"""The web explorer ("map of meaning"): a small JSON API over the query core, plus its static page.

Endpoints (GET, answered by :meth:`Explorer.api`; served by :mod:`embserve_server.http_port`)::

    /api/tables                                   tables, default table, layout methods, limits
    /api/neighbors?key=cat[&table=&topn=&exact=]  nearest neighbours (same as gRPC Search)
    /api/analogy?a=king&b=man&c=woman[&table=&topn=&exact=]   a - b + c
    /api/map?key=cat[&table=&topn=&second=&method=]           2-D neighbourhood map
    /api/map?text=a+sentence[&table=...]                      the same around a sentence's Embed vector
    /api/timeline?key=cat[&table=&topn=&second=]              neighbours + map in every loaded version

``neighbors``, ``analogy`` and ``map`` also take ``version=`` (a loaded version; default the newest).

Every answer goes through the code the gRPC servicer uses: ``TableRegistry.get``, then
:func:`embserve_server.query.search` / :func:`~embserve_server.query.lookup` with the server's
:class:`Limits`. The map itself is :func:`embserve_format.maplayout.build_map`, the same code
``embserve map`` runs on gRPC results. Errors become JSON ``{"error": message, "code": name}``
with an HTTP status, both from the one map (:func:`embserve_server.errors.http_error`), which the
HTTP port's own refusals (no token 401, admission 429, connection cap 503) go through too.
Tokens, TLS and admission are the HTTP port's business (http_port.py), not this module's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np
from embserve_format import maplayout

from embserve_server import embed, query, tokenizer_table
from embserve_server.config import Limits
from embserve_server.errors import EndpointNotFoundError, http_error
from embserve_server.tables import Table, TableRegistry
from embserve_server.validate import check_keys, check_limit

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
INDEX_PAGE = "index.html"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
DEFAULT_MAP_TOPN = maplayout.DEFAULT_TOPN
DEFAULT_MAP_SECOND = maplayout.DEFAULT_SECOND
MAX_MAP_TOPN = 100  # neighbours on a map; with MAX_MAP_SECOND at most 100 * 21 points
MAX_MAP_SECOND = 20
TIMELINE_FIELDS = ("step", "train_loss", "heldout_perplexity", "wordsim353")  # shown next to each snapshot

Params = dict[str, list[str]]
Answer = tuple[int, dict[str, Any]]  # (HTTP status, JSON body)


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str


class Explorer:
    """The explorer's API and static files over a :class:`TableRegistry`.

    Args:
        registry: the tables the gRPC server serves.
        limits: the gRPC server's request limits (topn, key length, queries per search...).
        max_map_topn / max_map_second: how large a map may be (its points cost a PCA).
    """

    def __init__(
        self,
        registry: TableRegistry,
        limits: Limits,
        *,
        max_map_topn: int = MAX_MAP_TOPN,
        max_map_second: int = MAX_MAP_SECOND,
        static_dir: Path = STATIC_DIR,
    ) -> None:
        self.registry = registry
        self.limits = limits
        self.max_map_topn = max_map_topn
        self.max_map_second = max_map_second
        # Read once: only these names are ever served (no path from a request touches the disk).
        self.static = {
            p.name: StaticFile(p.read_bytes(), CONTENT_TYPES.get(p.suffix, "application/octet-stream"))
            for p in sorted(static_dir.iterdir())
            if p.is_file() and not p.name.startswith(".")
        }
        self.routes: dict[str, Callable[[Params], dict[str, Any]]] = {
            "tables": self.tables,
            "neighbors": self.neighbors,
            "analogy": self.analogy,
            "map": self.map,
            "timeline": self.timeline,
        }

    # -- dispatch -------------------------------------------------------------------------------

    def api(self, endpoint: str, query_string: str) -> Answer:
        """Answer ``/api/<endpoint>?<query_string>``: (HTTP status, JSON-ready dict)."""
        try:
            route = self.routes.get(endpoint)
            if route is None:
                raise EndpointNotFoundError(f"no API endpoint {endpoint!r}; endpoints: {', '.join(self.routes)}")
            params = parse_qs(query_string, keep_blank_values=True, strict_parsing=False, max_num_fields=32)
            return 200, route(params)
        except Exception as exc:  # noqa: BLE001 - the explorer's exception -> status boundary (the one map)
            return http_error(exc)

    def page(self, name: str) -> StaticFile | None:
        """A static file by bare name (``index.html``, ``explorer.js``...), None if there is none."""
        return self.static.get(name)

    # -- endpoints ------------------------------------------------------------------------------

    def tables(self, params: Params) -> dict[str, Any]:
        _check_names(params, ())
        return {
            "tables": [
                {
                    "name": t.name,
                    "version": t.version,
                    "count": t.count,
                    "dim": t.dim,
                    "metric": t.metric,
                    "index": str(t.bundle.index_info.get("factory") or "Flat"),
                    "versions": [v.version for v in self.registry.versions(t.name)],
                }
                for t in self.registry.all()
            ],
            "default": self.registry.default_name(),
            "methods": maplayout.available_methods(),
            "limits": {"topn": self.limits.max_topn, "map_topn": self.max_map_topn, "map_second": self.max_map_second},
        }

    def neighbors(self, params: Params) -> dict[str, Any]:
        _check_names(params, ("table", "version", "key", "topn", "exact"))
        table = self._table(params)
        key = self._key(params, "key")
        q = query.Query(positive=[key])
        return self._search_answer(table, key, q, params)

    def analogy(self, params: Params) -> dict[str, Any]:
        """gensim's analogy: nearest to a - b + c (king - man + woman ~ queen)."""
        _check_names(params, ("table", "version", "a", "b", "c", "topn", "exact"))
        table = self._table(params)
        a, b, c = (self._key(params, name) for name in ("a", "b", "c"))
        q = query.Query(positive=[a, c], negative=[b])
        return self._search_answer(table, f"{a} - {b} + {c}", q, params)

    def map(self, params: Params) -> dict[str, Any]:
        """The map around a key, or (``text=``) around a sentence's vector among its nearest tokens."""
        _check_names(params, ("table", "version", "key", "text", "topn", "second", "method"))
        table = self._table(params)
        topn, second = self._map_size(params)
        method = _text(params, "method", "pca")
        text = _text(params, "text", "")
        if text and "key" in params:
            raise ValueError("key and text: give one or the other (a key of the table, or a sentence)")
        if not text:
            return self._map(table, self._key(params, "key"), topn, second, method).to_dict()
        centre = embed.embed(table, self.limits, texts=[text]).vectors[0]
        if not centre.any():
            raise ValueError(f"text: {text[:60]!r} has no token in table {table.name!r}, so it has no place on the map")
        return {**self._map(table, f"“{text}”", topn, second, method, centre=centre).to_dict(), "text": text}

    def timeline(self, params: Params) -> dict[str, Any]:
        """The key's neighbours and map in every loaded version of a table, oldest first.

        Each map is rotated onto the previous version's (:func:`maplayout.align`) so that, sliding
        through a training run's snapshots, points move rather than the picture flipping. A version
        without the key answers ``{"version": v, "error": ...}`` in its place.
        """
        _check_names(params, ("table", "key", "topn", "second"))
        name = self.registry.get(_text(params, "table", "")).name
        key = self._key(params, "key")
        topn, second = self._map_size(params)
        steps: list[dict[str, Any]] = []
        previous: maplayout.NeighbourhoodMap | None = None
        for table in self.registry.versions(name):
            try:
                nmap = self._map(table, key, topn, second, "pca")
            except KeyError as exc:  # the key is not in this version's vocabulary
                steps.append({"version": table.version, "error": str(exc)})
                continue
            if previous is not None:
                nmap = maplayout.align(nmap, previous)
            previous = nmap
            neighbours = [{"key": p.key, "score": p.score, "rank": p.rank} for p in sorted(nmap.points, key=lambda p: p.rank) if p.rank]
            steps.append({"version": table.version, "training": _training_fields(table), "neighbors": neighbours, "map": nmap.to_dict()})
        return {"table": name, "key": key, "steps": steps}

    def _map(
        self, table: Table, key: str, topn: int, second: int, method: str, *, centre: np.ndarray | None = None
    ) -> maplayout.NeighbourhoodMap:
        """``build_map`` over the query core; with ``centre``, ``key`` is a label for that vector
        (a sentence's), searched by vector and placed first."""

        # A sentence's map shows whole words: a tokenizer table's [CLS]-like and "##rix" rows stay off it.
        words_only = centre is not None and tokenizer_table.EXTRA in table.extras
        options = query.SearchOptions(skip_special_tokens=words_only, skip_subword_tokens=words_only)

        def search(keys: Sequence[str], n: int) -> list[list[tuple[str, float]]]:
            queries = [query.Query(vector=centre) if (centre is not None and k == key) else query.Query(positive=[k]) for k in keys]
            result = query.search(table, queries, replace(options, topn=n), self.limits)
            return [[(k, s) for k, s, _ in row] for row in result.rows()]

        def vectors(keys: Sequence[str]) -> np.ndarray:
            if centre is None:
                return query.lookup(table, self.limits, keys=list(keys), normalize=True).vectors
            rest = query.lookup(table, self.limits, keys=list(keys[1:]), normalize=True).vectors if len(keys) > 1 else np.empty((0, table.dim), np.float32)
            return np.vstack([centre[None, :], rest])  # build_map puts the centre first

        return maplayout.build_map(
            key, search, vectors, topn=topn, second=second, method=method, table=table.name, version=table.version
        )

    def _map_size(self, params: Params) -> tuple[int, int]:
        topn = _int(params, "topn", DEFAULT_MAP_TOPN)
        check_limit("topn", topn, self.max_map_topn)
        second = _int(params, "second", DEFAULT_MAP_SECOND, minimum=0)
        check_limit("second", second, self.max_map_second)
        return topn, second

    # -- helpers --------------------------------------------------------------------------------

    def _table(self, params: Params) -> Table:
        version = _int(params, "version", 0, minimum=0)
        return self.registry.get(_text(params, "table", ""), version)

    def _key(self, params: Params, name: str) -> str:
        key = _text(params, name, "")
        if not key:
            raise ValueError(f"{name}: required (a key of the table, e.g. {name}=cat)")
        check_keys(name, [key], self.limits)
        return key

    def _search_answer(self, table: Table, label: str, q: query.Query, params: Params) -> dict[str, Any]:
        options = query.SearchOptions(topn=_int(params, "topn", query.DEFAULT_TOPN), exact=_bool(params, "exact"))
        (row,) = query.search(table, [q], options, self.limits).rows()
        return {
            "table": table.name,
            "version": table.version,
            "query": label,
            "neighbors": [{"key": k, "id": i, "score": s} for k, s, i in row],
        }


def _training_fields(table: Table) -> dict[str, Any]:
    """Numbers a training snapshot records in its manifest (step, loss, perplexity...), if any."""
    source = table.bundle.manifest.get("source") or {}
    training = source.get("training") or {}  # what embserve-train records per snapshot (lm_snapshot.py)
    return {k: training[k] for k in TIMELINE_FIELDS if isinstance(training.get(k), (int, float)) and not isinstance(training[k], bool)}


def _check_names(params: Params, allowed: Sequence[str]) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown parameter (expected: {', '.join(allowed) or 'none'})")


def _text(params: Params, name: str, default: str) -> str:
    values = params.get(name)
    if not values:
        return default
    if len(values) > 1:
        raise ValueError(f"{name}: given {len(values)} times, expected once")
    return values[0]


def _int(params: Params, name: str, default: int, *, minimum: int = 1) -> int:
    raw = _text(params, name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}: {raw[:40]!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{name}: {value} must be at least {minimum}")
    return value


def _bool(params: Params, name: str) -> bool:
    raw = _text(params, name, "0").lower()
    if raw not in ("0", "1", "true", "false"):
        raise ValueError(f"{name}: {raw[:40]!r} is not a boolean (0/1/true/false)")
    return raw in ("1", "true")

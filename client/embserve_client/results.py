"""What the clients return: small frozen dataclasses and read-only numpy arrays, never protobuf."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from embserve_client.pb import embserve_pb2 as pb


@dataclass(frozen=True)
class Neighbor:
    """One nearest-neighbour result (gensim's ``(key, score)`` plus the row id)."""

    key: str
    id: int
    score: float


@dataclass(frozen=True)
class TableInfo:
    name: str
    version: int
    vector_size: int
    count: int
    metric: str
    index: str
    checksum: str
    created_at: str
    ef_search: int
    nprobe: int
    has_counts: bool
    has_subwords: bool
    has_tokenizer: bool
    source: str
    memory: dict[str, int] = field(default_factory=dict)  # bytes by part: rows, index, keys, extras
    labels: dict[str, int] = field(default_factory=dict)  # the table's version labels: label -> version


@dataclass(frozen=True)
class Refusal:
    """A table version on the server's disk that it does not serve, and why (health details)."""

    table: str
    version: int
    reason: str  # "invalid" (the bundle), "memory" (over --memory-limit), "vanished"
    message: str


@dataclass(frozen=True)
class LookupResult:
    """Vectors of a batch lookup and, per requested item, whether it was found and its row id."""

    vectors: np.ndarray  # (rows, dim) float32, read-only; rows = requested unless missing="skip"
    found: np.ndarray  # (requested,) bool
    ids: np.ndarray  # (requested,) int64, -1 for missing
    table: str
    version: int


@dataclass(frozen=True)
class SearchResult:
    """A batch of nearest-neighbour results as arrays; ``neighbors()`` gives dataclasses."""

    ids: np.ndarray  # (queries, topn) int64, -1 for "none"
    scores: np.ndarray  # (queries, topn) float32
    keys: list[list[str]]  # queries x topn, "" for "none"
    table: str
    version: int

    def neighbors(self) -> list[list[Neighbor]]:
        return [
            [Neighbor(k, int(i), float(s)) for k, i, s in zip(keys, ids, scores) if i >= 0]
            for keys, ids, scores in zip(self.keys, self.ids, self.scores)
        ]


@dataclass(frozen=True)
class Tokenized:
    ids: list[int]
    tokens: list[str]


def table_info_from_pb(t: pb.TableInfo) -> TableInfo:
    return TableInfo(
        name=t.name,
        version=t.version,
        vector_size=t.vector_size,
        count=t.count,
        metric=t.metric,
        index=t.index,
        checksum=t.checksum,
        created_at=t.created_at,
        ef_search=t.ef_search,
        nprobe=t.nprobe,
        has_counts=t.has_counts,
        has_subwords=t.has_subwords,
        has_tokenizer=t.has_tokenizer,
        source=t.source,
        memory={"rows": t.memory.rows, "index": t.memory.index, "keys": t.memory.keys, "extras": t.memory.extras},
        labels=dict(sorted(t.labels.items())),
    )

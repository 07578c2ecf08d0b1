"""The synchronous client: gensim's vocabulary over gRPC, numpy arrays and small dataclasses out."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np

from embserve_client.channel import VersionFloor, channel_options, open_channel
from embserve_client.errors import ClientClosedError, InvalidArgumentError, from_rpc_error
from embserve_client.pb import embserve_pb2 as pb
from embserve_client.pb import embserve_pb2_grpc as pb_grpc

DEFAULT_TARGET = "localhost:50051"
DEFAULT_TIMEOUT = 10.0  # seconds per call (a deadline is always set)
DEFAULT_MAX_MESSAGE_BYTES = 64 << 20  # matches the server's default limit
DEFAULT_MAX_KEYS_PER_CALL = 65_536  # the server's default --max-keys
DEFAULT_MAX_QUERIES_PER_CALL = 4_096  # the server's default --max-queries
MISSING_POLICIES = {
    "error": pb.MISSING_POLICY_ERROR,
    "skip": pb.MISSING_POLICY_SKIP,
    "zero": pb.MISSING_POLICY_ZERO,
    "subword": pb.MISSING_POLICY_SUBWORD,
}
_F32 = np.dtype("<f4")
_I64 = np.dtype("<i8")
T = TypeVar("T")

KeyTerm = str | tuple[str, float]  # a key, or (key, weight) as in gensim


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


def _table_info(t: pb.TableInfo) -> TableInfo:
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
    )


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _terms(items: KeyTerm | Sequence[KeyTerm] | None) -> tuple[list[str], list[float]]:
    """gensim-style positive/negative: a key, keys, or (key, weight) pairs."""
    if items is None:
        return [], []
    if isinstance(items, str) or (isinstance(items, tuple) and len(items) == 2 and isinstance(items[1], (int, float)) and isinstance(items[0], str)):
        items = [items]  # type: ignore[list-item]
    keys, weights, weighted = [], [], False
    for item in items:  # type: ignore[union-attr]
        if isinstance(item, str):
            keys.append(item)
            weights.append(1.0)
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            keys.append(item[0])
            weights.append(float(item[1]))
            weighted = True
        else:
            raise InvalidArgumentError(f"query term {item!r}: expected a key or a (key, weight) pair")
    return keys, (weights if weighted else [])


Plan = Generator[tuple[str, Any], Any, T]  # yields (method, request), receives the response, returns T


class _ClientCore:
    """What the blocking and the asyncio client share: channel set-up and every call's *plan*.

    A plan is a generator that yields ``(method, request)`` and receives the response, so the
    request building and response parsing exist once; ``Client`` and ``AsyncClient`` only differ in
    how they run a plan (blocking calls or ``await``).
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        channels: int = 1,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        options: Sequence[tuple[str, Any]] = (),
        load_balancing: str = "auto",
        min_version: int | Mapping[str, int] | None = None,
        monotonic_reads: bool = False,
    ) -> None:
        if channels < 1:
            raise InvalidArgumentError(f"channels: {channels} must be at least 1")
        self.target = target
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        base_options = channel_options(target, max_message_bytes=max_message_bytes, load_balancing=load_balancing, options=options)
        # channel.py: answers below the floor are asked again elsewhere (rolling table updates).
        self._floor = VersionFloor(min_version, monotonic=monotonic_reads) if min_version is not None or monotonic_reads else None
        secure = tls or root_certificates is not None or certificate_chain is not None
        credentials = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain) if secure else None
        self._channels = []
        for n in range(channels):
            # A distinct arg + local subchannel pool gives each channel its own TCP connection.
            opts = [*base_options, ("grpc.use_local_subchannel_pool", 1), ("embserve.channel", n)]
            self._channels.append(self._open_channel(target, credentials, opts))
        self._stubs = [pb_grpc.EmbeddingServiceStub(ch) for ch in self._channels]
        self._admin = pb_grpc.AdminServiceStub(self._channels[0])
        self._next = itertools.cycle(range(channels))
        self._lock = threading.Lock()
        self._closed = False
        self._dims: dict[str, int] = {}

    def _open_channel(self, target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]) -> Any:
        raise NotImplementedError

    @property
    def stub(self) -> pb_grpc.EmbeddingServiceStub:
        """The raw generated stub (first channel), for power users."""
        self._check_open()
        return self._stubs[0]

    @property
    def channel(self) -> Any:
        return self._channels[0]

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("this client is closed; create a new client")

    def _method(self, method: str) -> tuple[Any, float | None]:
        """The stub method to call next (round-robin over channels) and its deadline."""
        self._check_open()
        if method == "Reload":
            return self._admin.Reload, max(self.timeout or 0, 300)  # loading a big table takes a while
        with self._lock:
            stub = self._stubs[next(self._next)]
        return getattr(stub, method), self.timeout

    # -- plans ----------------------------------------------------------------------------------

    def _plan_table_info(self, name: str | None) -> Plan[TableInfo]:
        from embserve_client.errors import UnknownTableError

        resp = yield "ListTables", pb.ListTablesRequest()
        want = name or resp.default_table
        for t in resp.tables:
            if t.name == want:
                return _table_info(t)
        raise UnknownTableError(f"table {want!r} not served; served: {', '.join(t.name for t in resp.tables) or 'none'}")

    def _plan_list_tables(self) -> Plan[list[TableInfo]]:
        resp = yield "ListTables", pb.ListTablesRequest()
        return [_table_info(t) for t in resp.tables]

    def _plan_lookup(
        self,
        keys: Sequence[str] = (),
        *,
        ids: Sequence[int] = (),
        table: str | None = None,
        missing: str = "error",
        normalize: bool = False,
        max_keys_per_call: int = DEFAULT_MAX_KEYS_PER_CALL,
    ) -> Plan[LookupResult]:
        if missing not in MISSING_POLICIES:
            raise InvalidArgumentError(f"missing: {missing!r} is not one of {sorted(MISSING_POLICIES)}")
        if isinstance(keys, str):
            raise InvalidArgumentError("keys: pass a list of keys (use get_vector for one key)")
        items: Sequence[Any] = keys if len(keys) else list(ids)
        per_call = max_keys_per_call
        if len(items) > 1024:
            # Stay well under the message limit: dim * 4 bytes per row plus framing.
            key = table or ""
            if key not in self._dims:
                self._dims[key] = (yield from self._plan_table_info(table)).vector_size
            per_call = max(1, min(per_call, int(self.max_message_bytes * 0.8) // (self._dims[key] * 4 + 16)))
        parts = []
        for chunk in _chunks(items, per_call) if len(items) else [items]:
            req = pb.LookupRequest(table=table or "", missing=MISSING_POLICIES[missing], normalize=normalize)
            if len(keys):
                req.keys.extend(chunk)
            else:
                req.ids.extend(chunk)
            parts.append((yield "Lookup", req))
        last = parts[-1]
        dim = last.vector_size
        vectors = [np.frombuffer(p.vectors, dtype=_F32).reshape(p.rows, dim) for p in parts]
        found = [np.frombuffer(p.found, dtype=np.uint8).astype(bool) for p in parts]
        row_ids = [np.frombuffer(p.ids, dtype=_I64) for p in parts]
        if len(parts) == 1:
            v, f, i = vectors[0], found[0], row_ids[0]
        else:
            v, f, i = np.concatenate(vectors), np.concatenate(found), np.concatenate(row_ids)
            v.flags.writeable = False  # like gensim: results are read-only views
        return LookupResult(vectors=v, found=f, ids=i.astype(np.int64), table=last.table, version=last.version)

    def _plan_search(
        self,
        queries: Sequence[pb.Query],
        *,
        table: str | None = None,
        topn: int = 10,
        exact: bool = False,
        ef_search: int = 0,
        nprobe: int = 0,
        restrict_vocab: int = 0,
        min_score: float | None = None,
        include_query_keys: bool = False,
        skip_special_tokens: bool = False,
        skip_subword_tokens: bool = False,
        max_queries_per_call: int = DEFAULT_MAX_QUERIES_PER_CALL,
    ) -> Plan[SearchResult]:
        parts = []
        for chunk in _chunks(list(queries), max_queries_per_call):
            req = pb.SearchRequest(
                table=table or "",
                queries=chunk,
                topn=topn,
                exact=exact,
                ef_search=ef_search,
                nprobe=nprobe,
                restrict_vocab=restrict_vocab,
                include_query_keys=include_query_keys,
                skip_special_tokens=skip_special_tokens,
                skip_subword_tokens=skip_subword_tokens,
            )
            if min_score is not None:
                req.min_score = min_score
            parts.append((yield "Search", req))
        if not parts:
            raise InvalidArgumentError("queries: no query given")
        ids = np.concatenate([np.frombuffer(p.ids, dtype=_I64).reshape(p.queries, p.topn) for p in parts])
        scores = np.concatenate([np.frombuffer(p.scores, dtype=_F32).reshape(p.queries, p.topn) for p in parts])
        keys = [list(p.keys[i : i + p.topn]) for p in parts for i in range(0, p.queries * p.topn, p.topn)]
        return SearchResult(ids=ids, scores=scores, keys=keys, table=parts[-1].table, version=parts[-1].version)

    def _plan_similarities(self, pairs: Sequence[tuple[str, str]], *, table: str | None = None) -> Plan[np.ndarray]:
        req = pb.SimilarityRequest(table=table or "", a=[a for a, _ in pairs], b=[b for _, b in pairs])
        resp = yield "Similarity", req
        return np.frombuffer(resp.scores, dtype=_F32)

    def _plan_tokenize(self, texts: str | Sequence[str], *, table: str | None = None, add_special_tokens: bool = False) -> Plan[list[Tokenized]]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        resp = yield "Tokenize", pb.TokenizeRequest(table=table or "", texts=texts, add_special_tokens=add_special_tokens)
        return [Tokenized(ids=list(t.ids), tokens=list(t.tokens)) for t in resp.texts]

    def _plan_lookup_text(
        self, text: str, *, table: str | None = None, add_special_tokens: bool = False, mean: bool = False
    ) -> Plan[tuple[Tokenized, np.ndarray, np.ndarray | None]]:
        resp = yield "LookupText", pb.LookupTextRequest(table=table or "", text=text, add_special_tokens=add_special_tokens, mean=mean)
        vectors = np.frombuffer(resp.vectors, dtype=_F32).reshape(len(resp.ids), resp.vector_size)
        mean_vec = np.frombuffer(resp.mean, dtype=_F32) if resp.mean else None
        return Tokenized(list(resp.ids), list(resp.tokens)), vectors, mean_vec

    def _plan_reload(self, table: str | None = None) -> Plan[list[tuple[str, str, int, str]]]:
        resp = yield "Reload", pb.ReloadRequest(table=table or "")
        self._dims.clear()
        return [(o.table, o.outcome, o.version, o.message) for o in resp.outcomes]

    @staticmethod
    def query(
        positive: KeyTerm | Sequence[KeyTerm] | None = None,
        negative: KeyTerm | Sequence[KeyTerm] | None = None,
        *,
        vector: np.ndarray | None = None,
        positive_ids: Sequence[int] = (),
        negative_ids: Sequence[int] = (),
    ) -> pb.Query:
        """Build one query message: gensim-style positive/negative keys, ids, or a raw vector."""
        pk, pw = _terms(positive)
        nk, nw = _terms(negative)
        q = pb.Query(positive=pk, negative=nk, positive_ids=positive_ids, negative_ids=negative_ids)
        if pw or nw:
            q.positive_weights.extend(pw or [1.0] * (len(pk) + len(positive_ids)))
            q.negative_weights.extend(nw or [1.0] * (len(nk) + len(negative_ids)))
        if vector is not None:
            q.vector = np.ascontiguousarray(vector, dtype=_F32).tobytes()
        return q

    def _batch_queries(self, queries: Sequence[str | pb.Query]) -> list[pb.Query]:
        return [self.query(q) if isinstance(q, str) else q for q in queries]


class Client(_ClientCore):
    """Blocking client for an embserve server.

    Args:
        target: ``HOST:PORT`` of the server, or of several replicas (``dns:///name:port``,
            ``ipv4:a:port,b:port``: calls go round-robin to the healthy ones, see ``channel.py``).
        timeout: default deadline of every call, in seconds.
        channels: open this many channels and spread calls over them round-robin (lets load
            reach several worker processes behind one port).
        max_message_bytes: gRPC message size limit; large batches are split under it.
        token: bearer token sent with every call (servers with auth on).
        tls: use TLS with the system's CAs.
        root_certificates: PEM CA bundle; setting it (or ``tls=True``) makes the channel TLS.
        private_key / certificate_chain: PEM client key and certificate for mutual TLS.
        options: extra gRPC channel options.
        load_balancing: "auto" (round_robin with health checks for multi-address targets),
            "round_robin" or "pick_first".
        min_version: refuse answers from table versions below this (an int for every table, or
            ``{table: version}``): such calls are sent again and, when no replica serves the
            version, raise :class:`UnavailableError`.
        monotonic_reads: never accept an answer from an older table version than one already
            seen by this client (a rolling table update never goes back).

    A client is a context manager; once closed it refuses further calls.
    """

    def _open_channel(self, target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]) -> grpc.Channel:
        return open_channel(target, credentials, options, floor=self._floor)

    def _run(self, plan: Plan[T]) -> T:
        """Drive a plan with blocking calls; every grpc.RpcError becomes a client exception."""
        try:
            method, request = next(plan)
            while True:
                call, timeout = self._method(method)
                try:
                    response = call(request, timeout=timeout, metadata=self._metadata)
                except grpc.RpcError as exc:
                    raise from_rpc_error(exc) from exc
                method, request = plan.send(response)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for ch in self._channels:
                ch.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tables ---------------------------------------------------------------------------------

    def list_tables(self) -> list[TableInfo]:
        """Metadata of every served table."""
        return self._run(self._plan_list_tables())

    def table_info(self, name: str | None = None) -> TableInfo:
        """Metadata of table ``name`` (None: the server's default table).

        Raises:
            UnknownTableError: the server does not serve ``name``.
        """
        return self._run(self._plan_table_info(name))

    # -- lookups --------------------------------------------------------------------------------

    def lookup(
        self,
        keys: Sequence[str] = (),
        *,
        ids: Sequence[int] = (),
        table: str | None = None,
        missing: str = "error",
        normalize: bool = False,
        max_keys_per_call: int = DEFAULT_MAX_KEYS_PER_CALL,
    ) -> LookupResult:
        """Vectors of many keys (or ids), with found flags; split into calls under the size limit.

        Args:
            keys: keys to look up (or ``ids``, not both).
            ids: row ids to look up.
            table: table name; None = the server's default table.
            missing: "error" (raise), "skip" (leave out), "zero" (zero rows), "subword" (fastText).
            normalize: unit-length vectors.
            max_keys_per_call: split bigger batches into several calls.

        Raises:
            UnknownKeyError: a missing key under "error". InvalidArgumentError: bad arguments.
        """
        return self._run(
            self._plan_lookup(keys, ids=ids, table=table, missing=missing, normalize=normalize, max_keys_per_call=max_keys_per_call)
        )

    def get_vectors(
        self, keys: Sequence[str], *, table: str | None = None, missing: str = "error", normalize: bool = False
    ) -> np.ndarray:
        """(n, dim) float32 read-only array of the keys' vectors (see :meth:`lookup` for policies)."""
        return self.lookup(keys, table=table, missing=missing, normalize=normalize).vectors

    def get_vector(self, key: str, *, table: str | None = None, normalize: bool = False) -> np.ndarray:
        """The (dim,) vector of one key (gensim's ``get_vector``).

        Raises:
            UnknownKeyError: ``Key 'x' not present``.
        """
        return self.lookup([key], table=table, normalize=normalize).vectors[0]

    # -- nearest neighbours ---------------------------------------------------------------------

    def search(self, queries: Sequence[pb.Query], **options: Any) -> SearchResult:
        """Run a batch of ``embserve_pb2.Query`` messages (see :meth:`query`) as arrays.

        Options are those of :meth:`most_similar`, plus ``nprobe`` and ``max_queries_per_call``.
        """
        return self._run(self._plan_search(queries, **options))

    def most_similar(
        self,
        positive: KeyTerm | Sequence[KeyTerm] | None = None,
        negative: KeyTerm | Sequence[KeyTerm] | None = None,
        *,
        topn: int = 10,
        table: str | None = None,
        exact: bool = False,
        ef_search: int = 0,
        restrict_vocab: int = 0,
        min_score: float | None = None,
        include_query_keys: bool = False,
        skip_special_tokens: bool = False,
        skip_subword_tokens: bool = False,
    ) -> list[Neighbor]:
        """Nearest keys to the weighted mean of ``positive`` minus ``negative`` (gensim semantics).

        Args:
            positive: key(s) or (key, weight) pairs that attract.
            negative: key(s) or (key, weight) pairs that repel (analogies: king - man + woman).
            topn: number of neighbours.
            table: table name; None = default.
            exact: brute force instead of the approximate index.
            ef_search: per-call HNSW effort (0 = the table's default).
            restrict_vocab: only the N most frequent keys.
            min_score: drop neighbours scoring below this.
            include_query_keys: keep the query's own keys in the results.
            skip_special_tokens: tokenizer tables: leave out [CLS], [PAD], ... (and unused ids).
            skip_subword_tokens: tokenizer tables: leave out continuation tokens ("##ing").

        Returns:
            Up to ``topn`` :class:`Neighbor`, best first.

        Raises:
            UnknownKeyError: a query key is not in the table.
            FailedPreconditionError: a skip flag on a table without tokenizer.
        """
        return self.search(
            [self.query(positive, negative)],
            topn=topn,
            table=table,
            exact=exact,
            ef_search=ef_search,
            restrict_vocab=restrict_vocab,
            min_score=min_score,
            include_query_keys=include_query_keys,
            skip_special_tokens=skip_special_tokens,
            skip_subword_tokens=skip_subword_tokens,
        ).neighbors()[0]

    def most_similar_batch(self, queries: Sequence[str | pb.Query], **options: Any) -> list[list[Neighbor]]:
        """:meth:`most_similar` for many queries in one call; a query is a key or a :meth:`query`."""
        return self.search(self._batch_queries(queries), **options).neighbors()

    def similar_by_vector(self, vector: np.ndarray, *, topn: int = 10, table: str | None = None, **options: Any) -> list[Neighbor]:
        """Nearest keys to a raw vector (gensim's ``similar_by_vector``)."""
        return self.search([self.query(vector=vector)], topn=topn, table=table, **options).neighbors()[0]

    # -- similarity -----------------------------------------------------------------------------

    def similarities(self, pairs: Sequence[tuple[str, str]], *, table: str | None = None) -> np.ndarray:
        """Cosine similarity of each (a, b) pair, float32 (n,)."""
        return self._run(self._plan_similarities(pairs, table=table))

    def similarity(self, a: str, b: str, *, table: str | None = None) -> float:
        """Cosine similarity of two keys (gensim's ``similarity``)."""
        return float(self.similarities([(a, b)], table=table)[0])

    # -- tokenizer tables -----------------------------------------------------------------------

    def tokenize(self, texts: str | Sequence[str], *, table: str | None = None, add_special_tokens: bool = False) -> list[Tokenized]:
        """Token ids and strings of each text (tables imported from a transformer).

        Raises:
            FailedPreconditionError: the table carries no tokenizer.
        """
        return self._run(self._plan_tokenize(texts, table=table, add_special_tokens=add_special_tokens))

    def lookup_text(
        self, text: str, *, table: str | None = None, add_special_tokens: bool = False, mean: bool = False
    ) -> tuple[Tokenized, np.ndarray, np.ndarray | None]:
        """Per-token vectors of ``text``: (tokens, (n, dim) vectors, mean vector or None)."""
        return self._run(self._plan_lookup_text(text, table=table, add_special_tokens=add_special_tokens, mean=mean))

    # -- admin ----------------------------------------------------------------------------------

    def reload(self, table: str | None = None) -> list[tuple[str, str, int, str]]:
        """Ask the server to load new versions now; returns (table, outcome, version, message)."""
        return self._run(self._plan_reload(table))

"""What the blocking and the asyncio client share: channel set-up, options, and every call's *plan*.

A plan is a generator that yields ``(method, request)`` and receives the response, so the request
building and response parsing exist once; :class:`~embserve_client.client.Client` and
:class:`~embserve_client.aio.AsyncClient` only differ in how they run a plan (blocking or awaited).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Generator, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np
from embserve_format import limits
from embserve_format.arrays import LE_F32, LE_I64
from embserve_format.keybatch import pack_keys

from embserve_client.channel import VersionFloor, channel_options
from embserve_client.errors import REQUEST_ID, ClientClosedError, InvalidArgumentError
from embserve_client.pb import embserve_pb2 as pb
from embserve_client.pb import embserve_pb2_grpc as pb_grpc
from embserve_client.results import LookupResult, Neighbor, SearchResult, TableInfo, Tokenized, table_info_from_pb
from embserve_client.wire import MISSING_POLICIES

DEFAULT_TARGET = "localhost:50051"
DEFAULT_TIMEOUT = 10.0  # seconds per call (a deadline is always set)
DEFAULT_MAX_MESSAGE_BYTES = limits.MAX_MESSAGE_BYTES  # the server's default limit
DEFAULT_MAX_KEYS_PER_CALL = limits.MAX_KEYS_PER_CALL  # the server's default --max-keys
DEFAULT_MAX_QUERIES_PER_CALL = limits.MAX_QUERIES_PER_CALL  # the server's default --max-queries
DEFAULT_MAX_TEXTS_PER_CALL = limits.MAX_TEXTS_PER_CALL  # texts per Embed (the server's default limit)
DEFAULT_MAX_CALL_CHARS = limits.MAX_CALL_CHARS  # characters per Embed (the server's default limit)
DEFAULT_TRUNCATE = limits.DEFAULT_TRUNCATE  # tokens pooled per text (the server's default when a request says none)
T = TypeVar("T")

KeyTerm = str | tuple[str, float]  # a key, or (key, weight) as in gensim


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _text_chunks(items: list[Any], per_call: int, chars_per_call: int) -> Iterable[list[Any]]:
    """Consecutive runs of ``items`` with at most ``per_call`` items and (when set) ``chars_per_call`` characters."""
    chunk: list[Any] = []
    chars = 0
    for item in items:
        size = len(item) if chars_per_call else 0
        if chunk and (len(chunk) >= per_call or chars + size > chars_per_call > 0):
            yield chunk
            chunk, chars = [], 0
        chunk.append(item)
        chars += size
    yield chunk


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


def _packed(keys: Sequence[str], first: int) -> bytes:
    """``LookupRequest.packed_keys`` for ``keys`` (``first``: keys[0]'s position in the call); a key no table can hold is refused here."""
    try:
        return pack_keys(keys, first=first)
    except ValueError as exc:
        raise InvalidArgumentError(str(exc)) from None


Plan = Generator[tuple[str, Any], Any, T]  # yields (method, request), receives the response, returns T


class _ClientCore:
    """Channel set-up and the call plans; subclasses run plans (``_run``) and open channels."""

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
        packed_keys: bool = True,
        request_id: str | None = None,
    ) -> None:
        if channels < 1:
            raise InvalidArgumentError(f"channels: {channels} must be at least 1")
        self.target = target
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self.packed_keys = packed_keys
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        if request_id is not None:
            # Sent with every call: the server logs the calls under it (and answers with it), so a
            # job's calls can be found together; errors carry the id of their call (``request_id``).
            self._metadata += ((REQUEST_ID, request_id),)
        # channel.py: retries, round_robin + health checks for multi-address targets, and the
        # version floor (answers below it are asked again elsewhere: rolling table updates).
        base_options = channel_options(target, max_message_bytes=max_message_bytes, load_balancing=load_balancing, options=options)
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
                return table_info_from_pb(t)
        raise UnknownTableError(f"table {want!r} not served; served: {', '.join(t.name for t in resp.tables) or 'none'}")

    def _plan_list_tables(self) -> Plan[list[TableInfo]]:
        resp = yield "ListTables", pb.ListTablesRequest()
        return [table_info_from_pb(t) for t in resp.tables]

    def _plan_lookup(
        self,
        keys: Sequence[str] = (),
        *,
        ids: Sequence[int] = (),
        table: str | None = None,
        missing: str = "error",
        normalize: bool = False,
        max_keys_per_call: int = DEFAULT_MAX_KEYS_PER_CALL,
        version: int | None = None,
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
        for n, chunk in enumerate(_chunks(items, per_call) if len(items) else [items]):
            req = pb.LookupRequest(table=table or "", missing=MISSING_POLICIES[missing], normalize=normalize, version=version or 0)
            if len(keys) and self.packed_keys:
                req.packed_keys = _packed(chunk, n * per_call)
            elif len(keys):
                req.keys.extend(chunk)
            else:
                req.ids.extend(chunk)
            parts.append((yield "Lookup", req))
        last = parts[-1]
        dim = last.vector_size
        vectors = [np.frombuffer(p.vectors, dtype=LE_F32).reshape(p.rows, dim) for p in parts]
        found = [np.frombuffer(p.found, dtype=np.uint8).astype(bool) for p in parts]
        row_ids = [np.frombuffer(p.ids, dtype=LE_I64) for p in parts]
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
        version: int | None = None,
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
                version=version or 0,
            )
            if min_score is not None:
                req.min_score = min_score
            parts.append((yield "Search", req))
        if not parts:
            raise InvalidArgumentError("queries: no query given")
        ids = np.concatenate([np.frombuffer(p.ids, dtype=LE_I64).reshape(p.queries, p.topn) for p in parts])
        scores = np.concatenate([np.frombuffer(p.scores, dtype=LE_F32).reshape(p.queries, p.topn) for p in parts])
        keys = [list(p.keys[i : i + p.topn]) for p in parts for i in range(0, p.queries * p.topn, p.topn)]
        return SearchResult(ids=ids, scores=scores, keys=keys, table=parts[-1].table, version=parts[-1].version)

    def _plan_similarities(self, pairs: Sequence[tuple[str, str]], *, table: str | None = None, version: int | None = None) -> Plan[np.ndarray]:
        req = pb.SimilarityRequest(table=table or "", a=[a for a, _ in pairs], b=[b for _, b in pairs], version=version or 0)
        resp = yield "Similarity", req
        return np.frombuffer(resp.scores, dtype=LE_F32)

    def _plan_tokenize(
        self, texts: str | Sequence[str], *, table: str | None = None, add_special_tokens: bool = False, version: int | None = None
    ) -> Plan[list[Tokenized]]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        resp = yield "Tokenize", pb.TokenizeRequest(table=table or "", texts=texts, add_special_tokens=add_special_tokens, version=version or 0)
        return [Tokenized(ids=list(t.ids), tokens=list(t.tokens)) for t in resp.texts]

    def _plan_lookup_text(
        self, text: str, *, table: str | None = None, add_special_tokens: bool = False, mean: bool = False, version: int | None = None
    ) -> Plan[tuple[Tokenized, np.ndarray, np.ndarray | None]]:
        resp = yield "LookupText", pb.LookupTextRequest(
            table=table or "", text=text, add_special_tokens=add_special_tokens, mean=mean, version=version or 0
        )
        vectors = np.frombuffer(resp.vectors, dtype=LE_F32).reshape(len(resp.ids), resp.vector_size)
        mean_vec = np.frombuffer(resp.mean, dtype=LE_F32) if resp.mean else None
        return Tokenized(list(resp.ids), list(resp.tokens)), vectors, mean_vec

    def _plan_embed(
        self,
        texts: str | Sequence[str] | Sequence[Sequence[int]],
        *,
        table: str | None = None,
        version: int | None = None,
        normalize: bool = True,
        truncate: int = DEFAULT_TRUNCATE,
        dimensions: int | None = None,
    ) -> Plan[np.ndarray]:
        items: list[Any] = [texts] if isinstance(texts, str) else list(texts)
        if not items:
            raise InvalidArgumentError("texts: no text given")
        as_ids = not isinstance(items[0], str)
        if any(isinstance(t, str) == as_ids for t in items):
            raise InvalidArgumentError("texts: give all strings or all token-id lists, not a mix")
        parts = []
        for chunk in _text_chunks(items, DEFAULT_MAX_TEXTS_PER_CALL, 0 if as_ids else DEFAULT_MAX_CALL_CHARS):
            req = pb.EmbedRequest(table=table or "", version=version or 0, normalize=normalize, truncate=truncate, dimensions=dimensions or 0)
            if as_ids:
                req.token_ids.extend(pb.TokenIds(ids=[int(i) for i in t]) for t in chunk)
            else:
                req.texts.extend(chunk)
            parts.append((yield "Embed", req))
        vectors = [np.frombuffer(p.vectors, dtype=LE_F32).reshape(len(p.tokens), p.vector_size) for p in parts]
        out = vectors[0] if len(vectors) == 1 else np.concatenate(vectors)
        out.flags.writeable = False
        return out

    def _plan_most_similar(
        self,
        positive: KeyTerm | Sequence[KeyTerm] | None = None,
        negative: KeyTerm | Sequence[KeyTerm] | None = None,
        *,
        text: str | None = None,
        **options: Any,
    ) -> Plan[list[Neighbor]]:
        if text is None:
            query = self.query(positive, negative)
        elif positive is not None or negative is not None:
            raise InvalidArgumentError("text: give a text or positive/negative keys, not both")
        else:
            where = {k: options[k] for k in ("table", "version") if k in options}
            query = self.query(vector=(yield from self._plan_embed([text], **where))[0])
        return (yield from self._plan_search([query], **options)).neighbors()[0]

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
            q.vector = np.ascontiguousarray(vector, dtype=LE_F32).tobytes()
        return q

    def _batch_queries(self, queries: Sequence[str | pb.Query]) -> list[pb.Query]:
        return [self.query(q) if isinstance(q, str) else q for q in queries]

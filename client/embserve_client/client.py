"""The synchronous client: gensim's vocabulary over gRPC, numpy arrays and small dataclasses out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import grpc
import numpy as np

from embserve_client.channel import open_channel
from embserve_client.core import DEFAULT_MAX_KEYS_PER_CALL, DEFAULT_TRUNCATE, KeyTerm, Plan, _ClientCore
from embserve_client.errors import from_rpc_error
from embserve_client.pb import embserve_pb2 as pb
from embserve_client.results import LookupResult, Neighbor, SearchResult, TableInfo, Tokenized

T = TypeVar("T")


class Client(_ClientCore):
    """Blocking client for an embserve server.

    Args:
        target: ``HOST:PORT`` of the server.
        timeout: default deadline of every call, in seconds.
        channels: open this many channels and spread calls over them round-robin (lets load
            reach several worker processes behind one port).
        max_message_bytes: gRPC message size limit; large batches are split under it.
        token: bearer token sent with every call (servers with auth on).
        tls: use TLS with the system's CAs.
        root_certificates: PEM CA bundle; setting it (or ``tls=True``) makes the channel TLS.
        private_key / certificate_chain: PEM client key and certificate for mutual TLS.
        options: extra gRPC channel options.
        load_balancing: "auto" (round_robin with health checks for multi-address targets:
            ``dns:///name:port``, ``ipv4:a:port,b:port``), "round_robin" or "pick_first".
        min_version: refuse answers from table versions below this (an int for every table, or
            ``{table: version}``): such calls are sent again and, when no replica serves the
            version, raise :class:`UnavailableError`. Reads naming a ``version`` are exempt.
        monotonic_reads: never accept an answer from an older table version than one already
            seen by this client (a rolling table update never goes back).
        packed_keys: send Lookup keys as one packed bytes field (``LookupRequest.packed_keys``,
            far cheaper for the server on large batches); ``False`` sends ``repeated string keys``,
            for servers older than that field (they answer INVALID_ARGUMENT "names no key").
        request_id: sent as ``x-request-id`` with every call; the server's call log names the calls
            by it. Without it the server makes one id per call. Either way a failed call's exception
            carries its id as ``request_id``.

    A client is a context manager; once closed it refuses further calls.
    """

    def _open_channel(self, target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]) -> grpc.Channel:
        return open_channel(target, credentials, options, floor=self._floor)

    def _run(self, plan: Plan[T], timeout: float | None = None) -> T:
        """Drive a plan with blocking calls (``timeout``: each call's deadline instead of the client's);
        every grpc.RpcError becomes a client exception."""
        try:
            method, request = next(plan)
            while True:
                call, default = self._method(method)
                timeout = default if timeout is None else timeout
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
        version: int | None = None,
    ) -> LookupResult:
        """Vectors of many keys (or ids), with found flags; split into calls under the size limit.

        Args:
            keys: keys to look up (or ``ids``, not both).
            ids: row ids to look up.
            table: table name; None = the server's default table.
            missing: "error" (raise), "skip" (leave out), "zero" (zero rows), "subword" (fastText).
            normalize: unit-length vectors.
            max_keys_per_call: split bigger batches into several calls.
            version: answer from this loaded version of the table (None: the newest).

        Raises:
            UnknownKeyError: a missing key under "error". InvalidArgumentError: bad arguments.
            NotFoundError: ``version`` is not loaded (the message lists the loaded ones).
        """
        return self._run(
            self._plan_lookup(
                keys, ids=ids, table=table, missing=missing, normalize=normalize, max_keys_per_call=max_keys_per_call, version=version
            )
        )

    def get_vectors(
        self, keys: Sequence[str], *, table: str | None = None, missing: str = "error", normalize: bool = False, version: int | None = None
    ) -> np.ndarray:
        """(n, dim) float32 read-only array of the keys' vectors (see :meth:`lookup` for policies)."""
        return self.lookup(keys, table=table, missing=missing, normalize=normalize, version=version).vectors

    def get_vector(self, key: str, *, table: str | None = None, normalize: bool = False, version: int | None = None) -> np.ndarray:
        """The (dim,) vector of one key (gensim's ``get_vector``).

        Raises:
            UnknownKeyError: ``Key 'x' not present``.
        """
        return self.lookup([key], table=table, normalize=normalize, version=version).vectors[0]

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
        version: int | None = None,
        text: str | None = None,
    ) -> list[Neighbor]:
        """Nearest keys to the weighted mean of ``positive`` minus ``negative`` (gensim semantics),
        or to the vector of a sentence (``text``: the tokens nearest what :meth:`embed` gives).

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
            version: answer from this loaded version of the table (None: the newest).
            text: a sentence instead of keys: its :meth:`embed` vector is the query.

        Returns:
            Up to ``topn`` :class:`Neighbor`, best first.

        Raises:
            UnknownKeyError: a query key is not in the table.
            FailedPreconditionError: a skip flag on a table without tokenizer; ``text`` on a table
                that cannot tokenise text.
        """
        return self._run(self._plan_most_similar(
            positive,
            negative,
            text=text,
            topn=topn,
            table=table,
            exact=exact,
            ef_search=ef_search,
            restrict_vocab=restrict_vocab,
            min_score=min_score,
            include_query_keys=include_query_keys,
            skip_special_tokens=skip_special_tokens,
            skip_subword_tokens=skip_subword_tokens,
            version=version,
        ))

    def most_similar_batch(self, queries: Sequence[str | pb.Query], **options: Any) -> list[list[Neighbor]]:
        """:meth:`most_similar` for many queries in one call; a query is a key or a :meth:`query`."""
        return self.search(self._batch_queries(queries), **options).neighbors()

    def similar_by_vector(self, vector: np.ndarray, *, topn: int = 10, table: str | None = None, **options: Any) -> list[Neighbor]:
        """Nearest keys to a raw vector (gensim's ``similar_by_vector``)."""
        return self.search([self.query(vector=vector)], topn=topn, table=table, **options).neighbors()[0]

    # -- similarity -----------------------------------------------------------------------------

    def similarities(self, pairs: Sequence[tuple[str, str]], *, table: str | None = None, version: int | None = None) -> np.ndarray:
        """Cosine similarity of each (a, b) pair, float32 (n,)."""
        return self._run(self._plan_similarities(pairs, table=table, version=version))

    def similarity(self, a: str, b: str, *, table: str | None = None, version: int | None = None) -> float:
        """Cosine similarity of two keys (gensim's ``similarity``)."""
        return float(self.similarities([(a, b)], table=table, version=version)[0])

    # -- tokenizer tables -----------------------------------------------------------------------

    def tokenize(
        self, texts: str | Sequence[str], *, table: str | None = None, add_special_tokens: bool = False, version: int | None = None
    ) -> list[Tokenized]:
        """Token ids and strings of each text (tables imported from a transformer).

        Raises:
            FailedPreconditionError: the table carries no tokenizer.
        """
        return self._run(self._plan_tokenize(texts, table=table, add_special_tokens=add_special_tokens, version=version))

    def lookup_text(
        self, text: str, *, table: str | None = None, add_special_tokens: bool = False, mean: bool = False, version: int | None = None
    ) -> tuple[Tokenized, np.ndarray, np.ndarray | None]:
        """Per-token vectors of ``text``: (tokens, (n, dim) vectors, mean vector or None)."""
        return self._run(self._plan_lookup_text(text, table=table, add_special_tokens=add_special_tokens, mean=mean, version=version))

    def embed(
        self,
        texts: str | Sequence[str] | Sequence[Sequence[int]],
        *,
        table: str | None = None,
        version: int | None = None,
        normalize: bool = True,
        truncate: int = DEFAULT_TRUNCATE,
        dimensions: int | None = None,
        timeout: float | None = None,
    ) -> np.ndarray:
        """One vector per text: the (weighted) mean of its tokens' rows; batches split under the limits.

        Args:
            texts: the texts (one string: a batch of one), or token-id lists (the table's row ids).
            table: table name; None = the server's default table.
            version: answer from this loaded version of the table (None: the newest).
            normalize: unit-length vectors.
            truncate: pool at most this many tokens of each text; 0 = refuse texts over the
                server's token limit instead of cutting them.
            dimensions: keep the first N columns (tables whose columns are PCA-ordered only).
            timeout: deadline of each call, in seconds (None: the client's).

        Returns:
            (n, dim) float32 read-only array; a text without any known token is a zero row.

        Raises:
            InvalidArgumentError: an empty text, ``dimensions`` on a table that is not PCA-ordered, over a limit.
            FailedPreconditionError: the table has no tokenizer and records no word tokenizer.
        """
        return self._run(
            self._plan_embed(texts, table=table, version=version, normalize=normalize, truncate=truncate, dimensions=dimensions), timeout
        )

    # -- admin ----------------------------------------------------------------------------------

    def reload(self, table: str | None = None) -> list[tuple[str, str, int, str]]:
        """Ask the server to load new versions now; returns (table, outcome, version, message)."""
        return self._run(self._plan_reload(table))

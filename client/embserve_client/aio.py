"""The asyncio client: :class:`AsyncClient` has the same methods as :class:`Client`, awaited.

Both run the same call plans (``_ClientCore``), so requests and results are built identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio
import numpy as np

from embserve_client.channel import open_aio_channel
from embserve_client.core import DEFAULT_TRUNCATE, KeyTerm, Plan, _ClientCore
from embserve_client.errors import from_rpc_error
from embserve_client.pb import embserve_pb2 as pb
from embserve_client.results import LookupResult, Neighbor, SearchResult, TableInfo, Tokenized

T = TypeVar("T")


class AsyncClient(_ClientCore):
    """asyncio client for an embserve server; constructor arguments as :class:`Client`.

    Use ``async with AsyncClient(target) as c: await c.most_similar("cat")``. Every method takes
    the same arguments as the :class:`Client` method of the same name.
    """

    def _open_channel(self, target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]) -> grpc.aio.Channel:
        return open_aio_channel(target, credentials, options, floor=self._floor)

    async def _run(self, plan: Plan[T], timeout: float | None = None) -> T:
        try:
            method, request = next(plan)
            while True:
                call, default = self._method(method)
                timeout = default if timeout is None else timeout
                try:
                    response = await call(request, timeout=timeout, metadata=self._metadata)
                except grpc.aio.AioRpcError as exc:
                    raise from_rpc_error(exc) from exc
                method, request = plan.send(response)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            for ch in self._channels:
                await ch.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def list_tables(self) -> list[TableInfo]:
        return await self._run(self._plan_list_tables())

    async def table_info(self, name: str | None = None) -> TableInfo:
        return await self._run(self._plan_table_info(name))

    async def lookup(self, keys: Sequence[str] = (), **options: Any) -> LookupResult:
        return await self._run(self._plan_lookup(keys, **options))

    async def get_vectors(self, keys: Sequence[str], **options: Any) -> np.ndarray:
        return (await self.lookup(keys, **options)).vectors

    async def get_vector(self, key: str, **options: Any) -> np.ndarray:
        return (await self.lookup([key], **options)).vectors[0]

    async def search(self, queries: Sequence[pb.Query], **options: Any) -> SearchResult:
        return await self._run(self._plan_search(queries, **options))

    async def most_similar(
        self, positive: KeyTerm | Sequence[KeyTerm] | None = None, negative: KeyTerm | Sequence[KeyTerm] | None = None, **options: Any
    ) -> list[Neighbor]:
        return await self._run(self._plan_most_similar(positive, negative, **options))

    async def most_similar_batch(self, queries: Sequence[str | pb.Query], **options: Any) -> list[list[Neighbor]]:
        return (await self.search(self._batch_queries(queries), **options)).neighbors()

    async def similar_by_vector(self, vector: np.ndarray, **options: Any) -> list[Neighbor]:
        return (await self.search([self.query(vector=vector)], **options)).neighbors()[0]

    async def similarities(self, pairs: Sequence[tuple[str, str]], *, table: str | None = None, version: int | None = None) -> np.ndarray:
        return await self._run(self._plan_similarities(pairs, table=table, version=version))

    async def similarity(self, a: str, b: str, *, table: str | None = None, version: int | None = None) -> float:
        return float((await self.similarities([(a, b)], table=table, version=version))[0])

    async def tokenize(self, texts: str | Sequence[str], **options: Any) -> list[Tokenized]:
        return await self._run(self._plan_tokenize(texts, **options))

    async def lookup_text(self, text: str, **options: Any) -> tuple[Tokenized, np.ndarray, np.ndarray | None]:
        return await self._run(self._plan_lookup_text(text, **options))

    async def embed(
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
        return await self._run(
            self._plan_embed(texts, table=table, version=version, normalize=normalize, truncate=truncate, dimensions=dimensions), timeout
        )

    async def reload(self, table: str | None = None) -> list[tuple[str, str, int, str]]:
        return await self._run(self._plan_reload(table))

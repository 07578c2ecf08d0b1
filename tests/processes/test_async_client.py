"""AsyncClient: the same answers as Client, through grpc.aio, with the same exceptions."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from embserve_client import AsyncClient, Client, ClientClosedError, UnknownKeyError
from embserve_server.app import Server


def test_async_client_matches_sync_client(server: Server, client: Client) -> None:
    target = f"127.0.0.1:{server.port}"

    async def main() -> tuple[object, ...]:
        async with AsyncClient(target, channels=2) as c:
            tables = await c.list_tables()
            vectors = await c.get_vectors(["w1", "w2"])
            near = await c.most_similar("w1", topn=5, exact=True)
            batch = await c.most_similar_batch(["w1", "w3"], topn=3)
            sim = await c.similarity("w1", "w2")
            with pytest.raises(UnknownKeyError, match="Key 'nope' not present"):
                await c.get_vector("nope")
            big = await c.lookup([f"w{i}" for i in range(1500)], max_keys_per_call=400)  # split in 4 calls
            return tables, vectors, near, batch, sim, big

    tables, vectors, near, batch, sim, big = asyncio.run(main())
    assert tables == client.list_tables()
    assert np.array_equal(vectors, client.get_vectors(["w1", "w2"]))  # type: ignore[arg-type]
    assert near == client.most_similar("w1", topn=5, exact=True)
    assert batch == client.most_similar_batch(["w1", "w3"], topn=3)
    assert sim == pytest.approx(client.similarity("w1", "w2"))
    assert list(big.ids) == list(range(1500))  # type: ignore[attr-defined]


def test_closed_async_client_refuses_reuse(server: Server) -> None:
    async def main() -> None:
        c = AsyncClient(f"127.0.0.1:{server.port}")
        await c.get_vector("w1")
        await c.close()
        with pytest.raises(ClientClosedError):
            await c.get_vector("w1")

    asyncio.run(main())

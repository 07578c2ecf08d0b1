"""Memory in the open: embserve_table_bytes by part, ListTables' memory field, ``embserve tables --memory``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_table, running_server
from embserve_client import Client
from embserve_client.cli import main as cli_main
from embserve_format.bundle import INDEX, KEY_INDEX, KEYS, MANIFEST, VECTORS


def file_bytes(path: Path, *names: str) -> int:
    return sum((path / n).stat().st_size for n in names)


def test_table_bytes_by_part_in_metrics_list_tables_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_table(tmp_path / "tables", n=3000, dim=8)
    want = {
        "rows": file_bytes(path, VECTORS),
        "index": file_bytes(path, INDEX),
        "keys": file_bytes(path, KEYS, KEY_INDEX),
        "extras": 0,
    }
    with running_server(tmp_path / "tables") as server:
        for part, size in want.items():
            assert server.metrics.registry.get_sample_value("embserve_table_bytes", {"table": "t", "part": part}) == size
        with Client(f"127.0.0.1:{server.port}") as c:
            (info,) = c.list_tables()
        assert info.memory == want
        assert cli_main(["tables", "--memory", "--target", f"127.0.0.1:{server.port}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["name", "version", "rows", "raw"]
    total = sum(want.values()) / 2**20
    assert out[1].startswith("t ") and out[1].rstrip().endswith(f"{total:.1f} MiB"), out


def test_parts_count_what_load_builds_for_an_old_bundle(tmp_path: Path) -> None:
    """No keys.idx and no index.faiss: the key index and the Flat index built at load are counted."""
    path = make_table(tmp_path / "tables", n=3000, dim=8, factory="Flat")
    manifest = json.loads((path / MANIFEST).read_text())
    for name in (KEY_INDEX, INDEX):
        del manifest["files"][name]
        (path / name).unlink()
    (path / MANIFEST).write_text(json.dumps(manifest))
    with running_server(tmp_path / "tables") as server:
        table = server.registry.get("t")
        assert table.memory_parts["index"] == 3000 * 8 * 4  # the exact index holds a copy of the rows
        assert table.memory_parts["keys"] == file_bytes(path, KEYS) + table.key_to_index.nbytes
        assert server.metrics.registry.get_sample_value("embserve_table_bytes", {"table": "t", "part": "keys"}) == table.memory_parts["keys"]


def test_a_tokenizer_counts_as_the_vocabulary_it_loads_not_as_its_file(tmp_path: Path) -> None:
    """tokenizer.json is parsed and dropped: the extras part holds the loaded tokenizer, a fixed
    amount a token, the same before the load (the budget's estimate) and after it."""
    from embserve_server.memory import TOKENIZER_BYTES_PER_TOKEN, estimate
    from test_transformer_tables import build_tokenizer, build_vectors, save_model, train_import

    tables = tmp_path / "tables"
    rows = build_vectors()
    assert train_import(tables, str(save_model(tmp_path / "m.safetensors", rows)), "--tokenizer", str(build_tokenizer(tmp_path / "t.json"))) == 0
    (path,) = [p for p in (tables).glob("*/*") if p.name.isdigit()]
    others = sum(size for name, size in ((n, (path / n).stat().st_size) for n in json.loads((path / MANIFEST).read_text())["files"])
                 if name not in (VECTORS, INDEX, KEYS, KEY_INDEX, "tokenizer.json"))
    with running_server(tables) as server:
        (table,) = server.registry.all()
        assert table.memory_parts["extras"] == others + len(rows) * TOKENIZER_BYTES_PER_TOKEN
        assert estimate(path)["extras"] == table.memory_parts["extras"]

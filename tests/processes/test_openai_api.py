"""``POST /v1/embeddings`` and ``GET /v1/models`` over a real HTTP port, driven by the official
``openai`` package and ``langchain-openai`` as integrators use them, plus raw HTTP for what a
library would never send. Oracle: ``Client.embed`` over gRPC on the same server."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import READ, http_site, make_pki, make_table, require_module
from embserve_client import Client
from embserve_format.labels import write_labels
from embserve_format.text import Tokenizer
from embserve_server.app import Server
from embserve_server.config import HttpLimits

openai = require_module("openai", "requirements-dev.txt: openai")

TEXTS = ["W1 w2 w3", "w7, w8!", "zebra"]


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("openai") / "tables"
    make_table(path, "words", n=300, extras={"tokenizer": Tokenizer().settings()})
    make_table(path, "words", n=300, seed=1, extras={"tokenizer": Tokenizer().settings()})  # version 2
    make_table(path, "bare", n=300)
    return path


def site(tables: Path, **config: Any) -> AbstractContextManager[tuple[Server, str]]:
    """A gRPC server and its HTTP port with the OpenAI API (conftest.http_site), serving ``words`` by default."""
    return http_site(tables, explorer=False, openai=True, default_table="words", keep_versions=2, **config)


@pytest.fixture(scope="module")
def open_site(tables: Path) -> Iterator[tuple[Server, str]]:
    with site(tables) as s:
        yield s


def post(base: str, body: bytes, token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(f"{base}/v1/embeddings", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def assert_error(answer: tuple[int, dict[str, Any]], status: int, message: str, param: str | None = None) -> None:
    got_status, body = answer
    assert got_status == status, body
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert message in body["error"]["message"] and body["error"]["param"] == param


def test_openai_client_gets_the_grpc_vectors(open_site: tuple[Server, str]) -> None:
    server, base = open_site
    ai = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    with Client(f"127.0.0.1:{server.port}") as c:
        want = c.embed(TEXTS, table="words")
        for fmt in ("float", "base64"):
            got = ai.embeddings.create(model="words", input=TEXTS, encoding_format=fmt)  # type: ignore[arg-type]
            rows = [np.frombuffer(base64.b64decode(d.embedding), "<f4") if fmt == "base64" else d.embedding for d in got.data]  # type: ignore[arg-type]
            np.testing.assert_allclose(np.array(rows, np.float32), want, atol=1e-6)
            assert [d.index for d in got.data] == [0, 1, 2] and got.model == "words@2"
            assert got.usage.prompt_tokens == 6 and got.usage.total_tokens == 6  # zebra counted, though unknown
        one = ai.embeddings.create(model="words", input="W1 w2 w3")  # the client's default: base64
        np.testing.assert_allclose(one.data[0].embedding, want[0], atol=1e-6)
        ids = ai.embeddings.create(model="words@1", input=[[1, 2, 3], [7]])
        np.testing.assert_allclose(np.array([d.embedding for d in ids.data]), c.embed([[1, 2, 3], [7]], table="words", version=1), atol=1e-6)
        assert ids.model == "words@1"
        flat = ai.embeddings.create(model="bare", input=[1, 2, 3])  # one token-id list; no tokenizer needed
        np.testing.assert_allclose(flat.data[0].embedding, c.embed([[1, 2, 3]], table="bare")[0], atol=1e-6)
    models = {m.id for m in ai.models.list()}
    assert models == {"words", "words@1", "words@2", "bare", "bare@1"}
    assert ai.models.retrieve("words@1").id == "words@1"
    assert server.metrics.registry.get_sample_value("embserve_http_requests_total", {"route": "/v1/embeddings", "status": "200"}) >= 5


def test_langchain_openai_embeddings(open_site: tuple[Server, str]) -> None:
    require_module("langchain_openai", "requirements-dev.txt: langchain-openai")
    from langchain_openai import OpenAIEmbeddings

    server, base = open_site
    # check_embedding_ctx_length=False: send texts, not tiktoken ids (what any non-OpenAI server needs).
    emb = OpenAIEmbeddings(model="words", base_url=f"{base}/v1", api_key="unused", check_embedding_ctx_length=False, max_retries=0)
    with Client(f"127.0.0.1:{server.port}") as c:
        np.testing.assert_allclose(np.array(emb.embed_documents(TEXTS[:2]), np.float32), c.embed(TEXTS[:2]), atol=1e-6)
        np.testing.assert_allclose(emb.embed_query("w9 w10"), c.embed(["w9 w10"])[0], atol=1e-6)


def test_bad_input_answers_in_openai_error_shape(open_site: tuple[Server, str]) -> None:
    _, base = open_site
    ai = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as err:
        ai.embeddings.create(model="nope", input="w1")
    assert err.value.status_code == 404 and err.value.code == "model_not_found" and "'nope'" in err.value.message
    with pytest.raises(openai.NotFoundError, match="version 7"):
        ai.embeddings.create(model="words@7", input="w1")
    assert_error(post(base, b'{"model": "words", "input": '), 400, "not valid JSON")
    assert_error(post(base, b'["w1"]'), 400, "is a JSON list, expected an object")
    assert_error(post(base, b'{"input": "w1"}'), 400, "model: give a served table", "model")
    assert_error(post(base, json.dumps({"model": "words", "input": []}).encode()), 400, "input: give a string", "input")
    assert_error(post(base, json.dumps({"model": "words", "input": ["w1", 3]}).encode()), 400, "only strings", "input")
    assert_error(post(base, json.dumps({"model": "words", "input": ["w1", ""]}).encode()), 400, "texts[1]: an empty text", "input")
    assert_error(post(base, json.dumps({"model": "words", "input": "w1", "encoding_format": "hex"}).encode()), 400, "'hex'", "encoding_format")
    assert_error(post(base, json.dumps({"model": "words", "input": "w1", "dimensions": 4}).encode()), 400, "PCA-ordered", "input")
    assert_error(post(base, json.dumps({"model": "bare", "input": "w1"}).encode()), 400, "table 'bare' has no tokenizer", "input")
    assert_error(post(base, json.dumps({"model": "words", "input": [[1, 300]]}).encode()), 400, "id 300 is out of range", "input")
    status, body = post(base, json.dumps({"model": "words", "input": "zebra"}).encode())  # only unknown tokens
    assert status == 200 and not any(body["data"][0]["embedding"]) and body["usage"]["prompt_tokens"] == 1


def test_huge_body_refused_before_it_is_read(tables: Path) -> None:
    with site(tables, http=HttpLimits(max_body_bytes=1 << 20)) as (_, base):
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n")
            answer = b""
            while chunk := s.recv(65536):  # the server answers and closes without waiting for 100 MB
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 ") and b"connection: close" in head.lower()
        error = json.loads(body)["error"]
        assert error["code"] == "request_too_large" and "100000000 bytes is over the limit of 1048576 bytes" in error["message"]
        ok = post(base, json.dumps({"model": "words", "input": ["w1 " * 1000] * 100}).encode())  # ~400 kB: under it
        assert ok[0] == 200 and len(ok[1]["data"]) == 100


def test_tokens_tls_and_admission(tables: Path, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{READ} read\n")
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    with site(tables, auth_token_file=tokens, tls_cert=pki / "server.pem", tls_key=pki / "server.key", max_concurrent_rpcs=4,
              http=HttpLimits(api_threads=1)) as (server, base):
        import httpx

        http = httpx.Client(verify=ssl.create_default_context(cafile=str(pki / "ca.pem")))
        with pytest.raises(openai.AuthenticationError) as err:
            openai.OpenAI(base_url=f"{base}/v1", api_key="wrong", max_retries=0, http_client=http).embeddings.create(model="words", input="w1")
        assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
        ai = openai.OpenAI(base_url=f"{base}/v1", api_key=READ, max_retries=0, http_client=http)
        with Client(f"127.0.0.1:{server.port}", token=READ, root_certificates=(pki / "ca.pem").read_bytes()) as c:
            got = ai.embeddings.create(model="words", input=TEXTS, encoding_format="float")
            np.testing.assert_allclose(np.array([d.embedding for d in got.data], np.float32), c.embed(TEXTS), atol=1e-6)
        assert server.admission is not None
        with server.admission.http_call():  # the HTTP API's share of the limit (1) is taken
            with pytest.raises(openai.RateLimitError) as limited:
                ai.embeddings.create(model="words", input="w1")
        assert limited.value.status_code == 429


def test_base64_is_little_endian_float32(open_site: tuple[Server, str]) -> None:
    _, base = open_site
    status, body = post(base, json.dumps({"model": "words", "input": TEXTS, "encoding_format": "base64"}).encode())
    _, floats = post(base, json.dumps({"model": "words", "input": TEXTS}).encode())
    assert status == 200
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in body["data"]])
    np.testing.assert_array_equal(decoded, np.array([d["embedding"] for d in floats["data"]], np.float32))


def test_model_names_a_version_label(tmp_path: Path) -> None:
    """``model: "name@stable"`` reads the version the label names, as version_label does over gRPC."""
    tables = tmp_path / "tables"
    for seed in (0, 1):
        make_table(tables, "words", n=300, seed=seed, extras={"tokenizer": Tokenizer().settings()})
    write_labels(tables, "words", {"stable": 1, "canary": 2})
    with site(tables) as (server, base):
        ai = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        with Client(f"127.0.0.1:{server.port}") as c:
            for label, version in (("stable", 1), ("canary", 2)):
                got = ai.embeddings.create(model=f"words@{label}", input=TEXTS, encoding_format="float")
                assert got.model == f"words@{version}"
                want = c.embed(TEXTS, table="words", version_label=label)
                np.testing.assert_allclose(np.array([d.embedding for d in got.data], np.float32), want, atol=1e-6)
            assert not np.allclose(c.embed(TEXTS, table="words", version=1), c.embed(TEXTS, table="words", version=2))
        assert {"words@stable", "words@canary"} <= {m.id for m in ai.models.list()}
        with pytest.raises(openai.NotFoundError, match="beta"):
            ai.embeddings.create(model="words@beta", input="w1")

"""``embserve``: a person's command line for an embserve server (similar, vector, embed, tokenize, tables, health)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from embserve_client import __version__
from embserve_client.client import Client
from embserve_client.core import DEFAULT_TARGET, DEFAULT_TRUNCATE
from embserve_client.errors import EmbserveError
from embserve_client.results import Neighbor


def _client(args: argparse.Namespace) -> Client:
    token = None
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as f:
            token = f.read().strip()
    ca = None
    if args.ca:
        with open(args.ca, "rb") as f:
            ca = f.read()
    return Client(args.target, timeout=args.timeout, token=token, root_certificates=ca, tls=args.tls)


def print_neighbors(neighbors: Sequence[Neighbor], out: object = sys.stdout) -> None:
    width = max((len(n.key) for n in neighbors), default=4)
    for rank, n in enumerate(neighbors, 1):
        print(f"{rank:>3}  {n.key:<{width}}  {n.score:.4f}", file=out)  # type: ignore[call-overload]


def cmd_similar(args: argparse.Namespace) -> int:
    with _client(args) as c:
        result = c.most_similar(
            args.positive, args.negative or None, topn=args.topn, table=args.table, exact=args.exact, restrict_vocab=args.restrict_vocab
        )
    query = " + ".join(args.positive) + "".join(f" - {k}" for k in args.negative or [])
    print(f"nearest to {query}:")
    print_neighbors(result)
    return 0


def cmd_vector(args: argparse.Namespace) -> int:
    with _client(args) as c:
        res = c.lookup(args.keys, table=args.table, missing="zero" if args.allow_missing else "error")
    with np.printoptions(precision=4, suppress=True, linewidth=100):
        for key, found, vec in zip(args.keys, res.found, res.vectors):
            print(f"{key} ({res.table} v{res.version}){'' if found else ' [missing: zeros]'}\n{vec}")
    return 0


def cmd_tokenize(args: argparse.Namespace) -> int:
    """Token ids and strings of a text (tokenizer tables) and each token's nearest tokens."""
    with _client(args) as c:
        (tok,) = c.tokenize(" ".join(args.text), table=args.table, add_special_tokens=args.special)
        neighbors: list[list[Neighbor]] = [[] for _ in tok.ids]
        if tok.ids and args.topn > 0:
            neighbors = c.most_similar_batch(
                [c.query(positive_ids=[i]) for i in tok.ids], topn=args.topn, table=args.table,
                skip_special_tokens=not args.keep_special, skip_subword_tokens=not args.keep_subwords,
            )
    id_width = max((len(str(i)) for i in tok.ids), default=2)
    tok_width = max((len(t) for t in tok.tokens), default=5)
    print(f"{len(tok.ids)} tokens" + (f"; nearest {args.topn} tokens of each" if args.topn > 0 else ""))
    for i, token, near in zip(tok.ids, tok.tokens, neighbors, strict=True):
        shown = "  ".join(f"{n.key} {n.score:.3f}" for n in near)
        print(f"{i:>{id_width}}  {token:<{tok_width}}  {shown}".rstrip())
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    """One vector per text (each argument is one text); ``--json``: one JSON array per line."""
    with _client(args) as c:
        vectors = c.embed(
            args.texts, table=args.table, normalize=not args.no_normalize, truncate=args.truncate, dimensions=args.dimensions or None
        )
        near = [c.similar_by_vector(v, topn=args.topn, table=args.table) if args.topn > 0 and v.any() else [] for v in vectors]
    if args.json:
        for vec in vectors:
            print(json.dumps([float(x) for x in vec]))
        return 0
    with np.printoptions(precision=4, suppress=True, linewidth=100, threshold=16, edgeitems=4):  # all values: --json
        for text, vec, neighbors in zip(args.texts, vectors, near, strict=True):
            note = "" if vec.any() else " [no known token: zeros]"
            print(f"{text!r} ({len(vec)} dims){note}\n{vec}")
            if neighbors:
                print("nearest tokens: " + "  ".join(f"{n.key} {n.score:.3f}" for n in neighbors))
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    with _client(args) as c:
        tables = c.list_tables()
    if args.memory:
        print(f"{'name':<16} {'version':>7} {'rows':>9} {'raw rows':>10} {'index':>10} {'keys':>10} {'extras':>10} {'total':>10}")
        for t in tables:
            m = t.memory
            sizes = " ".join(f"{_mib(m.get(part, 0)):>10}" for part in ("rows", "index", "keys", "extras"))
            print(f"{t.name:<16} {t.version:>7} {t.count:>9} {sizes} {_mib(sum(m.values())):>10}")
        return 0
    print(f"{'name':<16} {'version':>7} {'rows':>9} {'dim':>5}  {'metric':<7} {'index':<14} created")
    for t in tables:
        print(f"{t.name:<16} {t.version:>7} {t.count:>9} {t.vector_size:>5}  {t.metric:<7} {t.index:<14} {t.created_at}")
    return 0


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def health_check(channel: grpc.Channel, service: str, timeout: float) -> str:
    """Standard ``grpc.health.v1`` check of ``service`` ('' = overall).

    Args:
        channel: an open channel to the server.
        service: the service name to check; '' asks about the server as a whole.
        timeout: seconds for the call.

    Returns:
        The status name: SERVING, NOT_SERVING, UNKNOWN or SERVICE_UNKNOWN.

    Raises:
        grpc.RpcError: the call failed (unreachable, NOT_FOUND for a service the server does not know).
    """
    response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def cmd_map(args: argparse.Namespace) -> int:
    """Draw the key's neighbourhood (key, neighbours, their neighbours; PCA) to an image file."""
    from embserve_client import neighbourhood

    try:
        neighbourhood.check_drawable(args.out)
        with _client(args) as c:
            nmap = neighbourhood.fetch_map(c, args.key, table=args.table, topn=args.topn, second=args.second, method=args.method)
    except (ImportError, ValueError) as exc:  # bad --out/--method/--topn, or no matplotlib
        print(f"embserve: {exc}", file=sys.stderr)
        return 2
    path = neighbourhood.draw_map(nmap, args.out)
    print(f"{path}: {len(nmap.points)} points around {args.key!r} ({nmap.table} v{nmap.version}, {nmap.method})")
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 when the server reports SERVING (for probes), 1 otherwise."""
    with _client(args) as c:
        try:
            status = health_check(c.channel, args.service, args.timeout)
        except grpc.RpcError as exc:
            print(f"{args.target}: {exc.code().name}: {exc.details()}")
            return 1
    print(f"{args.target}: {status}")
    return 0 if status == "SERVING" else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="embserve", description="Query an embserve server.")
    p.add_argument("--version", action="version", version=__version__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--target", default=os.environ.get("EMBSERVE_TARGET", DEFAULT_TARGET), help="server HOST:PORT (env EMBSERVE_TARGET)")
    common.add_argument("--table", default=None, help="table name (default: the server's default table)")
    common.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    common.add_argument("--token-file", default=os.environ.get("EMBSERVE_TOKEN_FILE"), help="file holding a bearer token")
    common.add_argument("--tls", action="store_true", help="use TLS with the system CAs")
    common.add_argument("--ca", default=None, help="PEM CA certificate for TLS")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("similar", parents=[common], help="nearest neighbours of keys (analogies with --negative)")
    s.add_argument("positive", nargs="+", help="key(s) to be near")
    s.add_argument("--negative", nargs="*", default=[], help="key(s) to move away from")
    s.add_argument("-n", "--topn", type=int, default=10)
    s.add_argument("--exact", action="store_true", help="brute-force search")
    s.add_argument("--restrict-vocab", type=int, default=0, help="only the N most frequent keys")
    s.set_defaults(func=cmd_similar)

    v = sub.add_parser("vector", parents=[common], help="print the vectors of keys")
    v.add_argument("keys", nargs="+")
    v.add_argument("--allow-missing", action="store_true", help="zeros instead of an error for missing keys")
    v.set_defaults(func=cmd_vector)

    tk = sub.add_parser("tokenize", parents=[common], help="token ids, tokens and their neighbours (tokenizer tables)")
    tk.add_argument("text", nargs="+", help="the text (several words are joined with spaces)")
    tk.add_argument("-n", "--topn", type=int, default=5, help="neighbours per token (0: none)")
    tk.add_argument("--special", action="store_true", help="add the model's special tokens ([CLS] ... [SEP])")
    tk.add_argument("--keep-special", action="store_true", help="allow special tokens among the neighbours")
    tk.add_argument("--keep-subwords", action="store_true", help="allow continuation tokens (##...) among the neighbours")
    tk.set_defaults(func=cmd_tokenize)

    e = sub.add_parser("embed", parents=[common], help="one vector per text: the weighted mean of its tokens' rows")
    e.add_argument("texts", nargs="+", help="the texts (each argument is one text)")
    e.add_argument("-n", "--topn", type=int, default=0, help="also show the N tokens nearest each text (default none)")
    e.add_argument("--no-normalize", action="store_true", help="the raw weighted mean instead of unit length")
    e.add_argument("--truncate", type=int, default=DEFAULT_TRUNCATE, help="tokens pooled per text; 0 = refuse longer texts (default %(default)s)")
    e.add_argument("--dimensions", type=int, default=0, help="first N columns (PCA-ordered tables only)")
    e.add_argument("--json", action="store_true", help="print each vector as a JSON array, one per line")
    e.set_defaults(func=cmd_embed)

    t = sub.add_parser("tables", parents=[common], help="list served tables")
    t.add_argument("--memory", action="store_true", help="bytes each table holds, by part (raw rows, index, keys, extras)")
    t.set_defaults(func=cmd_tables)

    h = sub.add_parser("health", parents=[common], help="exit 0 if the server is SERVING, else 1")
    h.add_argument("--service", default="", help="service name ('' = overall)")
    h.set_defaults(func=cmd_health)

    m = sub.add_parser("map", parents=[common], help="draw a key's neighbourhood to map.png/.svg (needs embserve-client[map])")
    m.add_argument("key", help="the key at the centre")
    m.add_argument("-o", "--out", default="map.png", help="image file; format from the suffix: .png, .svg, .pdf (default %(default)s)")
    m.add_argument("-n", "--topn", type=int, default=10, help="neighbours of the key (default %(default)s)")
    m.add_argument("--second", type=int, default=5, help="neighbours of each neighbour, 0 = none (default %(default)s)")
    m.add_argument("--method", default="pca", help="layout: pca, or tsne/umap where installed (default %(default)s)")
    m.set_defaults(func=cmd_map)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except EmbserveError as exc:
        print(f"embserve: {exc}", file=sys.stderr)
        return 1 if args.command == "health" else 2


if __name__ == "__main__":
    sys.exit(main())

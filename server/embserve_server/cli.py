"""``embserve-server``: command line of the server (the only module that reads argv/environment)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from embserve_server import __version__
from embserve_server.config import Limits, ServerConfig


def build_parser() -> argparse.ArgumentParser:
    d, lim = ServerConfig(Path(".")), Limits()
    p = argparse.ArgumentParser(prog="embserve-server", description="Serve embedding table bundles over gRPC.")
    p.add_argument("--version", action="version", version=__version__)
    p.add_argument("--tables", type=Path, required=True, help="tables root: <name>/<version>/ bundles")
    p.add_argument("--address", default=d.address, help="gRPC HOST:PORT (port 0 picks a free one; default %(default)s)")
    p.add_argument("--metrics-address", default=None, help="HOST:PORT for Prometheus /metrics (default: off)")
    p.add_argument("--explorer", action="store_true", help="serve the web explorer on the --metrics-address port")
    p.add_argument("--default-table", default=None, help="table used when a request names none")
    p.add_argument("--pin", action="append", default=[], metavar="TABLE=VERSION", help="serve exactly this version of a table (repeatable)")
    p.add_argument("--keep-versions", type=int, default=d.keep_versions, metavar="K",
                   help="keep the newest K versions of each table loaded; requests may name one (default %(default)s)")
    p.add_argument("--threads", type=int, default=d.threads, help="gRPC handler threads (default %(default)s)")
    p.add_argument("--workers", type=int, default=d.workers, help="server processes sharing the port (default %(default)s)")
    p.add_argument("--max-concurrent-rpcs", type=int, default=None, help="refuse calls beyond this many queued+running with RESOURCE_EXHAUSTED")
    p.add_argument("--tls-cert", type=Path, default=None, help="PEM server certificate: serve TLS (with --tls-key)")
    p.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", type=Path, default=None, help="PEM CA: require client certificates signed by it (mTLS)")
    p.add_argument("--auth-token-file", type=Path, default=None, help="bearer tokens, one 'TOKEN read|admin' per line (default: no auth)")
    p.add_argument("--poll-interval", type=float, default=d.poll_interval, help="seconds between scans for new versions (0 = off)")
    p.add_argument("--grace-period", type=float, default=d.grace_period, help="seconds for in-flight calls on shutdown")
    p.add_argument("--max-connection-age", type=float, default=None, metavar="SECONDS",
                   help="close client connections after this age (GOAWAY, then --grace-period) so clients re-resolve and reach new replicas (default: never)")
    p.add_argument("--no-reflection", action="store_true", help="disable gRPC server reflection")
    p.add_argument("--no-mmap", action="store_true", help="read tables into memory instead of mapping them")
    p.add_argument("--max-keys", type=int, default=lim.max_keys, help="keys/ids per Lookup (default %(default)s)")
    p.add_argument("--max-queries", type=int, default=lim.max_queries, help="queries per Search (default %(default)s)")
    p.add_argument("--max-topn", type=int, default=lim.max_topn, help="neighbours per query (default %(default)s)")
    p.add_argument("--max-ef-search", type=int, default=lim.max_ef_search, help="per-call HNSW efSearch (default %(default)s)")
    p.add_argument("--max-message-bytes", type=int, default=lim.max_message_bytes, help="gRPC message size limit")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def parse_pin(text: str) -> tuple[str, int]:
    name, sep, version = text.partition("=")
    if not sep or not version.isdigit() or int(version) <= 0:
        raise ValueError(f"--pin {text!r}: expected TABLE=VERSION with a positive version, e.g. glove=3")
    return name, int(version)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    limits = Limits(
        max_keys=args.max_keys,
        max_queries=args.max_queries,
        max_topn=args.max_topn,
        max_ef_search=args.max_ef_search,
        max_message_bytes=args.max_message_bytes,
    )
    return ServerConfig(
        tables_dir=args.tables,
        address=args.address,
        metrics_address=args.metrics_address,
        explorer=args.explorer,
        default_table=args.default_table,
        pinned=tuple(parse_pin(p) for p in args.pin),
        keep_versions=args.keep_versions,
        threads=args.threads,
        workers=args.workers,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        reflection=not args.no_reflection,
        poll_interval=args.poll_interval,
        grace_period=args.grace_period,
        max_connection_age=args.max_connection_age,
        mmap=not args.no_mmap,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        auth_token_file=args.auth_token_file,
        limits=limits,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # OMP_WAIT_POLICY stays at libgomp's default (spin briefly, then sleep): small calls run FAISS
    # on one thread (no OpenMP pool at all), and PASSIVE made exact batches of 256 ~30% slower.
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # prometheus_client picks its multiprocess value store at import time.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="embserve-metrics-")
    from embserve_server.app import serve

    try:
        return serve(config_from_args(args))
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"embserve-server: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""``embserve-server``: command line of the server, the only module that reads argv and sets the environment.

Everything below takes explicit arguments; the one environment read elsewhere is workers.py's
check of ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode reads it itself).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import sys
import tempfile
from pathlib import Path

from embserve_server import __version__
from embserve_server.config import HttpLimits, Limits, ServerConfig
from embserve_server.logformat import FORMATS, formatter


def build_parser() -> argparse.ArgumentParser:
    d, lim, http = ServerConfig(Path(".")), Limits(), HttpLimits()
    p = argparse.ArgumentParser(prog="embserve-server", description="Serve embedding table bundles over gRPC.")
    p.add_argument("--version", action="version", version=__version__)
    p.add_argument("--tables", type=Path, required=True, help="tables root: <name>/<version>/ bundles")
    p.add_argument("--address", default=d.address, help="gRPC HOST:PORT (port 0 picks a free one; default %(default)s)")
    p.add_argument("--metrics-address", default=None, help="HOST:PORT for Prometheus /metrics (default: off)")
    p.add_argument("--health-address", default=None, metavar="HOST:PORT",
                   help="also serve grpc.health.v1 alone, in plaintext, here: for probes that cannot do TLS (default: off)")
    p.add_argument("--explorer", action="store_true", help="serve the web explorer on the --metrics-address port")
    p.add_argument("--no-openai-api", action="store_true", help="do not serve /v1/embeddings and /v1/models on the --metrics-address port")
    p.add_argument("--metrics-auth", action="store_true", help="/metrics asks for a read token too (needs --auth-token-file)")
    p.add_argument("--allow-insecure-http", action="store_true",
                   help="let the HTTP port take tokens over plaintext on a non-loopback address (behind a TLS proxy)")
    p.add_argument("--http-header-timeout", type=float, default=http.header_timeout,
                   help="seconds an HTTP client has to send a request's head (default %(default)s)")
    p.add_argument("--http-idle-timeout", type=float, default=http.idle_timeout,
                   help="seconds an idle HTTP keep-alive connection stays open (default %(default)s)")
    p.add_argument("--http-max-connections", type=int, default=http.max_connections,
                   help="open HTTP connections at most (default %(default)s)")
    p.add_argument("--http-threads", type=int, default=http.api_threads, help="threads for the explorer's JSON API (default %(default)s)")
    p.add_argument("--http-max-body-bytes", type=int, default=http.max_body_bytes,
                   help="largest POST body (/v1/embeddings); a larger Content-Length is refused 413 unread (default %(default)s)")
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
    p.add_argument("--rotation-interval", type=float, default=d.rotation_interval, metavar="SECONDS",
                   help="re-read the TLS and token files when their content changes, checked this often (0 = never; default %(default)s)")
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
    p.add_argument("--max-texts", type=int, default=lim.max_texts, help="texts per Tokenize/Embed (default %(default)s)")
    p.add_argument("--max-text-chars", type=int, default=lim.max_text_chars, help="characters of one text (default %(default)s)")
    p.add_argument("--max-call-chars", type=int, default=lim.max_call_chars, help="characters of all texts of one Embed (default %(default)s)")
    p.add_argument("--max-text-tokens", type=int, default=lim.max_text_tokens, help="tokens pooled per text, the most truncate may ask (default %(default)s)")
    p.add_argument("--max-message-bytes", type=int, default=lim.max_message_bytes, help="gRPC message size limit")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    p.add_argument("--log-format", default="text", choices=FORMATS, help="text lines, or one JSON object a line (default %(default)s)")
    p.add_argument("--log-calls", action="store_true", help="log every call, not only failed and refused ones")
    p.add_argument("--log-rate", type=float, default=d.log_rate, metavar="LINES",
                   help="failed/refused call lines per second at most; the rest are counted in the next line (default %(default)s)")
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
        max_texts=args.max_texts,
        max_text_chars=args.max_text_chars,
        max_call_chars=args.max_call_chars,
        max_text_tokens=args.max_text_tokens,
        max_message_bytes=args.max_message_bytes,
    )
    http = HttpLimits(
        header_timeout=args.http_header_timeout,
        idle_timeout=args.http_idle_timeout,
        max_connections=args.http_max_connections,
        api_threads=args.http_threads,
        max_body_bytes=args.http_max_body_bytes,
    )
    return ServerConfig(
        tables_dir=args.tables,
        address=args.address,
        metrics_address=args.metrics_address,
        explorer=args.explorer,
        openai_api=not args.no_openai_api,
        metrics_auth=args.metrics_auth,
        allow_insecure_http=args.allow_insecure_http,
        default_table=args.default_table,
        pinned=tuple(parse_pin(p) for p in args.pin),
        keep_versions=args.keep_versions,
        threads=args.threads,
        workers=args.workers,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        reflection=not args.no_reflection,
        health_address=args.health_address,
        poll_interval=args.poll_interval,
        grace_period=args.grace_period,
        max_connection_age=args.max_connection_age,
        mmap=not args.no_mmap,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        auth_token_file=args.auth_token_file,
        rotation_interval=args.rotation_interval,
        log_calls=args.log_calls,
        log_rate=args.log_rate,
        limits=limits,
        http=http,
    )


MALLOC_ARENAS = 2  # glibc malloc arenas for the whole process (its default: 8 per core)
_M_ARENA_MAX = -8  # mallopt parameter number in glibc's malloc.h


def limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas unless ``MALLOC_ARENA_MAX`` is set (then glibc already obeys it).

    Each gRPC handler thread would otherwise get an arena of its own, and freed memory (a reloaded
    table's HNSW graph, large responses) stays in the arena that freed it: bench/bench_soak.py saw
    RSS grow 19% over 10 minutes of mixed load with reloads, and +3.6% with two arenas.
    Only glibc has ``mallopt``; elsewhere this does nothing.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
    except (OSError, AttributeError):
        pass


def limit_blas_threads() -> None:
    """Run numpy's BLAS on the calling thread only (FAISS's OpenMP BLAS and pool are left alone).

    numpy's OpenBLAS is built with its own pthread pool, whose threads spin after every call:
    the exact re-rank of a quantized index (1,760 candidate rows x 300-d for one IVF-PQ query)
    cost 4.3 ms of server CPU a call with it, 2.2 ms without, the same wall time. Requests run
    concurrently already; FAISS keeps its OpenMP threads for big batches (``embserve_index.search``).
    """
    import numpy  # noqa: F401  # threadpoolctl finds the BLAS of loaded modules only
    from threadpoolctl import ThreadpoolController

    for lib in ThreadpoolController().lib_controllers:
        if lib.info().get("threading_layer") == "pthreads":
            lib.set_num_threads(1)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(args.log_format))
    logging.basicConfig(level=args.log_level, handlers=[handler])
    # faiss' loader logs at INFO each CPU build it tries, with "ModuleNotFoundError" for those this wheel
    # lacks: harmless, but it reads like a failure as the server's first lines. Shown at DEBUG.
    logging.getLogger("faiss.loader").setLevel(logging.DEBUG if args.log_level == "DEBUG" else logging.WARNING)
    # OMP_WAIT_POLICY stays at libgomp's default (spin briefly, then sleep): small calls run FAISS
    # on one thread (no OpenMP pool at all), and PASSIVE made exact batches of 256 ~30% slower.
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # prometheus_client picks its multiprocess value store at import time.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="embserve-metrics-")
    limit_malloc_arenas()
    limit_blas_threads()
    from embserve_server.app import serve

    try:
        return serve(config_from_args(args))
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"embserve-server: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

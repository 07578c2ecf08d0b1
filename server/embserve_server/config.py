"""Server configuration: one frozen dataclass with every default in one block."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from embserve_format import limits


@dataclass(frozen=True)
class Limits:
    """Request limits; anything beyond them is refused with INVALID_ARGUMENT naming the limit."""

    max_keys: int = limits.MAX_KEYS_PER_CALL  # keys or ids per Lookup
    max_queries: int = limits.MAX_QUERIES_PER_CALL  # queries per Search
    max_terms: int = 64  # positive + negative keys/ids per query
    max_pairs: int = limits.MAX_PAIRS_PER_CALL  # pairs per Similarity/EvaluateWordPairs, questions per EvaluateWordAnalogies
    max_topn: int = 1_000
    max_key_chars: int = 1_024
    max_texts: int = limits.MAX_TEXTS_PER_CALL  # texts per Tokenize / Embed (inputs per /v1/embeddings)
    max_text_chars: int = limits.MAX_TEXT_CHARS  # characters of one text
    max_call_chars: int = limits.MAX_CALL_CHARS  # characters of all texts of one Embed
    max_text_tokens: int = limits.MAX_TEXT_TOKENS  # tokens pooled per text (the most `truncate` may ask)
    max_ef_search: int = 4_096  # per-call HNSW effort (FAISS allocates O(efSearch) per query)
    max_nprobe: int = 65_536  # per-call IVF lists probed
    max_message_bytes: int = limits.MAX_MESSAGE_BYTES  # gRPC send and receive


@dataclass(frozen=True)
class HttpLimits:
    """The HTTP side port's (``/metrics``, explorer, ``/v1/embeddings``) defences against slow and numerous clients."""

    header_timeout: float = 10.0  # seconds from connect (or a request's first byte) to its complete head;
    # also the TLS handshake and each response write
    idle_timeout: float = 30.0  # seconds a keep-alive connection may wait for its next request
    max_connections: int = 256  # open connections; beyond it the oldest idle one is closed, else 503
    api_threads: int = 2  # threads for the explorer's JSON API (CPU-bound); also its share of admission
    max_header_bytes: int = 16 * 1024  # request line + headers; beyond it 431
    max_body_bytes: int = 16 << 20  # a POST body (/v1/embeddings); a larger Content-Length is 413 unread


@dataclass(frozen=True)
class ServerConfig:
    tables_dir: Path
    address: str = "127.0.0.1:50051"
    metrics_address: str | None = None  # "HOST:PORT" for /metrics; None = no metrics endpoint
    explorer: bool = False  # serve the web explorer (/, /api/*) on the metrics_address port
    openai_api: bool = True  # serve /v1/embeddings and /v1/models (OpenAI's shapes) on the metrics_address port
    metrics_auth: bool = False  # /metrics asks for a bearer token too (default open, as Prometheus expects)
    allow_insecure_http: bool = False  # tokens over plaintext HTTP on a non-loopback address (tls.py)
    default_table: str | None = None  # used when a request names no table; default: the only/first one
    pinned: tuple[tuple[str, int], ...] = ()  # (table, version): serve exactly that version
    keep_versions: int = 1  # newest valid versions of each table kept loaded (requests may name one)
    threads: int = 8  # gRPC handler threads
    workers: int = 1  # serving processes sharing the port (SO_REUSEPORT), forked before any server exists
    max_concurrent_rpcs: int | None = None  # queued + running calls; beyond it RESOURCE_EXHAUSTED (admission.py)
    reflection: bool = True
    # "HOST:PORT" of a plaintext port serving grpc.health.v1 only (probes that cannot do TLS); None = off
    health_address: str | None = None
    poll_interval: float = 0.0  # seconds between scans for new versions; 0 = no polling
    grace_period: float = 10.0  # seconds to finish in-flight calls on SIGTERM
    # Seconds before the server asks a client to reconnect (GOAWAY), so long-lived connections
    # re-resolve and reach new replicas; in-flight calls then get grace_period to finish. None = never.
    max_connection_age: float | None = None
    mmap: bool = True  # memory-map vectors and flat index storage
    verify_checksums: bool = True
    tls_cert: Path | None = None  # PEM server certificate (chain); with tls_key turns TLS on
    tls_key: Path | None = None  # PEM private key of tls_cert
    tls_client_ca: Path | None = None  # PEM CA: require and verify client certificates (mutual TLS)
    auth_token_file: Path | None = None  # lines "TOKEN read|admin"; None = no auth
    # Seconds between checks of the TLS and token files for new content (rotation.py); 0 = read once.
    rotation_interval: float = 10.0
    log_calls: bool = False  # one log line per call; without it only failed and refused calls (call_log.py)
    log_rate: float = 10.0  # failed/refused call lines per second at most; the rest are counted, not written
    limits: Limits = field(default_factory=Limits)
    http: HttpLimits = field(default_factory=HttpLimits)

"""The HTTP side port: ``/metrics`` for Prometheus (and, opt-in, the explorer)."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, start_http_server

logger = logging.getLogger(__name__)


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"address {address!r}: expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def start_metrics_http(address: str, registry: CollectorRegistry) -> int:
    """Serve ``/metrics`` on ``address`` in a daemon thread; returns the bound port."""
    host, port = split_address(address)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    bound = int(server.server_address[1])
    logger.info("metrics on http://%s:%d/metrics", host, bound)
    return bound

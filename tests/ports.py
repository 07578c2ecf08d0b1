"""A free TCP port on the loopback interface: the one helper tests and benchmarks share (stdlib only)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port no socket on 127.0.0.1 holds right now (bound then released: port-0 servers are better)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

"""Free TCP ports on 127.0.0.1."""

from __future__ import annotations

import socket

from devstack.probes import http_get  # re-exported: devstack.up imports it from here

__all__ = ["LOOPBACK", "free_port", "http_get"]

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port

"""A misbehaving upstream for the e2e tests: answers each path with exactly the bytes it names.

Envoy's replies to a broken upstream (502, 503, 504) and the gateway's handling of an
upstream's own error bodies need an upstream that sends what no well-behaved server would.
"""

from __future__ import annotations

import gzip
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


def _reply(status: str, headers: dict[str, str], body: bytes) -> bytes:
    head = [f"HTTP/1.1 {status}", f"content-length: {len(body)}", "connection: close"]
    head += [f"{key}: {value}" for key, value in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


PROBLEM_409 = b'{"type":"https://backend.example/conflict","title":"Conflict","status":409}'
# path (below /api/v1/odd/) -> the raw bytes sent back
REPLIES: dict[str, bytes] = {
    "garbage": b"this is not HTTP\r\n\r\n",
    "plain-503": _reply("503 Service Unavailable",
                        {"content-type": "text/plain", "retry-after": "7"}, b"backend down"),
    "json-404": _reply("404 Not Found", {"content-type": "application/json"},
                       b'{"error": "no such order", "trace": "at OrderRepo.find"}'),
    "html-500": _reply("500 Internal Server Error", {"content-type": "text/html"},
                       b"<pre>Traceback (most recent call last)...</pre>"),
    "gzip-502": _reply("502 Bad Gateway",
                       {"content-type": "text/plain", "content-encoding": "gzip"},
                       gzip.compress(b"upstream of the upstream failed")),
    "bare-401": _reply("401 Unauthorized", {"www-authenticate": 'Basic realm="backend"'}, b""),
    "problem-409": _reply("409 Conflict", {"content-type": "application/problem+json"},
                          PROBLEM_409),
    "ok": _reply("200 OK", {"content-type": "text/plain"}, b"fine"),
    # an error body larger than any buffer of Envoy's (1 MiB): replaced all the same
    "huge-503": _reply("503 Service Unavailable", {"content-type": "text/plain"}, b"x" * (3 << 20)),
    # the same without a length: chunked, 3 MiB
    "huge-chunked-500": (
        b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/html\r\n"
        b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (1 << 16, b"y" * (1 << 16)) for _ in range(48))
        + b"0\r\n\r\n"
    ),
}  # fmt: skip


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(10)
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                return
            head += chunk
        path = head.split(b" ", 2)[1].decode(errors="replace")
        name = path.split("?", 1)[0].rsplit("/", 1)[-1]
        if name == "slow":
            # the behaviour under test: longer than the odd upstream's routes' timeout
            time.sleep(3)
            name = "ok"
        sock.sendall(REPLIES.get(name, REPLIES["garbage"]))


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextmanager
def odd_upstream() -> Iterator[int]:
    """Serve on a free loopback port until the block ends; yields the port."""
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, name="odd-upstream", daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)

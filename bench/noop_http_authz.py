"""Calibration (0b): a bare HTTP ext_authz that always allows (`python -m bench.noop_http_authz
HOST:PORT`): an asyncio Protocol on uvloop with httptools answering 200 with one header.

The cost of Python + Envoy's `http_service` ext_authz with no pipeline at all, beside (0)'s
grpc.aio; several processes share the port (SO_REUSEPORT) as the service's workers do.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import httptools
import uvloop

_ALLOW = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-authz-decision: allow\r\n\r\n"
_HEALTH = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class AllowAll(asyncio.Protocol):
    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            assert self._transport is not None
            self._transport.close()

    def on_message_begin(self) -> None:
        self._url = b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_message_complete(self) -> None:
        assert self._transport is not None
        self._transport.write(_HEALTH if self._url == b"/health" else _ALLOW)


async def serve(address: str) -> None:
    host, _, port = address.rpartition(":")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(AllowAll, host, int(port), reuse_port=True, backlog=1024)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    uvloop.run(serve(sys.argv[1]))

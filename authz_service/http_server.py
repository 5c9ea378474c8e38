"""The HTTP ext_authz server: its listening socket (shared by workers), health, sweeps, drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import orjson

from authz_service import http_wire
from authz_service.checker import Checker
from authz_service.health import HealthBoard
from authz_service.http_connection import HttpConnection, HttpLimits

log = logging.getLogger(__name__)

HEALTH_PATH = "/health"
_SWEEP_SECONDS = 0.5


def split_address(address: str) -> tuple[str, int]:
    """host:port (or [v6]:port); ValueError naming the address otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{address!r} is not host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


class HttpCheckServer:
    """Serves checks under /check and health under /health on one address.

    With `reuse_port` every worker process binds the same port (SO_REUSEPORT) and the kernel
    spreads new connections over them; Envoy's HTTP/1.1 pool opens many.
    """

    def __init__(
        self,
        checker: Checker,
        health: HealthBoard,
        address: str,
        limits: HttpLimits,
        *,
        reuse_port: bool = False,
    ) -> None:
        self.checker = checker
        self.health = health
        self.address = address
        self.limits = limits
        self.reuse_port = reuse_port
        self.draining = False
        self.connections: set[HttpConnection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:  # once: on 3.11 each look-up costs a getpid() system call
            self._loop = asyncio.get_running_loop()
        return self._loop

    def now(self) -> float:
        return time.monotonic()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.address.startswith("unix:") and self.reuse_port:
            raise OSError("AUTHZ_HTTP_ADDRESS: workers share a TCP port, not a unix socket")
        try:
            if self.address.startswith("unix:"):
                self._server = await loop.create_unix_server(
                    lambda: HttpConnection(self), self.address.removeprefix("unix:"), backlog=1024
                )
            else:
                host, port = split_address(self.address)
                self._server = await loop.create_server(
                    lambda: HttpConnection(self),
                    host,
                    port,
                    reuse_port=self.reuse_port or None,
                    backlog=1024,
                )
        except (OSError, ValueError) as error:
            message = f"AUTHZ_HTTP_ADDRESS: cannot listen on {self.address}: {error}"
            raise OSError(message) from error
        self._sweeper = loop.create_task(self._sweep(), name="http-sweep")
        log.info("HTTP ext_authz listening", extra={"address": self.address})

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_SECONDS)
            now = self.now()
            for connection in list(self.connections):
                connection.expire(now)

    def stop_accepting(self) -> None:
        """Drain: no new connections; answers carry `connection: close`; idle ones close."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.close_if_idle()

    async def stop(self, grace: float) -> None:
        """Let in-flight checks finish (each journals before it answers), then close."""
        self.stop_accepting()
        await self.checker.wait_idle(grace)
        await asyncio.sleep(0)  # the last answers are written by their own tasks
        for connection in list(self.connections):
            connection.close_if_idle()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)

    def local_reply(self, method: str, target: str, close: bool) -> bytes:
        """/health (200 while serving, 503 otherwise, JSON per component), else 404."""
        path = target.split("?", 1)[0]
        health = path == HEALTH_PATH or path.startswith(HEALTH_PATH + "/")
        if method in ("GET", "HEAD") and health:
            return self._health_reply(path.removeprefix(HEALTH_PATH).lstrip("/"), method, close)
        return http_wire.problem_response(
            404, "not_found", "checks are sent under /check, health is /health", close=close
        )

    def _health_reply(self, component: str, method: str, close: bool) -> bytes:
        if component and not self.health.known(component):
            return http_wire.problem_response(
                404, "not_found", f"no health component {component[:64]!r}", close=close
            )
        up = self.health.serving(component) and not (component == "" and self.draining)
        body = orjson.dumps(
            {"status": "SERVING" if up else "NOT_SERVING", "components": self.health.snapshot()}
            if not component
            else {"status": "SERVING" if up else "NOT_SERVING", "component": component}
        )
        headers = [("content-type", "application/json"), ("cache-control", "no-store")]
        sent = b"" if method == "HEAD" else body
        return http_wire.response(200 if up else 503, headers, sent, len(body), close=close)

"""One HTTP ext_authz connection: an asyncio Protocol with httptools, no framework on the path.

HTTP/1.1 keep-alive, pipelined requests answered in order, strict limits (header count and
bytes, a deadline for the head, no body), 400/408/431 and close on anything else, and a
bounded number of requests in flight per connection (reading pauses beyond it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from dataclasses import dataclass
from typing import Protocol, cast

import httptools

from authz_service import http_wire
from authz_service.check_context import CheckContext
from authz_service.checker import Checker
from authz_service.metrics import HTTP_CONNECTIONS, HTTP_REFUSED
from authz_service.pipeline import CheckOutcome

log = logging.getLogger(__name__)

# kept back from Envoy's own timeout so the denial still reaches it
_DEADLINE_MARGIN_SECONDS = 0.02


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_headers: int = 64
    max_head_bytes: int = 64 * 1024
    max_pipelined: int = 32
    header_timeout_seconds: float = 10.0
    idle_timeout_seconds: float = 300.0


class ConnectionOwner(Protocol):
    """What a connection needs of its server."""

    limits: HttpLimits
    checker: Checker

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    draining: bool
    connections: set[HttpConnection]

    def now(self) -> float: ...

    def local_reply(self, method: str, target: str, close: bool) -> bytes:
        """The answer to a request that is not a check (health, unknown path)."""
        ...


class _Refusal(Exception):  # noqa: N818 - raised inside parser callbacks, read back by the caller
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


class _Slot:
    """One request's place in the connection's answer order."""

    __slots__ = ("close", "data", "task")

    def __init__(self, close: bool, data: bytes | None = None) -> None:
        self.close = close
        self.data = data
        self.task: asyncio.Task[None] | None = None


class HttpConnection(asyncio.Protocol):
    """One client connection (Envoy's pool keeps it alive)."""

    def __init__(self, server: ConnectionOwner) -> None:
        self._server = server
        self._limits = server.limits
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._pending: deque[_Slot] = deque()
        self._url = b""
        self._headers: dict[str, str] = {}
        self._head_bytes = 0
        self._head_started: float | None = None
        self._idle_since: float | None = None
        self._refusal: _Refusal | None = None
        self._closing = self._reading_paused = self._writing_paused = False

    # --- transport events ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._idle_since = self._server.now()
        self._server.connections.add(self)
        HTTP_CONNECTIONS.inc()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        HTTP_CONNECTIONS.dec()
        self._closing = True
        for slot in self._pending:  # nobody reads these answers: each check journals as cancelled
            if slot.task is not None:
                slot.task.cancel()
        self._pending.clear()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(_Refusal(400, "bad_request", "protocol upgrades are not accepted"))
        except httptools.HttpParserError as error:
            refusal = self._refusal or _Refusal(400, "bad_request", f"malformed request: {error}")
            self._refuse(refusal)

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._maybe_resume_reading()

    # --- parser callbacks ---

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._head_bytes = 0
        self._head_started = self._server.now()
        self._idle_since = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._grow(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        # the hot path: about ten calls per check; limits first, one dict lookup
        self._head_bytes += len(name) + len(value) + 4
        headers = self._headers
        if self._head_bytes > self._limits.max_head_bytes:
            self._fail(431, "request_header_fields_too_large", "the request head is too large")
        if len(headers) >= self._limits.max_headers:
            self._fail(431, "request_header_fields_too_large", "too many header fields")
        key = name.lower().decode("latin-1")
        text = value.decode("utf-8", "replace")
        if key in headers:
            headers[key] = f"{headers[key]},{text}"
        else:
            headers[key] = text

    def on_headers_complete(self) -> None:
        self._head_started = None
        if self._parser.should_upgrade():
            self._fail(400, "bad_request", "protocol upgrades are not accepted")
        length = self._headers.get("content-length")
        if "transfer-encoding" in self._headers or (length is not None and length != "0"):
            self._fail(400, "bad_request", "a check request has no body")

    def on_body(self, body: bytes) -> None:
        self._fail(400, "bad_request", "a check request has no body")

    def on_message_complete(self) -> None:
        method = self._parser.get_method().decode("ascii")
        close = not self._parser.should_keep_alive() or self._server.draining
        target = self._url.decode("utf-8", "replace")
        path = http_wire.check_path(target)
        if path is None:
            self._answer_now(self._server.local_reply(method, target, close), close)
            return
        slot = _Slot(close)
        self._pending.append(slot)
        slot.task = self._server.loop.create_task(self._check(slot, method, path, self._headers))
        if len(self._pending) >= self._limits.max_pipelined:
            self._pause_reading()

    # --- answering, in order ---

    async def _check(self, slot: _Slot, method: str, path: str, headers: dict[str, str]) -> None:
        try:
            check = http_wire.check_context(method, path, headers)
            checker = self._server.checker
            budget = checker.deadline(http_wire.caller_budget(headers), _DEADLINE_MARGIN_SECONDS)
            out = await checker.check(check, budget)
            slot.data = _encode(out, check, head_only=method == "HEAD", close=slot.close)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("HTTP check failed")  # fail closed: never an allow
            slot.data = http_wire.problem_response(
                503, "internal_error", "the request could not be authorized", close=slot.close
            )
        self._flush()

    def _answer_now(self, data: bytes, close: bool) -> None:
        self._pending.append(_Slot(close, data))
        self._flush()

    def _flush(self) -> None:
        transport = self._transport
        pending = self._pending
        if transport is None or transport.is_closing():
            return
        while pending and pending[0].data is not None:
            slot = pending.popleft()
            assert slot.data is not None
            transport.write(slot.data)
            if slot.close:
                self._close_after_write()
                return
        if not pending:
            self._idle_since = self._server.now()
        self._maybe_resume_reading()

    # --- refusals, limits, closing ---

    def _grow(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self._limits.max_head_bytes:
            self._fail(431, "request_header_fields_too_large", "the request head is too large")

    def _fail(self, status: int, code: str, detail: str) -> None:
        self._refusal = _Refusal(status, code, detail)
        raise self._refusal

    def _refuse(self, refusal: _Refusal) -> None:
        """Answer the requests before it, then this refusal, then close."""
        HTTP_REFUSED.labels(refusal.code).inc()
        self._closing = True
        self._head_started = None
        self._pause_reading()
        self._answer_now(
            http_wire.problem_response(refusal.status, refusal.code, refusal.detail, close=True),
            close=True,
        )

    def _close_after_write(self) -> None:
        self._closing = True
        for slot in self._pending:
            if slot.task is not None:
                slot.task.cancel()
        self._pending.clear()
        if self._transport is not None:
            self._transport.close()  # flushes what is buffered first

    def expire(self, now: float) -> None:
        """The server's sweep: a head that takes too long (slow client), an idle connection."""
        started, idle = self._head_started, self._idle_since
        if self._reading_paused:  # the rest of a head waits on us, not on the client
            return
        if started is not None and now - started > self._limits.header_timeout_seconds:
            self._refuse(_Refusal(408, "request_timeout", "the request head took too long"))
        elif idle is not None and now - idle > self._limits.idle_timeout_seconds:
            self.close_if_idle()

    def close_if_idle(self) -> None:
        if not self._pending and self._head_started is None and self._transport is not None:
            self._closing = True
            self._transport.close()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            with contextlib.suppress(RuntimeError):
                self._transport.pause_reading()

    def _maybe_resume_reading(self) -> None:
        if (
            self._reading_paused
            and not self._closing
            and not self._writing_paused
            and len(self._pending) < self._limits.max_pipelined
            and self._transport is not None
        ):
            self._reading_paused = False
            with contextlib.suppress(RuntimeError):
                self._transport.resume_reading()


def _encode(out: CheckOutcome, check: CheckContext, *, head_only: bool, close: bool) -> bytes:
    if out.denial is not None:
        return http_wire.denied_response(out.denial, check, head_only=head_only, close=close)
    assert out.allowance is not None
    return http_wire.allowed_response(out.allowance, close=close)

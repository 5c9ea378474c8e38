"""Tails Envoy's access-log files: complete lines only, chained per stream, rotated when shipped.

A stream is one entry point's log path. Its position is (generation, offset): generation g is
the rotated file `<path>.<g>` while that exists, else the live file (which becomes `<path>.<g>`
when rotated). Rotation renames the live file, then asks Envoy to reopen its logs (POST
/reopen_logs on its admin); Envoy closes the old file (writing what it buffered to the new
one), so once the new live file exists the old one is complete: it is read to its end, then
removed after its last line is committed.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from authz_service.audit.chain import Chain
from authz_service.audit.envoy_log import UnreadableLineError, completion_of
from authz_service.shipper import metrics
from authz_service.shipper.model import Item, Position, Progress, SourceKey

log = logging.getLogger(__name__)

TAIL_BYTES = 16384  # of the last line read, checked against the file before reading on

FIRST = Position(1, 0)
READ_CHUNK = 8 << 20  # at most this much of a file per read
REOPEN_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class Stream:
    """One Envoy's access log (from render's manifest)."""

    name: str
    gateway_type: str
    path: Path
    # Envoy's admin, for /reopen_logs: host:port (loopback) or unix:<socket path>
    admin: str | None


def stream_key(stream: Stream) -> SourceKey:
    return SourceKey("access_log", f"{socket.gethostname()}:{stream.path}")


def load_manifest(path: Path, names: tuple[str, ...] = ()) -> list[Stream]:
    """Render's `build/audit/access_logs.json`, only the entry points `names` when given (a pod
    runs one Envoy); a bad manifest or an unknown name is a ValueError naming the file."""
    try:
        entries = orjson.loads(path.read_bytes())["access_logs"]
        streams = [
            Stream(e["name"], e["gateway_type"], Path(e["path"]), e.get("admin") or None)
            for e in entries
        ]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not an access-log manifest ({error!r})") from error
    unknown = sorted(set(names) - {stream.name for stream in streams})
    if unknown:
        known = ", ".join(stream.name for stream in streams)
        raise ValueError(f"{path}: no access log {unknown[0]!r} (listed: {known})")
    return [stream for stream in streams if not names or stream.name in names]


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket: Envoy's admin where it listens on a pipe (compose)."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def ask_admin(
    admin: str, path: str, method: str = "POST", timeout: float = 2.0
) -> tuple[int, bytes]:
    """`method path` to an Envoy admin (`host:port` or `unix:<socket>`): status and body."""
    if admin.startswith("unix:"):
        connection: http.client.HTTPConnection = _UnixHTTPConnection(admin[5:], timeout)
    else:
        host, _, port = admin.rpartition(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request(method, path)
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def post_admin(admin: str, path: str, timeout: float = 2.0) -> int:
    """POST `path` to an Envoy admin (`host:port` or `unix:<socket>`); its status code."""
    return ask_admin(admin, path, "POST", timeout)[0]


def rotated(stream: Stream, generation: int) -> Path:
    return stream.path.with_name(f"{stream.path.name}.{generation:06d}")


@dataclass
class _Cursor:
    position: Position
    chain: Chain
    reopen_asked: float = 0.0  # monotonic time of the last /reopen_logs
    # the bytes that end at `position` (the last line read, with its newline), to tell the
    # file still holds them; after a restart only the newline is known
    tail: bytes = b"\n"


class AccessLogReader:
    """Every stream of the manifest; `snapshot` before reading the journals, `read` after."""

    def __init__(self, streams: list[Stream], progress: Progress, rotate_bytes: int) -> None:
        self.streams = streams
        self._progress = progress
        self._rotate_bytes = rotate_bytes
        self._cursors: dict[SourceKey, _Cursor] = {}

    def _cursor(self, stream: Stream) -> _Cursor:
        key = stream_key(stream)
        cursor = self._cursors.get(key)
        if cursor is None:
            state = self._progress.state(key, FIRST)
            chain = Chain("completion", key.id, state.seq, state.last_hash)
            cursor = self._cursors[key] = _Cursor(state.position, chain)
        return cursor

    def _current(self, stream: Stream, generation: int) -> tuple[Path, bool]:
        """The file of `generation`, and whether Envoy is done writing it."""
        old = rotated(stream, generation)
        if old.exists():
            return old, stream.path.exists() or rotated(stream, generation + 1).exists()
        return stream.path, False

    def snapshot(self) -> dict[SourceKey, int]:
        """How far each current file reaches now: lines past it may lack their decision yet."""
        sizes = {}
        for stream in self.streams:
            path, _ = self._current(stream, self._cursor(stream).position.segment)
            with contextlib.suppress(FileNotFoundError):
                sizes[stream_key(stream)] = path.stat().st_size
        return sizes

    def read(self, snapshot: dict[SourceKey, int], budget: int) -> list[Item]:
        items: list[Item] = []
        for stream in self.streams:
            key = stream_key(stream)
            if key in snapshot and len(items) < budget:
                items += self._read_stream(stream, key, snapshot[key], budget - len(items))
        return items

    def _read_stream(self, stream: Stream, key: SourceKey, upto: int, budget: int) -> list[Item]:
        cursor = self._cursor(stream)
        generation, offset = cursor.position.segment, cursor.position.offset
        path, closed = self._current(stream, generation)
        try:
            with path.open("rb") as log_file:
                tail = cursor.tail[-offset:] if offset else b""
                log_file.seek(offset - len(tail))
                joint = log_file.read(len(tail))  # still the end of the last line read?
                data = log_file.read(max(0, min(READ_CHUNK, upto - offset)))
                size = os.fstat(log_file.fileno()).st_size
        except FileNotFoundError:
            return []
        if joint != tail or size < offset:
            return [self._truncated(path, key, cursor, size)]
        items = self._lines(key, cursor, data, budget)
        if not closed or len(items) >= budget or offset + len(data) != upto or size != upto:
            return items
        if cursor.position.offset < upto:  # Envoy died mid-line: the rest is a torn line
            torn = upto - cursor.position.offset
            metrics.DAMAGED.labels(source="access_log", reason="torn tail").inc()
            metrics.DAMAGED_BYTES.labels(source="access_log").inc(torn)
            log.error("access log %s: %d bytes at offset %d skipped: torn last line",
                      path, torn, cursor.position.offset)  # fmt: skip
        cursor.position = Position(generation + 1, 0)  # this file is done: the next one
        items.append(Item(key, cursor.position, cursor.chain.seq, cursor.chain.last_hash))
        return items

    @staticmethod
    def _truncated(path: Path, key: SourceKey, cursor: _Cursor, size: int) -> Item:
        """The file no longer holds what was shipped from it (`: > log`, logrotate's
        copytruncate): Envoy appends from its new end, so read it again from the start. The
        lines written after the last one shipped and before the cut are lost: counted, logged."""
        generation, offset = cursor.position
        metrics.DAMAGED.labels(source="access_log", reason="truncated").inc()
        log.error(
            "access log %s: cut below the shipped offset %d (now %d bytes; truncated or "
            "replaced in place); lines between the last shipped and the cut are lost; reading "
            "it again from the start", path, offset, size,
        )  # fmt: skip
        cursor.position, cursor.tail = Position(generation, 0), b"\n"
        return Item(key, cursor.position, cursor.chain.seq, cursor.chain.last_hash)

    def _lines(self, key: SourceKey, cursor: _Cursor, data: bytes, budget: int) -> list[Item]:
        items: list[Item] = []
        generation, start = cursor.position.segment, cursor.position.offset
        read_at_us = time.time_ns() // 1000
        find, at, line_start = data.find, 0, 0
        while len(items) < budget:
            newline = find(b"\n", at)
            if newline < 0:
                break  # a line Envoy is still writing
            line_start, raw, at = at, data[at:newline], newline + 1
            position = Position(generation, start + at)
            cursor.position = position
            if not raw or raw.isspace():
                continue
            try:
                row = completion_of(raw, read_at_us)
            except UnreadableLineError as error:
                metrics.DAMAGED.labels(source="access_log", reason="unreadable_line").inc()
                metrics.DAMAGED_BYTES.labels(source="access_log").inc(len(raw) + 1)
                where = position.offset - len(raw) - 1
                log.error("access log %s: line at offset %d skipped: %s", key.id, where, error)  # noqa: TRY400
                items.append(Item(key, position, cursor.chain.seq, cursor.chain.last_hash))
                continue
            cursor.chain.link(row)
            seq, digest = cursor.chain.seq, cursor.chain.last_hash
            at_us = int(row.get("started_at") or 0)
            items.append(Item(key, position, seq, digest, "completion", row, at_us, raw))
        if at:
            cursor.tail = data[max(line_start, at - TAIL_BYTES) : at]
        return items

    def after_commit(self) -> None:
        """Remove rotated files all shipped; rotate live files shipped past the size."""
        for stream in self.streams:
            state = self._progress.committed.get(stream_key(stream))
            if state is None:
                continue
            for generation in range(max(1, state.position.segment - 8), state.position.segment):
                with contextlib.suppress(FileNotFoundError):
                    rotated(stream, generation).unlink()
            self._rotate(stream, state.position)

    def _rotate(self, stream: Stream, committed: Position) -> None:
        cursor = self._cursor(stream)
        old = rotated(stream, committed.segment)
        if old.exists():
            if not stream.path.exists():  # Envoy has not reopened yet: ask again
                self._reopen(stream, cursor)
            return
        if committed.offset < self._rotate_bytes or stream.admin is None:
            return
        try:
            stream.path.rename(old)
        except FileNotFoundError:
            return
        log.info("access log %s rotated to %s", stream.path, old.name)
        self._reopen(stream, cursor, retry=False)  # a new rotation asks at once

    def retry_reopen(self) -> None:
        """Ask Envoy again (at most every REOPEN_RETRY_SECONDS) to reopen a log it has not
        reopened since its rotation: called while idle too, when no commit comes to do it."""
        for stream in self.streams:
            state = self._progress.committed.get(stream_key(stream))
            if state is None or stream.admin is None or stream.path.exists():
                continue
            if rotated(stream, state.position.segment).exists():
                self._reopen(stream, self._cursor(stream))

    def _reopen(self, stream: Stream, cursor: _Cursor, *, retry: bool = True) -> None:
        if retry and time.monotonic() - cursor.reopen_asked < REOPEN_RETRY_SECONDS:
            return
        cursor.reopen_asked = time.monotonic()
        assert stream.admin is not None  # streams without an admin are never rotated
        try:
            status = post_admin(stream.admin, "/reopen_logs")
        except (OSError, http.client.HTTPException, ValueError) as error:
            status, problem = 0, repr(error)
        else:
            problem = f"HTTP {status}"
        if status != 200:
            metrics.ERRORS.labels(kind="rotation").inc()
            log.warning("access log %s: Envoy did not reopen its logs: %s", stream.path, problem)

    def backlog_bytes(self) -> int:
        total = 0
        for stream in self.streams:
            state = self._progress.committed.get(stream_key(stream))
            position = state.position if state else FIRST
            for generation in range(position.segment, position.segment + 64):
                path, _ = self._current(stream, generation)
                with contextlib.suppress(FileNotFoundError):
                    skip = position.offset if generation == position.segment else 0
                    total += max(0, path.stat().st_size - skip)
                if path == stream.path:
                    break
        return total

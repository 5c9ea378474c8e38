"""Bounded on-disk spool: audit entries wait here, in order, while PostgreSQL is away."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import orjson

from authz_service.audit.metrics import SPOOL_BYTES

log = logging.getLogger(__name__)

Kind = Literal["decision", "completion"]
Entry = tuple[Kind, dict[str, Any]]

SEGMENT_PREFIX = "audit-"
SEGMENT_SUFFIX = ".jsonl"
REJECTED_FILE = "rejected.jsonl"


class SpoolFull(Exception):  # noqa: N818 - a state, not a failure of the spool itself
    """The entries do not fit under the spool's byte limit; nothing of them was written."""


def encode(entries: Sequence[Entry]) -> bytes:
    return b"".join(orjson.dumps({"k": kind, "v": row}) + b"\n" for kind, row in entries)


class Spool:
    """Append-only JSON-lines segments replayed oldest first; thread-safe (used off-loop too)."""

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = 1 << 20) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        existing = self.segments()
        self._next = 1 + max((self._number(p) for p in existing), default=0)
        self._current: Path | None = None  # the segment being appended to
        self._bytes = sum(p.stat().st_size for p in existing)
        SPOOL_BYTES.set(self._bytes)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def empty(self) -> bool:
        return self._bytes == 0 and not self.segments()

    @staticmethod
    def _number(path: Path) -> int:
        return int(path.name[len(SEGMENT_PREFIX) : -len(SEGMENT_SUFFIX)])

    def segments(self) -> list[Path]:
        """Segment files, oldest first."""
        found = self.directory.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}")
        return sorted(found, key=self._number)

    def append(self, entries: Sequence[Entry], *, sync: bool = True) -> None:
        """Write all entries or none (SpoolFull); `sync` fsyncs before returning."""
        data = encode(entries)
        with self._lock:
            if self._bytes + len(data) > self.max_bytes:
                raise SpoolFull(f"{self._bytes} + {len(data)} bytes > {self.max_bytes}")
            if self._current is None or self._current.stat().st_size >= self.segment_bytes:
                self._current = (
                    self.directory / f"{SEGMENT_PREFIX}{self._next:016d}{SEGMENT_SUFFIX}"
                )
                self._next += 1
            with self._current.open("ab") as out:
                out.write(data)
                out.flush()
                if sync:
                    os.fsync(out.fileno())
            self._bytes += len(data)
            SPOOL_BYTES.set(self._bytes)

    def seal(self) -> None:
        """Start a new segment on the next append, so every listed segment is complete."""
        with self._lock:
            self._current = None

    def read(self, segment: Path) -> list[Entry]:
        """The segment's entries; a torn line (a crash mid-write) is logged and skipped."""
        entries: list[Entry] = []
        for number, line in enumerate(segment.read_bytes().splitlines(), start=1):
            try:
                item = orjson.loads(line)
                kind, row = item["k"], item["v"]
                if kind not in ("decision", "completion") or not isinstance(row, dict):
                    raise ValueError(f"unexpected entry kind {kind!r}")  # noqa: TRY301
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                log.error(  # noqa: TRY400 - the reason is enough, no traceback
                    "audit spool %s line %d unreadable, skipped: %s", segment, number, error
                )
                continue
            entries.append((kind, row))
        return entries

    def remove(self, segment: Path) -> None:
        with self._lock:
            size = segment.stat().st_size
            segment.unlink()
            if segment == self._current:
                self._current = None
            self._bytes = max(0, self._bytes - size)
            SPOOL_BYTES.set(self._bytes)

    def reject(self, entry: Entry, reason: str) -> None:
        """Keep an entry PostgreSQL refused, with the reason, for an operator to inspect."""
        kind, row = entry
        line = orjson.dumps({"k": kind, "v": row, "reason": reason}) + b"\n"
        with self._lock, (self.directory / REJECTED_FILE).open("ab") as out:
            out.write(line)

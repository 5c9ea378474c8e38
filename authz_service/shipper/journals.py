"""Reads the authz journals in order from the committed positions, and removes what is shipped.

A segment is read to its end only once it is sealed: a later segment exists, or its writer is
gone (its flock can be taken). Until then a frame cut short at the end is still being
written; after, it is a torn tail: counted, logged with its file and offset, and skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from authz_service.audit.framing import (
    Damage,
    decode_record,
    read_frames,
    segment_name,
    segment_number,
)
from authz_service.audit.segments import LOCK_FILE
from authz_service.shipper import metrics
from authz_service.shipper.model import Item, Position, Progress, SourceKey

log = logging.getLogger(__name__)

FIRST = Position(1, 0)


def writer_gone(directory: Path) -> bool:
    """True when no process holds the journal's lock (its writer exited or was killed)."""
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def _segments(directory: Path) -> list[int]:
    with contextlib.suppress(FileNotFoundError):
        return sorted(n for p in os.listdir(directory) if (n := segment_number(p)) is not None)
    return []


@dataclass
class _Cursor:
    position: Position
    seq: int
    last_hash: str


class JournalReader:
    """Every journal directory under `root`; call `read` from one thread at a time."""

    def __init__(self, root: Path, progress: Progress) -> None:
        self.root = root
        self._progress = progress
        self._cursors: dict[SourceKey, _Cursor] = {}
        self.missing: set[str] = set()  # journals begun and not finished, now gone from disk
        self._cut: set[tuple[SourceKey, int]] = set()  # (journal, segment) reported truncated

    def _cursor(self, key: SourceKey) -> _Cursor:
        cursor = self._cursors.get(key)
        if cursor is None:
            state = self._progress.state(key, FIRST)
            cursor = self._cursors[key] = _Cursor(state.position, state.seq, state.last_hash)
        return cursor

    def read(self, budget: int) -> list[Item]:
        items: list[Item] = []
        with contextlib.suppress(FileNotFoundError):
            names = sorted(os.listdir(self.root))
            self._note_missing(set(names))
            for name in names:
                directory = self.root / name
                if len(items) >= budget or name.startswith(".") or not directory.is_dir():
                    continue  # a hidden one is a journal being created
                key = SourceKey("journal", name)
                state = self._progress.committed.get(key)
                if state is not None and state.finished:
                    continue  # shipped; removed by cleanup
                items += self._read_journal(directory, key, budget - len(items))
        return items

    def _note_missing(self, present: set[str]) -> None:
        """A journal shipped in part whose directory is gone lost its unshipped records: say so
        once, count it, list it in /health. Its state stays unfinished: a journal directory
        that comes back (a disk remounted) is read on from where it was."""
        for key, state in self._progress.committed.items():
            if key.kind != "journal" or state.finished or key.id in self.missing:
                continue
            if key.id not in present:
                self.missing.add(key.id)
                metrics.DAMAGED.labels(source="journal", reason="journal_missing").inc()
                log.error(
                    "audit journal %s: directory gone before it was shipped (shipped up to seq "
                    "%d); its later records are lost", self.root / key.id, state.seq,
                )  # fmt: skip
        self.missing &= {key.id for key, s in self._progress.committed.items() if not s.finished}
        self.missing -= present

    def _skip_to(self, key: SourceKey, cursor: _Cursor, position: Position) -> Item:
        cursor.position = position
        return Item(key, position, cursor.seq, cursor.last_hash)

    def _read_journal(self, directory: Path, key: SourceKey, budget: int) -> list[Item]:
        cursor, items = self._cursor(key), list[Item]()
        while len(items) < budget:
            segments = _segments(directory)
            current = cursor.position.segment
            later = [n for n in segments if n > current]
            if current not in segments:
                if later:  # removed by hand, or lost: say so, count it and go on
                    self._missing_segments(directory, current, later[0])
                    items.append(self._skip_to(key, cursor, Position(later[0], 0)))
                    continue
                if writer_gone(directory):
                    self._progress.finishing.add(key)
                break
            sealed = bool(later) or writer_gone(directory)
            path = directory / segment_name(current)
            items += self._read_segment(path, key, cursor, budget - len(items), sealed)
            if len(items) >= budget or not sealed or cursor.position.segment != current:
                break
            if later:  # this one is done: on to the next
                self._missing_segments(directory, current + 1, later[0])
                items.append(self._skip_to(key, cursor, Position(later[0], 0)))
                continue
            self._progress.finishing.add(key)  # its writer is gone and all of it is read
            break
        return items

    @staticmethod
    def _missing_segments(directory: Path, first: int, after: int) -> None:
        """Segments `first` .. `after - 1` are gone unshipped: removed by hand, or lost."""
        for number in range(first, after):
            metrics.DAMAGED.labels(source="journal", reason="segment_missing").inc()
            log.error("audit journal %s: segment %d is missing", directory, number)

    def _read_segment(
        self, path: Path, key: SourceKey, cursor: _Cursor, budget: int, sealed: bool
    ) -> list[Item]:
        with path.open("rb") as segment:
            size = os.fstat(segment.fileno()).st_size
            segment.seek(cursor.position.offset)
            data = segment.read()
        start = cursor.position.offset
        if size < start and sealed and (key, cursor.position.segment) not in self._cut:
            self._cut.add((key, cursor.position.segment))  # read again until committed: once
            self._damaged(path, Damage(size, start - size, "segment_truncated"))
        frames = read_frames(data, start, limit=budget)
        items: list[Item] = []
        for end, payload in frames.payloads:
            items.append(self._record(key, cursor, Position(cursor.position.segment, end), payload))
        for damage in frames.damage:
            self._damaged(path, damage)
        done = frames.end
        if (frames.incomplete or frames.unreadable) and sealed and len(items) < budget:
            cut = len(data) - (frames.end - start)
            if frames.incomplete:
                self._damaged(path, Damage(frames.end, cut, "torn tail (writer gone)"))
            done = start + len(data)  # nothing after it can be read
        if done != cursor.position.offset and (not items or items[-1].position.offset != done):
            items.append(self._skip_to(key, cursor, Position(cursor.position.segment, done)))
        return items

    def _record(self, key: SourceKey, cursor: _Cursor, position: Position, raw: bytes) -> Item:
        try:
            row = decode_record(raw)
            seq, digest = int(row["journal_seq"]), str(row["journal_hash"])
            at_us = int(row.get("decided_at") or 0)
        except (KeyError, TypeError, ValueError) as error:
            metrics.DAMAGED.labels(source="journal", reason="unreadable_record").inc()
            log.error("audit journal %s: record at %s unreadable: %s", key.id, position, error)  # noqa: TRY400
            return self._skip_to(key, cursor, position)
        cursor.position, cursor.seq, cursor.last_hash = position, seq, digest
        return Item(key, position, seq, digest, "decision", row, at_us, raw)

    def _damaged(self, path: Path, damage: Damage) -> None:
        metrics.DAMAGED.labels(source="journal", reason=damage.reason.split(" (")[0]).inc()
        metrics.DAMAGED_BYTES.labels(source="journal").inc(damage.length)
        log.error(
            "audit journal %s: %d bytes at offset %d skipped: %s",
            path, damage.length, damage.offset, damage.reason,
        )  # fmt: skip

    def cleanup(self) -> None:
        """Remove the segments all shipped, and the journals finished."""
        for key, state in self._progress.committed.items():
            if key.kind != "journal":
                continue
            directory = self.root / key.id
            if state.finished:
                if directory.exists():
                    shutil.rmtree(directory, ignore_errors=True)
                    log.info("audit journal %s shipped and removed", key.id)
                self._cursors.pop(key, None)
                continue
            for number in _segments(directory):
                if number < state.position.segment:
                    with contextlib.suppress(FileNotFoundError):
                        (directory / segment_name(number)).unlink()

    def backlog_bytes(self) -> int:
        """Journal bytes not yet shipped (from the committed positions)."""
        total = 0
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.root):
                if name.startswith("."):
                    continue
                state = self._progress.committed.get(SourceKey("journal", name))
                if state is not None and state.finished:
                    continue
                position = state.position if state else FIRST
                for number in _segments(self.root / name):
                    if number < position.segment:
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        size = (self.root / name / segment_name(number)).stat().st_size
                        total += size - (position.offset if number == position.segment else 0)
        return total

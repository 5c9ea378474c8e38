"""The audit journal: each check's record appended to local disk before its answer leaves.

Group commit: a record goes into a buffer and one os.write() per loop turn writes every
buffered frame; the check's answer waits for that write (and, with fsync `batch`, for an
fdatasync of the batch, run off the event loop). Each process writes its own directory,
`<root>/<journal_id>/`, in numbered segments, and holds an flock on it for as long as it
lives, so the shipper can tell a finished journal from a live one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import shutil
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Literal

from authz_service.audit import metrics
from authz_service.audit.chain import Chain
from authz_service.audit.framing import (
    SEGMENT_MAGIC,
    encode_frame,
    encode_record,
    segment_name,
)
from authz_service.audit.segments import (
    LOCK_FILE,
    journal_bytes,
    new_journal_id,
    segment_tampered,
    sync_directory,
)

log = logging.getLogger(__name__)

FsyncMode = Literal["off", "batch"]


class JournalUnavailableError(Exception):
    """The journal cannot take the record (a write failed): the check must not be answered."""


def _retrieved(future: asyncio.Future[None]) -> None:
    """A batch whose checks were all cancelled still fails quietly (it was counted)."""
    if not future.cancelled():
        future.exception()


class Journal:
    """Append-only, chained, bounded. See authz_service/audit/README.md for the guarantees."""

    def __init__(
        self,
        root: Path,
        *,
        fsync: FsyncMode = "off",
        segment_bytes: int = 4 << 20,
        max_bytes: int = 512 << 20,
        headroom_bytes: int = 16 << 20,
        scan_interval: float = 0.5,
        journal_id: str | None = None,
    ) -> None:
        if fsync not in ("off", "batch"):
            raise ValueError(f"fsync: {fsync!r} is not off|batch")
        self.root = root
        self.journal_id = journal_id or new_journal_id()
        self.directory = root / self.journal_id
        self._fsync: FsyncMode = fsync
        self._segment_bytes = segment_bytes
        self._max_bytes = max_bytes
        self._hard_limit = max_bytes + headroom_bytes
        self._scan_interval = scan_interval
        self._chain = Chain("decision", self.journal_id)
        self._buffer: list[bytes] = []
        self._batch: asyncio.Future[None] | None = None
        self._scheduled = self._syncing = False
        self._segment = 0
        self._fd = self._lock_fd = -1
        self._segment_size = 0
        self._new_segment = False  # the directory entry needs an fsync too
        self._error: str | None = None
        self._on_disk = 0  # the last scan's total
        self._written = 0  # bytes written by this process, ever
        self._written_at_scan = 0
        self._scanner: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # looked up once, not per record

    # --- lifecycle ---

    async def open(self) -> None:
        """Create the journal's directory, lock it, open the first segment, start scanning."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._start)
        self._on_disk = await asyncio.to_thread(journal_bytes, self.root)
        metrics.JOURNAL_BYTES.set_function(self.estimated_bytes)
        self._scanner = asyncio.create_task(self._scan_loop(), name="audit-journal-scan")

    def _start(self) -> None:
        """A directory, its lock and its first segment, all synced before the first record.

        Built under a hidden name and renamed into place, so the shipper never sees a journal
        without its lock (it would take it for one whose writer is gone).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        building = self.root / f".{self.journal_id}.new"
        building.mkdir()
        try:
            self._lock_fd = os.open(building / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.directory = building
            self._segment = 0
            self._open_segment()
            self._sync_directory()
            building.rename(self.root / self.journal_id)
        except OSError:
            # a full disk retries every scan: no descriptor and no half-built directory may
            # be left behind by each attempt (they would pile up for as long as it is full)
            self._close_files()
            shutil.rmtree(building, ignore_errors=True)
            raise
        self.directory = self.root / self.journal_id
        self._sync_directory(self.root)
        self._new_segment = False
        log.info("audit journal open", extra={"journal": str(self.directory)})

    async def close(self) -> None:
        """Write what is buffered, sync it, and release the directory to the shipper."""
        if self._scanner is not None:
            self._scanner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scanner
        while self._buffer or self._syncing or self._scheduled:
            batch = self._batch
            self._flush()
            if batch is not None:
                with contextlib.suppress(JournalUnavailableError):
                    await asyncio.shield(batch)
            await asyncio.sleep(0)
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(os.fsync, self._fd)
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock: the shipper may finish the journal
            self._lock_fd = -1

    # --- state ---

    def estimated_bytes(self) -> int:
        """The last scan's total plus what this process wrote since."""
        return self._on_disk + self._written - self._written_at_scan

    @property
    def accepting(self) -> bool:
        """False when the journal is over its bound or broken: checks are refused (503)."""
        return self._error is None and self.estimated_bytes() < self._max_bytes

    @property
    def healthy(self) -> bool:
        return self.accepting and self._lock_fd >= 0

    def status(self) -> dict[str, Any]:
        return {
            "journal": str(self.directory),
            "bytes": self.estimated_bytes(),
            "max_bytes": self._max_bytes,
            "accepting": self.accepting,
            "error": self._error,
        }

    # --- the request path ---

    def record(self, row: dict[str, Any], *, refusal: bool = False) -> Awaitable[None] | None:
        """Chain and buffer `row`; the awaitable completes once it is written (and synced).

        A refusal (a check answered 503 because the journal is full) is still recorded up to
        the hard limit (bound + headroom); past it, None: it is counted, not written.
        Raises JournalUnavailableError when the journal cannot be written at all.
        """
        if self._error is not None:
            raise JournalUnavailableError(self._error)
        if refusal and self.estimated_bytes() >= self._hard_limit:
            metrics.DROPPED.labels(reason="journal_full").inc()
            return None
        self._chain.link(row)
        self._buffer.append(encode_frame(encode_record(row)))
        loop = self._loop or asyncio.get_running_loop()
        if self._batch is None:
            self._batch = loop.create_future()
            self._batch.add_done_callback(_retrieved)
        if not self._scheduled and not self._syncing:
            self._scheduled = True
            loop.call_soon(self._flush)
        return self._batch

    def _flush(self) -> None:
        """One write for every buffered frame (runs once per loop turn at most)."""
        self._scheduled = False
        if not self._buffer or self._syncing:
            return
        records = len(self._buffer)
        data, self._buffer = b"".join(self._buffer), []
        batch, self._batch = self._batch, None
        assert batch is not None
        if self._error is not None:  # buffered before a failure: its chain is abandoned
            batch.set_exception(JournalUnavailableError(self._error))
            return
        try:
            self._write(data)
        except OSError as error:
            self._fail(error)
            batch.set_exception(JournalUnavailableError(self._error or str(error)))
            return
        metrics.JOURNAL_BATCHES.inc()
        metrics.JOURNAL_RECORDS.inc(records)
        if self._fsync == "off":
            batch.set_result(None)
            return
        self._syncing = True
        asyncio.get_running_loop().create_task(self._sync(batch))

    def _write(self, data: bytes) -> None:
        if self._segment_size >= self._segment_bytes:
            self._rotate()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
            self._segment_size += written
            self._written += written
        self._check_segment()

    def _check_segment(self) -> None:
        """One fstat per batch, before any of its answers: see `segments.segment_tampered`."""
        error = segment_tampered(self._fd, segment_name(self._segment), self._segment_size)
        if error is not None:
            raise error

    async def _sync(self, batch: asyncio.Future[None]) -> None:
        try:
            await asyncio.to_thread(self._sync_batch)
        except OSError as error:
            self._fail(error)
            batch.set_exception(JournalUnavailableError(self._error or str(error)))
        else:
            batch.set_result(None)
        finally:
            self._syncing = False
            if self._buffer and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)

    def _sync_batch(self) -> None:
        os.fdatasync(self._fd)
        if self._new_segment:
            self._new_segment = False
            self._sync_directory()

    # --- segments ---

    def _open_segment(self) -> None:
        self._segment += 1
        path = self.directory / segment_name(self._segment)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        os.write(self._fd, SEGMENT_MAGIC)
        self._segment_size = len(SEGMENT_MAGIC)
        self._written += len(SEGMENT_MAGIC)
        self._new_segment = True

    def _rotate(self) -> None:
        """The next segment; the full one is complete (synced by its last batch, if batch)."""
        os.close(self._fd)
        self._fd = -1
        self._open_segment()

    def _sync_directory(self, directory: Path | None = None) -> None:
        sync_directory(directory or self.directory)

    def _fail(self, error: OSError) -> None:
        """Never append after a failed write: its segment may end in a torn frame.

        The journal is closed (the shipper takes what was written); the scanner starts a new
        one, with a new id and a new chain, once the disk takes writes again.
        """
        self._error = f"journal write failed: {error}"
        metrics.JOURNAL_ERRORS.inc()
        log.error("audit journal %s: %s; refusing checks", self.directory, error)
        self._close_files()

    def _close_files(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._lock_fd = -1

    def _restart(self) -> None:
        self.journal_id = new_journal_id()
        self.directory = self.root / self.journal_id
        self._chain = Chain("decision", self.journal_id)
        self._start()
        self._error = None

    # --- the bound ---

    def _segment_moved(self, path: Path, inode: int | None) -> OSError | None:
        """The error when `path` (the open segment, as the shipper finds it) is not our file
        (the journal directory renamed, replaced or removed: the shipper would never read what
        this process writes), or our file was changed (`segments.segment_tampered`)."""
        if self._error is not None or self._fd < 0 or self._syncing:
            return None  # already abandoned, or about to change segment: next scan
        if path != self.directory / segment_name(self._segment):
            return None
        if inode != os.fstat(self._fd).st_ino:
            return OSError(errno.ENOENT, f"{path} is no longer the segment this process writes")
        return segment_tampered(self._fd, path.name, self._segment_size)

    async def _check_in_place(self) -> None:
        if self._error is not None or self._fd < 0:
            return
        path = self.directory / segment_name(self._segment)
        try:
            inode: int | None = (await asyncio.to_thread(path.stat)).st_ino
        except FileNotFoundError:
            inode = None
        error = self._segment_moved(path, inode)
        if error is not None:
            self._fail(error)

    async def _scan_loop(self) -> None:
        """Re-count every journal's bytes off the loop: the shipper's deletions show here."""
        while True:
            await asyncio.sleep(self._scan_interval)
            await self._check_in_place()
            if self._error is not None and not self._syncing:
                try:
                    await asyncio.to_thread(self._restart)
                except OSError as error:
                    log.warning("audit journal: still cannot start a new journal: %s", error)
            before = self._written
            try:
                total = await asyncio.to_thread(journal_bytes, self.root)
            except OSError:
                log.exception("audit journal: cannot measure %s", self.root)
                continue
            self._on_disk, self._written_at_scan = total, before

"""Journal directories on disk: their ids, the writer's lock, their size, directory syncs."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from pathlib import Path

from authz_service.audit.framing import SEGMENT_SUFFIX

LOCK_FILE = "writer.lock"  # flock-ed by the writer for as long as it lives


def new_journal_id() -> str:
    """Unique per process start: the host, the PID and the start time in nanoseconds."""
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())
    return f"{host or 'host'}-{os.getpid()}-{time.time_ns()}"


def journal_bytes(root: Path) -> int:
    """Bytes of every journal segment under `root` (all workers', finished or not)."""
    total = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(root) as journals:
        for journal in journals:
            if not journal.is_dir(follow_symlinks=False):
                continue
            with contextlib.suppress(FileNotFoundError), os.scandir(journal.path) as files:
                for entry in files:
                    if entry.name.endswith(SEGMENT_SUFFIX):
                        with contextlib.suppress(FileNotFoundError):
                            total += entry.stat(follow_symlinks=False).st_size
    return total


def sync_directory(directory: Path) -> None:
    """fsync a directory: its new entries (a segment, a journal) survive a machine crash."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def segment_tampered(fd: int, name: str, written: int) -> OSError | None:
    """The error when the open segment `fd` is no longer what its writer wrote: removed (its
    records would go nowhere, answered as if journaled), truncated, or appended to by someone
    else (the shipper's offsets would no longer match); None when it is intact."""
    info = os.fstat(fd)
    if info.st_nlink == 0:
        return OSError(errno.ENOENT, f"segment {name} was removed while open")
    if info.st_size != written:
        return OSError(errno.EIO, f"segment {name} is {info.st_size} bytes, {written} written")
    return None

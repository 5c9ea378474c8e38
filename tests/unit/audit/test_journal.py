"""The journal on a real directory: group commit, chain, segments, the bound, failures."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
from pathlib import Path
from typing import Any

import pytest

from authz_service.audit import metrics
from authz_service.audit.chain import GENESIS, record_hash
from authz_service.audit.framing import decode_record, read_frames
from authz_service.audit.journal import Journal, JournalUnavailableError
from authz_service.audit.segments import LOCK_FILE, journal_bytes
from tests.support.waiting import eventually_async


def _row(number: int) -> dict[str, Any]:
    return {
        "request_id": f"req-{number}", "gateway_type": "PLANT", "decision": "allow",
        "decided_at": 1_700_000_000_000_000 + number, "roles": [], "shadow_denials": [],
    }  # fmt: skip


def _read(directory: Path) -> list[dict[str, Any]]:
    rows = []
    for segment in sorted(directory.glob("*.journal")):
        frames = read_frames(segment.read_bytes(), 0)
        assert not frames.damage
        assert not frames.incomplete
        rows += [decode_record(payload) for _, payload in frames.payloads]
    return rows


async def _opened(tmp_path: Path, **options: Any) -> Journal:
    journal = Journal(tmp_path / "journal", scan_interval=0.05, **options)
    await journal.open()
    return journal


@pytest.mark.parametrize("fsync", ["off", "batch"])
async def test_records_of_one_loop_turn_are_one_write(tmp_path: Path, fsync: str) -> None:
    journal = await _opened(tmp_path, fsync=fsync)
    batches = metrics.JOURNAL_BATCHES._value.get()
    waits = [journal.record(_row(i)) for i in range(50)]
    await asyncio.gather(*[w for w in waits if w is not None])
    assert metrics.JOURNAL_BATCHES._value.get() - batches == 1
    await journal.close()
    rows = _read(journal.directory)
    assert [r["request_id"] for r in rows] == [f"req-{i}" for i in range(50)]


async def test_the_record_is_on_disk_when_its_wait_completes(tmp_path: Path) -> None:
    journal = await _opened(tmp_path, fsync="off")
    wait = journal.record(_row(1))
    assert wait is not None
    assert _read(journal.directory) == [], "buffered until the loop turns"
    await wait
    assert [r["request_id"] for r in _read(journal.directory)] == ["req-1"]
    await journal.close()


async def test_batch_mode_syncs_each_batch_before_answering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)  # the journal calls os.fdatasync
    journal = await _opened(tmp_path, fsync="batch")
    first = journal.record(_row(1))
    assert first is not None
    await first
    assert len(synced) == 1
    await journal.close()


async def test_records_are_chained_in_write_order(tmp_path: Path) -> None:
    journal = await _opened(tmp_path, fsync="off")
    for i in range(3):
        wait = journal.record(_row(i))
        assert wait is not None
        await wait
    await journal.close()
    rows = _read(journal.directory)
    previous = GENESIS
    for seq, row in enumerate(rows, start=1):
        assert (row["journal_id"], row["journal_seq"]) == (journal.journal_id, seq)
        assert row["journal_prev_hash"] == previous
        assert row["journal_hash"] == record_hash("decision", row, journal.journal_id, seq,
                                                  previous)  # fmt: skip
        previous = row["journal_hash"]


async def test_full_segments_are_closed_and_a_new_one_started(tmp_path: Path) -> None:
    journal = await _opened(tmp_path, fsync="off", segment_bytes=4096)
    for i in range(200):
        wait = journal.record(_row(i))
        assert wait is not None
        await wait
    await journal.close()
    segments = sorted(journal.directory.glob("*.journal"))
    assert len(segments) > 3
    assert all(s.stat().st_size < 4096 + 1024 for s in segments)
    assert [r["request_id"] for r in _read(journal.directory)] == [f"req-{i}" for i in range(200)]


async def test_the_directory_is_locked_while_the_writer_lives(tmp_path: Path) -> None:
    journal = await _opened(tmp_path)
    fd = os.open(journal.directory / LOCK_FILE, os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        await journal.close()
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the shipper may finish it now
    finally:
        os.close(fd)


async def _until(predicate: Any, what: str) -> None:
    async def holds() -> bool:
        return bool(predicate())

    await eventually_async(holds, 4, what=what)


async def test_over_the_bound_it_refuses_then_recovers_when_segments_go(tmp_path: Path) -> None:
    journal = await _opened(tmp_path, fsync="off", segment_bytes=4096, max_bytes=16384,
                            headroom_bytes=4096)  # fmt: skip
    number = 0
    while journal.accepting:
        wait = journal.record(_row(number))
        assert wait is not None
        await wait
        number += 1
    assert journal.estimated_bytes() >= 16384
    # refusals keep being journaled up to the headroom, then only counted
    dropped = metrics.DROPPED.labels(reason="journal_full")._value.get()
    refusals = 0
    while (wait := journal.record(_row(10_000 + refusals), refusal=True)) is not None:
        await wait
        refusals += 1
    assert refusals > 0
    assert journal.estimated_bytes() >= 16384 + 4096
    assert metrics.DROPPED.labels(reason="journal_full")._value.get() == dropped + 1
    # the shipper removes the closed segments: the next scan sees it
    for segment in sorted(journal.directory.glob("*.journal"))[:-1]:
        segment.unlink()
    await _until(lambda: journal.accepting, "the journal to accept again")
    assert journal.estimated_bytes() == journal_bytes(journal.root)
    await journal.close()


async def test_a_failed_write_refuses_checks_then_starts_a_new_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = await _opened(tmp_path, fsync="off")
    first = journal.record(_row(1))
    assert first is not None
    await first
    real_write = os.write
    failing = {"on": True}

    def write(fd: int, data: Any) -> int:
        if failing["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)  # the journal's os.write, for this test only
    broken = journal.record(_row(2))
    assert broken is not None
    with pytest.raises(JournalUnavailableError, match="No space left"):
        await broken
    assert not journal.accepting
    with pytest.raises(JournalUnavailableError):
        journal.record(_row(3))
    old = journal.directory
    failing["on"] = False
    await _until(lambda: journal.accepting, "a new journal")
    assert journal.directory != old, "never appends after a failed write"
    wait = journal.record(_row(4))
    assert wait is not None
    await wait
    await journal.close()
    assert [r["request_id"] for r in _read(old)] == ["req-1"]
    (row,) = _read(journal.directory)
    assert (row["request_id"], row["journal_seq"], row["journal_prev_hash"]) == (
        "req-4",
        1,
        GENESIS,
    )


async def _written(journal: Journal, row: dict[str, Any]) -> None:
    wait = journal.record(row)
    assert wait is not None
    await wait


def _segment_of(journal: Journal) -> Path:
    (segment,) = sorted(journal.directory.glob("*.journal"))
    return segment


def _remove_directory(journal: Journal) -> None:
    for path in journal.directory.iterdir():
        path.unlink()
    journal.directory.rmdir()


def _truncate(journal: Journal) -> None:
    os.truncate(_segment_of(journal), 0)


def _append_forged_frame(journal: Journal) -> None:
    with _segment_of(journal).open("ab") as segment:
        segment.write(b"\x05\x00\x00\x00forged")


def _rename_directory(journal: Journal) -> None:
    journal.directory.rename(journal.directory.with_name("elsewhere"))


# Faults pass 2026-11-30: `rm -rf` of the live journal directory under `make up`, then 50
# requests: all answered 200, none of their decisions ever reached PostgreSQL, nothing said so.
TAMPERING = {
    "directory removed": _remove_directory,
    "segment truncated": _truncate,
    "frame appended by another process": _append_forged_frame,
    "directory renamed away": _rename_directory,
}


@pytest.mark.parametrize("tamper", sorted(TAMPERING))
async def test_a_segment_changed_under_the_writer_refuses_checks_then_starts_a_new_journal(
    tmp_path: Path, tamper: str
) -> None:
    journal = await _opened(tmp_path, fsync="off")
    first = journal.record(_row(1))
    assert first is not None
    await first
    old = journal.directory
    errors = metrics.JOURNAL_ERRORS._value.get()
    TAMPERING[tamper](journal)
    # no answer leaves as journaled into a file the shipper will never read: the next batch is
    # refused (removed, truncated, appended), or the scan notices within its interval (renamed)
    await _until(lambda: not journal.accepting or journal.directory != old, "the change noticed")
    if journal.accepting:  # the scan already started the new journal
        assert journal.directory != old
    else:
        with pytest.raises(JournalUnavailableError):
            await _written(journal, _row(2))
    assert metrics.JOURNAL_ERRORS._value.get() > errors
    await _until(lambda: journal.accepting, "a new journal")
    assert journal.directory != old
    wait = journal.record(_row(3))
    assert wait is not None
    await wait
    await journal.close()
    assert [r["request_id"] for r in _read(journal.directory)] == ["req-3"]


async def test_retries_on_a_full_disk_leave_no_descriptor_or_directory_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faults pass 2026-11-30: a 256 KiB tmpfs journal directory, filled: every retry of a new
    journal (each scan) that failed writing its first segment left its lock and segment open
    and a hidden `.<id>.new` directory; for an outage of hours, thousands of descriptors."""
    journal = await _opened(tmp_path, fsync="off")
    real_write = os.write
    full = {"on": True, "refused": 0}

    def write(fd: int, data: Any) -> int:
        if full["on"]:
            full["refused"] += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    descriptors = len(os.listdir("/proc/self/fd"))
    with pytest.raises(JournalUnavailableError):
        await _written(journal, _row(1))
    attempts = metrics.JOURNAL_ERRORS._value.get()
    # each scan tries a new journal, whose segment header is refused: wait for a few
    await _until(lambda: full["refused"] >= 6, "five attempts at a new journal")
    assert not journal.accepting
    assert len(os.listdir("/proc/self/fd")) <= descriptors
    assert not [p.name for p in journal.root.iterdir() if p.name.startswith(".")]
    full["on"] = False
    await _until(lambda: journal.accepting, "a new journal once the disk takes writes")
    assert metrics.JOURNAL_ERRORS._value.get() == attempts
    await journal.close()

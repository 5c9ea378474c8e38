"""The bounded on-disk spool keeps entries in order, all-or-nothing, and survives torn lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz_service.audit.spool import Entry, Spool, SpoolFull


def _entries(start: int, count: int) -> list[Entry]:
    return [("decision", {"request_id": f"r-{i}"}) for i in range(start, start + count)]


def test_entries_come_back_in_order_across_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20, segment_bytes=100)
    for start in range(0, 50, 5):
        spool.append(_entries(start, 5))
    read = [e for segment in spool.segments() for e in spool.read(segment)]
    assert read == _entries(0, 50)
    assert len(spool.segments()) > 1


def test_full_spool_writes_nothing_of_the_batch(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 200)
    spool.append(_entries(0, 2))
    size = spool.size_bytes
    with pytest.raises(SpoolFull):
        spool.append(_entries(2, 10))
    assert spool.size_bytes == size
    assert [e for s in spool.segments() for e in spool.read(s)] == _entries(0, 2)


def test_size_and_order_survive_a_restart_and_removal_frees_space(tmp_path: Path) -> None:
    first = Spool(tmp_path, 1 << 20)
    first.append(_entries(0, 3))
    again = Spool(tmp_path, 1 << 20)
    assert again.size_bytes == first.size_bytes > 0
    again.append(_entries(3, 3))  # a new segment after the old one
    segments = again.segments()
    assert [e for s in segments for e in again.read(s)] == _entries(0, 6)
    for segment in segments:
        again.remove(segment)
    assert again.empty
    assert again.size_bytes == 0


def test_a_torn_line_is_skipped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.append(_entries(0, 2))
    segment = spool.segments()[0]
    with segment.open("ab") as out:
        out.write(b'{"k": "decision", "v": {"request_')  # the crash happened here
    assert spool.read(segment) == _entries(0, 2)
    assert "unreadable" in caplog.records[0].getMessage()

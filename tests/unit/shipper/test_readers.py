"""The shipper's readers on real files: live tails wait, torn tails of finished ones are skipped."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

import orjson

from authz_service.audit.framing import SEGMENT_MAGIC, encode_frame, encode_record, segment_name
from authz_service.audit.segments import LOCK_FILE
from authz_service.shipper.access_logs import AccessLogReader, Stream, rotated, stream_key
from authz_service.shipper.journals import JournalReader
from authz_service.shipper.model import Position, Progress


def _frame(seq: int) -> bytes:
    row: dict[str, Any] = {
        "request_id": f"r{seq}", "gateway_type": "PLANT", "journal_seq": seq,
        "journal_hash": f"h{seq}", "decided_at": seq,
    }  # fmt: skip
    return encode_frame(encode_record(row))


def _journal(root: Path, *segments: bytes, locked: bool) -> tuple[Path, int | None]:
    directory = root / "j1"
    directory.mkdir(parents=True)
    for number, data in enumerate(segments, start=1):
        (directory / segment_name(number)).write_bytes(SEGMENT_MAGIC + data)
    fd = None
    if locked:
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
    return directory, fd


def _seqs(items: list[Any]) -> list[int]:
    return [i.seq for i in items if i.row is not None]


def test_a_live_writers_cut_frame_waits(tmp_path: Path) -> None:
    _, fd = _journal(tmp_path, _frame(1) + _frame(2)[:-3], locked=True)
    assert fd is not None
    progress = Progress()
    try:
        reader = JournalReader(tmp_path, progress)
        items = reader.read(100)
        assert _seqs(items) == [1]
        assert items[-1].position == Position(1, len(SEGMENT_MAGIC) + len(_frame(1)))
        assert progress.finishing == set()
    finally:
        os.close(fd)


def test_a_dead_writers_torn_tail_is_skipped_and_the_journal_finished(tmp_path: Path) -> None:
    directory, _ = _journal(tmp_path, _frame(1) + _frame(2)[:-3], locked=False)
    progress = Progress()
    items = JournalReader(tmp_path, progress).read(100)
    assert _seqs(items) == [1]
    end = (directory / segment_name(1)).stat().st_size
    assert items[-1].position == Position(1, end), "past the torn bytes"
    assert [k.id for k in progress.finishing] == ["j1"]


def test_a_sealed_segment_leads_to_the_next(tmp_path: Path) -> None:
    _, fd = _journal(tmp_path, _frame(1), _frame(2), locked=True)
    try:
        items = JournalReader(tmp_path, Progress()).read(100)
        assert _seqs(items) == [1, 2]
        assert items[-1].position.segment == 2
    finally:
        assert fd is not None
        os.close(fd)


def _lines(*request_ids: str) -> bytes:
    return b"".join(orjson.dumps({"request_id": r, "gateway_type": "PLANT", "status_code": 200})
                    + b"\n" for r in request_ids)  # fmt: skip


def test_access_log_lines_are_read_whole_and_chained(tmp_path: Path) -> None:
    stream = Stream("plant", "PLANT", tmp_path / "plant.log", None)
    stream.path.write_bytes(_lines("a", "b") + b'{"request_id": "c"')  # c is being written
    reader = AccessLogReader([stream], Progress(), rotate_bytes=1 << 20)
    items = reader.read(reader.snapshot(), 100)
    rows = [i.row for i in items if i.row]
    assert [r["request_id"] for r in rows] == ["a", "b"]
    assert [r["access_log_seq"] for r in rows] == [1, 2]
    assert rows[1]["access_log_prev_hash"] == rows[0]["access_log_hash"]


def test_a_rotated_file_is_finished_before_the_next_generation(tmp_path: Path) -> None:
    stream = Stream("plant", "PLANT", tmp_path / "plant.log", None)
    rotated(stream, 1).write_bytes(_lines("a") + b'{"torn')  # Envoy died mid-line, then reopened
    stream.path.write_bytes(_lines("b"))
    progress = Progress()
    reader = AccessLogReader([stream], progress, rotate_bytes=1 << 20)
    items = reader.read(reader.snapshot(), 100)
    assert [i.row["request_id"] for i in items if i.row] == ["a"]
    assert items[-1].position == Position(2, 0), "done with generation 1"
    items = reader.read(reader.snapshot(), 100)
    assert [i.row["request_id"] for i in items if i.row] == ["b"]
    assert progress.committed[stream_key(stream)].position == Position(1, 0)  # nothing committed

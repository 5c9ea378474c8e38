"""Journal files removed, truncated or lost under a running gateway: never silent.

Faults pass of 2026-11-30: `rm -rf` of the live journal directory under `make up`, then 50
requests: every one answered 200, none of their decisions reached PostgreSQL, and neither
the service nor the shipper logged or counted anything. Now the writer refuses the next
batch (503) and starts a new journal, and the shipper counts and names what it lost.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from authz_service.audit.journal import Journal, JournalUnavailableError
from authz_service.shipper import metrics
from devstack import PostgresService
from devstack.provision import Provisioned
from tests.integration._audit_db import provisioned_database
from tests.integration._shipping import (
    decision,
    envoy_line,
    findings,
    journal,
    manifest,
    rows,
    ship_all,
    shipper,
)
from tests.support.waiting import eventually_async


@pytest.fixture
def database(postgres: PostgresService) -> Provisioned:
    return provisioned_database(postgres, "tamper")


def _damaged(reason: str) -> float:
    return float(metrics.DAMAGED.labels(source="journal", reason=reason)._value.get())


async def _record(opened: Journal, request_id: str) -> None:
    written = opened.record(decision(request_id))
    assert written is not None
    await written


async def _new_journal(opened: Journal, old: Path) -> None:
    async def started() -> bool:
        return opened.accepting and opened.directory != old

    await eventually_async(started, 10, what="a new journal")


async def test_a_live_journal_directory_removed_is_refused_counted_and_named(
    tmp_path: Path, database: Provisioned
) -> None:
    root = tmp_path / "j"
    opened = await journal(root, [decision(f"t1-{i}") for i in range(3)])
    await ship_all(shipper(database.shipper_dsn, root))
    old = opened.directory
    await _record(opened, "t1-unshipped")  # answered, then lost with its directory
    shutil.rmtree(old)
    with pytest.raises(JournalUnavailableError, match="removed"):
        await _record(opened, "t1-refused")  # never answered as journaled
    await _new_journal(opened, old)
    await _record(opened, "t1-after")
    lost = _damaged("journal_missing")
    second = shipper(database.shipper_dsn, root)
    await ship_all(second)
    await opened.close()
    shipped = {r["request_id"] for r in rows(database.reader_dsn)}
    assert shipped == {"t1-0", "t1-1", "t1-2", "t1-after"}
    assert _damaged("journal_missing") == lost + 1
    assert second.status()["missing_journals"] == [old.name]
    assert await findings(database.reader_dsn) == []  # a lost tail looks like an end (README)


async def test_a_segment_truncated_below_what_was_shipped_is_counted(
    tmp_path: Path, database: Provisioned
) -> None:
    root = tmp_path / "j"
    opened = await journal(root, [decision(f"t2-{i}") for i in range(3)])
    await ship_all(shipper(database.shipper_dsn, root))
    old = opened.directory
    await _record(opened, "t2-unshipped")
    (segment,) = old.glob("*.journal")
    os.truncate(segment, 0)
    await _new_journal(opened, old)  # the scan noticed: the truncated journal is released
    await _record(opened, "t2-after")
    truncated = _damaged("segment_truncated")
    await ship_all(shipper(database.shipper_dsn, root))
    await opened.close()
    shipped = {r["request_id"] for r in rows(database.reader_dsn)}
    assert shipped == {"t2-0", "t2-1", "t2-2", "t2-after"}
    assert _damaged("segment_truncated") == truncated + 1
    assert not old.exists(), "read to its (new) end, finished and removed"


async def test_a_segment_removed_before_it_was_shipped_is_counted(
    tmp_path: Path, database: Provisioned
) -> None:
    root = tmp_path / "j"
    opened = Journal(root, fsync="off", segment_bytes=600)
    await opened.open()
    for i in range(12):
        await _record(opened, f"t3-{i}")
        await asyncio.sleep(0)  # one record per batch: segments close at 600 bytes
    segments = sorted(opened.directory.glob("*.journal"))
    assert len(segments) >= 3
    segments[1].unlink()
    missing = _damaged("segment_missing")
    await ship_all(shipper(database.shipper_dsn, root))
    await opened.close()
    assert _damaged("segment_missing") == missing + 1
    assert len(rows(database.reader_dsn)) < 12


# Faults pass 2026-11-30: `: > plant.log` (what logrotate's copytruncate does) under `make up`;
# Envoy appends from the new end, the shipper waited at its old offset (354,028): the next
# requests' rows never got their completion, backlog 0, shipper healthy, nothing logged.
REFILLS = {"emptied": 3, "emptied and refilled past the shipped offset": 40}


@pytest.mark.parametrize("case", sorted(REFILLS))
async def test_an_access_log_cut_in_place_is_read_again_from_its_start_and_counted(
    tmp_path: Path, database: Provisioned, case: str
) -> None:
    path = tmp_path / "logs" / "plant.log"
    path.parent.mkdir()
    path.write_bytes(b"".join(envoy_line(f"t4-old-{i}") for i in range(20)))
    running = shipper(database.shipper_dsn, tmp_path / "j", manifest(tmp_path, {"plant": path}))
    await ship_all(running)
    # lines of the same length: the new file has a newline exactly at the old offset too
    new = [f"t4-new-{i}" for i in range(REFILLS[case])]
    path.write_bytes(b"".join(envoy_line(request_id) for request_id in new))  # cut, then Envoy
    truncated = float(metrics.DAMAGED.labels(source="access_log", reason="truncated")._value.get())
    await ship_all(running)
    completed = {r["request_id"] for r in rows(database.reader_dsn, "completed_at IS NOT NULL")}
    assert completed == {f"t4-old-{i}" for i in range(20)} | set(new)
    assert metrics.DAMAGED.labels(source="access_log", reason="truncated")._value.get() == (
        truncated + 1
    )
    assert await findings(database.reader_dsn) == []

"""AuditWriter without PostgreSQL: all goes to the spool; a full spool follows the policy."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from authz_service.audit import metrics
from authz_service.audit.record import AccessLogCompletion, AuditRecord
from authz_service.audit.spool import Spool
from authz_service.audit.writer import AuditWriter, plain_dsn


def _record(i: int) -> AuditRecord:
    return AuditRecord(f"r-{i}", datetime.now(UTC), "allow", 200)


def _spooled(directory: Path) -> list[str]:
    spool = Spool(directory, 1 << 30)
    return [row["request_id"] for s in spool.segments() for _k, row in spool.read(s)]


async def test_development_mode_spools_everything_in_order(tmp_path: Path) -> None:
    writer = AuditWriter(None, tmp_path, batch_size=7, flush_interval=0.01, retention_interval=None)
    await writer.start()
    for i in range(30):
        writer.submit(_record(i))
        writer.complete(AccessLogCompletion(f"r-{i}", 200))
    await asyncio.sleep(0.1)
    for i in range(30, 40):  # still queued when stop() is called: spooled too
        writer.submit(_record(i))
    await writer.stop()
    expected = [f"r-{i}" for i in range(30) for _ in (0, 1)] + [f"r-{i}" for i in range(30, 40)]
    assert _spooled(tmp_path) == expected
    assert writer.status()["database"] == "disabled"


async def test_queue_overflow_goes_straight_to_the_spool(tmp_path: Path) -> None:
    writer = AuditWriter(None, tmp_path, queue_bound=5, retention_interval=None)
    for i in range(12):  # not started: nothing drains the queue
        writer.submit(_record(i))
    await writer.stop()
    assert sorted(_spooled(tmp_path)) == sorted(f"r-{i}" for i in range(12))


async def test_full_spool_fails_closed_and_keeps_the_entries(tmp_path: Path) -> None:
    writer = AuditWriter(None, tmp_path, 10, 0.01, 100, 600, "fail_closed", retention_interval=None)
    await writer.start()
    assert writer.accepting
    for i in range(20):
        writer.submit(_record(i))
    for _ in range(100):
        if not writer.accepting:
            break
        await asyncio.sleep(0.02)
    assert not writer.accepting
    assert not writer.healthy
    assert writer.status()["held"] > 0
    await writer.stop()


async def test_full_spool_drops_with_a_metric_under_policy_drop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = metrics.DROPPED.labels(reason="spool_full")._value.get()
    writer = AuditWriter(None, tmp_path, 10, 0.01, 100, 600, "drop", retention_interval=None)
    await writer.start()
    for i in range(20):
        writer.submit(_record(i))
    await writer.stop()
    assert writer.accepting
    dropped = metrics.DROPPED.labels(reason="spool_full")._value.get() - before
    assert dropped == 20 - len(_spooled(tmp_path)) > 0
    assert any("dropped" in r.getMessage() for r in caplog.records)


def test_bad_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="full_spool_policy"):
        AuditWriter(None, tmp_path, full_spool_policy="maybe")  # type: ignore[arg-type]


def test_sqlalchemy_urls_are_accepted() -> None:
    assert plain_dsn("postgresql+psycopg://u:p@h:1/db") == "postgresql://u:p@h:1/db"

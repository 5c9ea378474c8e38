"""A completion in memory rides on its decision's INSERT; a late one still completes the row."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from authz_service.audit import metrics
from authz_service.audit.record import AccessLogCompletion, AuditRecord
from authz_service.audit.writer import AuditWriter
from devstack import PostgresService
from tests.integration._audit_db import login_as, migrated_database


@pytest.fixture(scope="module")
def audit_db(postgres: PostgresService) -> str:
    return migrated_database(postgres, "merge")


@pytest.fixture
def writer_dsn(postgres: PostgresService, audit_db: str) -> str:
    with psycopg.connect(audit_db) as conn:
        conn.execute("DELETE FROM gateway_audit_logs")
    return login_as(postgres, audit_db, "gateway_audit_writer")


def _writer(dsn: str, spool: Path) -> AuditWriter:
    return AuditWriter(dsn, spool, batch_size=50, flush_interval=0.1, retention_interval=None)


def _row(dsn: str, request_id: str) -> tuple[Any, ...] | None:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT decision, authz_status_code, status_code, total_duration_ms, completed_at "
            "FROM gateway_audit_logs WHERE request_id = %s",
            (request_id,),
        ).fetchone()


def _writes(dsn: str) -> tuple[int, int]:
    """(rows inserted, rows updated) in the table so far, as PostgreSQL's statistics count them."""
    with psycopg.connect(dsn) as conn:
        stats = conn.execute(
            "SELECT n_tup_ins, n_tup_upd FROM pg_stat_user_tables "
            "WHERE relname = 'gateway_audit_logs'"
        ).fetchone()
    assert stats is not None
    return stats[0], stats[1]


async def _until_counted(dsn: str, before: tuple[int, int], inserts: int) -> tuple[int, int]:
    """The writes since `before`, once the writer's backend has reported `inserts` of them."""
    for _ in range(100):  # a backend reports its statistics when it exits
        after = _writes(dsn)
        if after[0] - before[0] >= inserts:
            return after[0] - before[0], after[1] - before[1]
        await asyncio.sleep(0.1)
    raise AssertionError("PostgreSQL never counted the writes")


async def test_completion_in_memory_is_written_by_the_decisions_insert(
    writer_dsn: str, audit_db: str, tmp_path: Path
) -> None:
    merged_before = metrics.MERGED._value.get()
    before = _writes(audit_db)
    writer = _writer(writer_dsn, tmp_path)
    await writer.start()
    writer.submit(AuditRecord("m-1", datetime.now(UTC), "allow", 200))
    await asyncio.sleep(0.15)  # Envoy's access log comes later, but before the next batch
    writer.complete(AccessLogCompletion("m-1", 503, 7.5, 10, 20, "backend", "UF"))
    await writer.stop()
    assert _row(audit_db, "m-1")[:4] == ("allow", 200, 503, 7.5)  # type: ignore[index]
    assert metrics.MERGED._value.get() - merged_before == 1
    assert await _until_counted(audit_db, before, inserts=1) == (1, 0)  # no second write


async def test_late_completion_still_completes_the_written_row(
    writer_dsn: str, audit_db: str, tmp_path: Path
) -> None:
    before = _writes(audit_db)
    writer = _writer(writer_dsn, tmp_path)
    await writer.start()
    writer.submit(AuditRecord("l-1", datetime.now(UTC), "deny", 401))
    for _ in range(100):  # held one batch for its completion, then written alone
        if _row(audit_db, "l-1") is not None:
            break
        await asyncio.sleep(0.05)
    assert _row(audit_db, "l-1") == ("deny", 401, 401, None, None)
    writer.complete(AccessLogCompletion("l-1", 401, 2.0))
    await writer.stop()
    row = _row(audit_db, "l-1")
    assert row is not None
    assert row[:4] == ("deny", 401, 401, 2.0)
    assert row[4] is not None
    assert await _until_counted(audit_db, before, inserts=1) == (1, 1)


def _record_rows(dsn: str, *rows: dict[str, Any]) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT gateway_audit_record_rows(%s::json)", (orjson.dumps(rows).decode(),))


DECISION = {"request_id": "f-1", "decision": "allow", "authz_status_code": 200, "user_id": "u"}
COMPLETION = {"request_id": "f-1", "status_code": 502, "completed_at": "2025-01-01T00:00:01Z"}


@pytest.mark.parametrize(
    ("calls", "user_id"),
    [
        ([[DECISION | COMPLETION]], "u"),  # merged in memory
        ([[DECISION], [COMPLETION]], "u"),  # completion after the decision was written
        ([[COMPLETION], [DECISION]], "u"),  # completion first: the decision fills the row in
        ([[DECISION | COMPLETION], [DECISION]], "u"),  # a replayed decision keeps Envoy's status
        ([[DECISION, DECISION | {"user_id": "v"}], [COMPLETION]], "v"),  # the batch's last wins
    ],
    ids=["merged", "decision-first", "completion-first", "replay", "duplicate-in-batch"],
)
def test_record_rows_sets_only_what_each_element_carries(
    writer_dsn: str, audit_db: str, calls: list[list[dict[str, Any]]], user_id: str
) -> None:
    for rows in calls:
        _record_rows(writer_dsn, *rows)
    with psycopg.connect(audit_db) as conn:
        stored = conn.execute(
            "SELECT decision, authz_status_code, status_code, user_id, completed_at IS NOT NULL "
            "FROM gateway_audit_logs WHERE request_id = 'f-1'"
        ).fetchall()
    assert stored == [("allow", 200, 502, user_id, True)]

"""AuditWriter on real PostgreSQL as the writer role: batches, upserts, outages, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from authz_service.audit.record import AccessLogCompletion, AuditRecord
from authz_service.audit.spool import REJECTED_FILE, Spool
from authz_service.audit.writer import AuditWriter
from devstack import PostgresService
from tests.integration._audit_db import REPO_ROOT, login_as, migrated_database


@pytest.fixture(scope="module")
def audit_db(postgres: PostgresService) -> str:
    return migrated_database(postgres, "writer")


@pytest.fixture
def writer_dsn(postgres: PostgresService, audit_db: str) -> str:
    with psycopg.connect(audit_db) as conn:
        conn.execute("DELETE FROM gateway_audit_logs")
    return login_as(postgres, audit_db, "gateway_audit_writer")


def _record(request_id: str, **fields: object) -> AuditRecord:
    return AuditRecord(request_id, datetime.now(UTC), "allow", 200, **fields)  # type: ignore[arg-type]


def _rows(dsn: str, columns: str = "request_id") -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT {columns} FROM gateway_audit_logs ORDER BY id").fetchall()


def _writer(dsn: str | None, spool: Path, **options: object) -> AuditWriter:
    return AuditWriter(dsn, spool, batch_size=50, flush_interval=0.05, retention_interval=None,
                       retry_interval=0.2, **options)  # type: ignore[arg-type]  # fmt: skip


async def _until(predicate: object, seconds: float = 30.0) -> None:
    for _ in range(int(seconds / 0.1)):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_one_row_per_request_whatever_the_order(
    writer_dsn: str, audit_db: str, tmp_path: Path
) -> None:
    writer = _writer(writer_dsn, tmp_path)
    await writer.start()
    for i in range(60):  # completions first for half of them
        if i % 2:
            writer.complete(AccessLogCompletion(f"r-{i}", 201, 3.5, 10, 20, "backend"))
        writer.submit(_record(f"r-{i}", user_id=f"u-{i % 7}", roles=["customer"]))
    for i in range(0, 60, 2):
        writer.complete(AccessLogCompletion(f"r-{i}", 502, 4.0, 10, 20, "backend", "UF"))
    await writer.stop()
    rows = _rows(audit_db, "request_id, decision, status_code, authz_status_code, completed_at")
    assert len(rows) == 60
    assert {r[0] for r in rows} == {f"r-{i}" for i in range(60)}
    assert all(r[1] == "allow" and r[3] == 200 and r[4] is not None for r in rows)
    assert {r[0]: r[2] for r in rows}["r-1"] == 201
    assert {r[0]: r[2] for r in rows}["r-2"] == 502
    # a replay of the same records never duplicates
    again = _writer(writer_dsn, tmp_path)
    await again.start()
    for i in range(60):
        again.submit(_record(f"r-{i}", user_id=f"u-{i % 7}", roles=["customer"]))
    await again.stop()
    assert len(_rows(audit_db)) == 60
    assert dict(_rows(audit_db, "request_id, status_code"))["r-2"] == 502


async def test_row_without_access_log_keeps_its_decision(
    writer_dsn: str, audit_db: str, tmp_path: Path
) -> None:
    writer = _writer(writer_dsn, tmp_path)
    await writer.start()
    writer.submit(AuditRecord("r-deny", datetime.now(UTC), "deny", 401, denied_stage="authenticate",
                              problem_type="token_expired"))  # fmt: skip
    await writer.stop()
    assert _rows(audit_db, "decision, status_code, denied_stage, problem_type, completed_at") == [
        ("deny", 401, "authenticate", "token_expired", None)
    ]


async def test_hostile_values_are_stored_verbatim_or_cleaned_and_logged(
    writer_dsn: str, audit_db: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hostile = "'); DROP TABLE gateway_audit_logs; -- \" \\ $$ Ünïcødé 🚀 \U0001d54f"
    agent = ("Mozilla/5.0 " + hostile) * 120  # > 8 KB
    writer = _writer(writer_dsn, tmp_path)
    await writer.start()
    writer.submit(_record("h-1", user_agent=agent, path=f"/x?q={hostile}", user_id=hostile,
                          opa_decisions={"reason": hostile, "nested": [hostile]}))  # fmt: skip
    writer.submit(_record("h-2", user_agent="nul\x00inside", roles=["a\x00b"], client_ip="::1",
                          opa_decisions={"k\x00": "v\x00"}))  # fmt: skip
    for i in range(10):
        writer.submit(_record(f"h-ok-{i}"))
    with caplog.at_level(logging.WARNING):
        await writer.stop()
    columns = "request_id, user_agent, path, user_id, opa_decisions, roles, host(client_ip)"
    rows = {r[0]: r[1:] for r in _rows(audit_db, columns)}
    assert len(rows) == 12
    assert len(agent.encode()) > 8192
    assert rows["h-1"][:3] == (agent, f"/x?q={hostile}", hostile)
    assert rows["h-1"][3] == {"reason": hostile, "nested": [hostile]}
    assert rows["h-2"][0] == "nulinside"
    assert rows["h-2"][3:] == ({"k": "v"}, ["ab"], "::1")
    cleaned = [r.getMessage() for r in caplog.records if "cleaned" in r.getMessage()]
    assert len(cleaned) == 1
    assert "'h-2'" in cleaned[0]
    assert "user_agent: removed 1 NUL" in cleaned[0]


async def test_one_bad_entry_never_fails_its_batch(
    writer_dsn: str, audit_db: str, tmp_path: Path
) -> None:
    # an entry spooled by an older or corrupted process that PostgreSQL refuses
    spool = Spool(tmp_path, 1 << 20)
    good = [("decision", {"request_id": f"b-{i}", "decision": "allow"}) for i in range(5)]
    bad = ("decision", {"request_id": "b-bad", "client_ip": "not-an-ip", "decision": "allow"})
    spool.append([*good[:2], bad, *good[2:]])  # type: ignore[list-item]
    writer = _writer(writer_dsn, tmp_path)
    await writer.start()
    await _until(lambda: len(_rows(audit_db)) == 5)
    await writer.stop()
    assert sorted(r[0] for r in _rows(audit_db)) == [f"b-{i}" for i in range(5)]
    rejected = [json.loads(line) for line in (tmp_path / REJECTED_FILE).read_text().splitlines()]
    assert [r["v"]["request_id"] for r in rejected] == ["b-bad"]
    assert "inet" in rejected[0]["reason"]
    assert Spool(tmp_path, 1 << 20).empty  # replayed segments are removed


async def test_nothing_lost_while_postgres_is_stopped(
    postgres: PostgresService, writer_dsn: str, audit_db: str, tmp_path: Path
) -> None:
    writer = _writer(writer_dsn, tmp_path)
    await writer.start()
    for i in range(20):
        writer.submit(_record(f"o-{i}"))
    await _until(lambda: len(_rows(audit_db)) == 20)
    postgres.stop()
    try:
        for i in range(20, 120):
            writer.submit(_record(f"o-{i}"))
            writer.complete(AccessLogCompletion(f"o-{i}", 200, 1.0))
        await _until(
            lambda: writer.status()["spool_bytes"] > 0 and writer.status()["queue_depth"] == 0
        )
        assert writer.status()["database"] == "down"
        assert writer.accepting
    finally:
        postgres.start()
    await _until(lambda: writer.status()["spool_bytes"] == 0)
    await writer.stop()
    rows = _rows(audit_db, "request_id, completed_at")
    assert sorted(r[0] for r in rows) == sorted(f"o-{i}" for i in range(120))
    assert all(r[1] is not None for r in rows[20:])


CHILD = """
import asyncio, signal, sys
from datetime import UTC, datetime
from pathlib import Path
from authz_service.audit.record import AuditRecord
from authz_service.audit.writer import AuditWriter

async def main() -> None:
    writer = AuditWriter(sys.argv[1], Path(sys.argv[2]), 100, 0.05, retention_interval=None,
                         retry_interval=0.2)
    await writer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    i = 0
    while not stop.is_set():
        request_id = f"k-{i}"
        writer.submit(AuditRecord(request_id, datetime.now(UTC), "allow", 200))
        print(request_id, flush=True)  # acknowledged
        i += 1
        await asyncio.sleep(0.002)
    await writer.stop()

asyncio.run(main())
"""


async def test_sigterm_under_load_keeps_every_acknowledged_row(
    postgres: PostgresService, writer_dsn: str, audit_db: str, tmp_path: Path
) -> None:
    acked: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, writer_dsn, str(tmp_path)],
        stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    ) as child:  # fmt: skip
        assert child.stdout is not None
        try:
            while len(acked) < 200:
                acked.append(child.stdout.readline().strip())
            postgres.stop()  # the last part must go to the spool
            while len(acked) < 400:
                acked.append(child.stdout.readline().strip())
            child.send_signal(signal.SIGTERM)
            acked += [line.strip() for line in child.stdout]
            assert child.wait(timeout=30) == 0
        finally:
            if child.poll() is None:
                child.kill()
            postgres.start()
    assert not Spool(tmp_path, 1 << 30).empty
    restarted = _writer(writer_dsn, tmp_path)  # the service after its restart
    await restarted.start()
    await _until(lambda: restarted.status()["spool_bytes"] == 0)
    await restarted.stop()
    stored = {r[0] for r in _rows(audit_db)}
    assert set(acked) <= stored
    assert len(stored) == len(acked)

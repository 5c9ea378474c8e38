"""90-day retention on real PostgreSQL: older rows go, newer stay, by function or pg_cron."""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest

from authz_service.audit.retention import delete_expired, pg_cron_runs_retention, retention_loop
from devstack import PostgresService
from tests.integration._audit_db import alembic, login_as, migrated_database

AGES = {"d-400": "400 days", "d-91": "91 days", "d-90h": "90 days 1 hour",
        "d-89": "89 days", "d-1": "1 day", "d-0": "1 minute"}  # fmt: skip
EXPIRED = {"d-400", "d-91", "d-90h"}


def _seed(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("DELETE FROM gateway_audit_logs")
        for request_id, age in AGES.items():
            conn.execute(
                "INSERT INTO gateway_audit_logs (request_id, created_at, decision) "
                "VALUES (%s, now() - %s::interval, 'allow')",
                (request_id, age),
            )


def _remaining(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT request_id FROM gateway_audit_logs")}


@pytest.fixture(scope="module")
def audit_db(postgres: PostgresService) -> str:
    return migrated_database(postgres, "retention")


async def test_delete_expired_as_the_writer_role(postgres: PostgresService, audit_db: str) -> None:
    _seed(audit_db)
    conn = await asyncpg.connect(login_as(postgres, audit_db, "gateway_audit_writer"))
    try:
        assert await delete_expired(conn) == len(EXPIRED)
        assert _remaining(audit_db) == AGES.keys() - EXPIRED
        assert await delete_expired(conn) == 0
        with pytest.raises(asyncpg.InvalidParameterValueError):
            await delete_expired(conn, days=30)  # never less than 90 days
        assert _remaining(audit_db) == AGES.keys() - EXPIRED
    finally:
        await conn.close()


async def test_service_task_runs_the_deletion_without_pg_cron(
    postgres: PostgresService, audit_db: str
) -> None:
    _seed(audit_db)
    writer = login_as(postgres, audit_db, "gateway_audit_writer")
    conn = await asyncpg.connect(writer)
    try:
        assert not await pg_cron_runs_retention(conn)
    finally:
        await conn.close()
    task = asyncio.create_task(retention_loop(writer, interval=0.2))
    try:
        for _ in range(100):
            if _remaining(audit_db) == AGES.keys() - EXPIRED:
                break
            await asyncio.sleep(0.1)
        assert _remaining(audit_db) == AGES.keys() - EXPIRED
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_pg_cron_job_runs_the_same_deletion(postgres: PostgresService) -> None:
    if not postgres.pg_cron:
        pytest.fail("pg_cron is not installed: apt-get install postgresql-15-cron")
    alembic(postgres.dsn, "upgrade", "head")
    _seed(postgres.dsn)
    conn = await asyncpg.connect(postgres.dsn)
    try:
        assert await pg_cron_runs_retention(conn)
        command = await conn.fetchval(
            "SELECT command FROM cron.job WHERE jobname = 'gateway-audit-retention'"
        )
        await conn.execute(command)  # what pg_cron runs daily at 03:17
    finally:
        await conn.close()
    assert _remaining(postgres.dsn) == AGES.keys() - EXPIRED
    with psycopg.connect(postgres.dsn) as sync:  # leave the shared database clean
        sync.execute("DELETE FROM gateway_audit_logs")

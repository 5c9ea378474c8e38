"""90-day retention on real PostgreSQL, as the retention login, by the server's clock only."""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest

from authz_service.shipper.retention import delete_expired, pg_cron_runs_retention, retention_loop
from devstack import PostgresService
from devstack.provision import Logins, Provisioned, provision
from tests.integration._audit_db import alembic, provisioned_database, superuser_dsn
from tests.support.waiting import eventually_async

AGES = {"d-400": "400 days", "d-91": "91 days", "d-90h": "90 days 1 hour",
        "d-89": "89 days", "d-1": "1 day", "d-0": "1 minute"}  # fmt: skip
EXPIRED = {"d-400", "d-91", "d-90h"}


def _seed(dsn: str) -> None:
    """History, written by the superuser with the triggers off (else it is dated now())."""
    with psycopg.connect(dsn) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM gateway_audit_logs")
        conn.execute("DELETE FROM gateway_audit_chain_retired")
        for seq, (request_id, age) in enumerate(AGES.items(), start=1):
            conn.execute(
                "INSERT INTO gateway_audit_logs (request_id, gateway_type, created_at, decision,"
                " journal_id, journal_seq) VALUES (%s, 'PLANT', now() - %s::interval, 'allow',"
                " 'journal-r', %s)",
                (request_id, age, seq),
            )


def _remaining(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT request_id FROM gateway_audit_logs")}


@pytest.fixture(scope="module")
def database(postgres: PostgresService) -> Provisioned:
    return provisioned_database(postgres, "retention")


@pytest.fixture(scope="module")
def audit_db(postgres: PostgresService, database: Provisioned) -> str:
    return superuser_dsn(postgres, database)


async def test_the_retention_login_deletes_only_expired_rows(
    database: Provisioned, audit_db: str
) -> None:
    _seed(audit_db)
    conn = await asyncpg.connect(database.retention_dsn)
    try:
        with pytest.raises(asyncpg.InvalidParameterValueError):
            await delete_expired(conn, days=30)  # never less than 90 days
        # even a plain DELETE of everything reaches only what retention may remove
        assert await conn.execute("DELETE FROM gateway_audit_logs") == "DELETE 3"
        assert _remaining(audit_db) == AGES.keys() - EXPIRED
        assert await delete_expired(conn) == 0
    finally:
        await conn.close()
    # the chain knows what retention took: `audit verify` does not call it a deletion
    with psycopg.connect(audit_db) as sync:
        retired = sync.execute("SELECT chain_kind, chain_id, max_seq FROM "
                               "gateway_audit_chain_retired").fetchall()  # fmt: skip
    assert retired == [("decision", "journal-r", 3)]


async def test_a_deletion_by_anyone_else_is_not_counted_as_retention(
    database: Provisioned, audit_db: str
) -> None:
    _seed(audit_db)
    with psycopg.connect(audit_db) as conn:  # the superuser deletes a recent row
        conn.execute("DELETE FROM gateway_audit_logs WHERE request_id = 'd-1'")
        assert conn.execute("SELECT count(*) FROM gateway_audit_chain_retired").fetchone() == (0,)


async def test_the_shipper_runs_retention_without_pg_cron(
    database: Provisioned, audit_db: str
) -> None:
    _seed(audit_db)
    conn = await asyncpg.connect(database.retention_dsn)
    try:
        assert not await pg_cron_runs_retention(conn)  # pg_cron lives in another database
    finally:
        await conn.close()
    task = asyncio.create_task(retention_loop(database.retention_dsn, interval=0.2))
    try:

        async def expired_gone() -> bool:
            return _remaining(audit_db) == AGES.keys() - EXPIRED

        await eventually_async(expired_gone, 10, what="the retention loop's deletes")
        assert _remaining(audit_db) == AGES.keys() - EXPIRED
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_pg_cron_job_runs_the_deletion_as_the_retention_login(
    postgres: PostgresService,
) -> None:
    """In the gateway database, provisioned: the job is retention's, and does the same."""
    if not postgres.pg_cron:
        pytest.fail("pg_cron is not installed: apt-get install postgresql-15-cron")
    logins = Logins(migrator="cron_migrator", shipper="cron_shipper",
                    retention="cron_retention", reader="cron_reader")  # fmt: skip
    done = provision(postgres.dsn_for("postgres"), postgres.database, logins)
    alembic(done.migrator_dsn, "upgrade", "head")
    _seed(postgres.dsn)
    conn = await asyncpg.connect(done.retention_dsn)
    try:
        assert await pg_cron_runs_retention(conn)
        command = await conn.fetchval(
            "SELECT command FROM cron.job WHERE jobname = 'gateway-audit-retention'"
        )
        await conn.execute(command)  # what pg_cron runs daily at 03:17, as this login
    finally:
        await conn.close()
    assert _remaining(postgres.dsn) == AGES.keys() - EXPIRED
    with psycopg.connect(postgres.dsn) as sync:  # leave the shared database clean
        sync.execute("SET session_replication_role = replica")
        sync.execute("DELETE FROM gateway_audit_logs")
        sync.execute("DELETE FROM gateway_audit_chain_retired")

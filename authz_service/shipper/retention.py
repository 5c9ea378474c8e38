"""90-day audit retention as the retention login: the deletion, and the loop run without pg_cron.

Row-level security lets the retention role see and delete only rows older than 90 days by
the server's clock (`created_at`, set at insert); nobody else may delete at all.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import asyncpg

from authz_service.shipper.store import UNAVAILABLE

log = logging.getLogger(__name__)

RETENTION_DAYS = 90
PG_CRON_JOB = "gateway-audit-retention"  # scheduled as the retention login by provisioning


class Executor(Protocol):
    """An asyncpg Pool or Connection."""

    async def fetchval(self, query: str, *args: object, column: int = 0) -> object: ...


async def delete_expired(pool: Executor, days: int = RETENTION_DAYS) -> int:
    """Delete audit rows older than `days` days (at least 90); returns how many went."""
    deleted = await pool.fetchval("SELECT gateway_audit_delete_expired($1)", days)
    return deleted if isinstance(deleted, int) else 0


async def pg_cron_runs_retention(pool: Executor) -> bool:
    """True when pg_cron has the retention job of this login (then the loop stays idle)."""
    if not await pool.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'"):
        return False
    try:
        found = await pool.fetchval(
            "SELECT 1 FROM cron.job WHERE jobname = $1 AND username = current_user", PG_CRON_JOB
        )
    except asyncpg.InsufficientPrivilegeError:
        return False  # cannot tell: running the idempotent deletion twice is harmless
    return bool(found)


async def retention_loop(dsn: str, *, interval: float, days: int = RETENTION_DAYS) -> None:
    """Every `interval` seconds, delete expired rows unless pg_cron does it; errors are logged."""
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=10)
            try:
                if await pg_cron_runs_retention(conn):
                    log.info("audit retention: pg_cron job %r runs it; loop idle", PG_CRON_JOB)
                else:
                    deleted = await delete_expired(conn, days)
                    log.info("audit retention: deleted %d rows older than %d days", deleted, days)
            finally:
                await conn.close()
        except (*UNAVAILABLE, asyncpg.PostgresError) as error:  # a round lost, never the loop
            log.warning("audit retention: skipped this round: %s", error)
        await asyncio.sleep(interval)

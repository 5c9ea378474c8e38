"""90-day audit retention: the deletion as a function, scheduled by pg_cron when it is available.

gateway_audit_delete_expired(days) deletes rows older than `days` days and refuses fewer than
90, so the writer role (which runs it when pg_cron is absent, see
authz_service/audit/retention.py) can only delete what the retention rule removes anyway.
The pg_cron job 'gateway-audit-retention' runs the same function daily at 03:17; it is created
only when pg_cron is installed and loadable in this database (shared_preload_libraries and
cron.database_name); otherwise the migration says so and the service schedules the deletion.

Revision ID: 0005_audit_retention
Revises: 0004_audit_rls
Create Date: 2025-11-25
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_audit_retention"
down_revision: str | Sequence[str] | None = "0004_audit_rls"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB = "gateway-audit-retention"
SCHEDULE = "17 3 * * *"
COMMAND = "SELECT public.gateway_audit_delete_expired(90)"
log = logging.getLogger("alembic.runtime.migration")

_DELETE_FUNCTION = """
CREATE FUNCTION gateway_audit_delete_expired(days integer DEFAULT 90) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $fn$
DECLARE
    deleted bigint;
BEGIN
    IF days IS NULL OR days < 90 THEN
        RAISE EXCEPTION 'audit retention is at least 90 days, got %', days
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM public.gateway_audit_logs WHERE created_at < now() - make_interval(days => days);
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END
$fn$;
"""


def _pg_cron_loadable() -> bool:
    """pg_cron is installed and CREATE EXTENSION works here (it refuses other databases)."""
    bind = op.get_bind()
    available = bind.execute(
        sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_cron'")
    ).scalar()
    if not available:
        log.warning("pg_cron is not installed; the authz service runs the retention deletion")
        return False
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_cron"))
    except sa.exc.DBAPIError as error:
        reason = str(error.orig).splitlines()[0]
        log.warning("pg_cron not loadable here (%s); the authz service runs the deletion", reason)
        return False
    return True


def upgrade() -> None:
    op.execute(_DELETE_FUNCTION)
    op.execute("ALTER FUNCTION gateway_audit_delete_expired(integer) OWNER TO "
               "gateway_audit_maintainer")  # fmt: skip
    op.execute("REVOKE ALL ON FUNCTION gateway_audit_delete_expired(integer) FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION gateway_audit_delete_expired(integer) "
               "TO gateway_audit_writer")  # fmt: skip
    if _pg_cron_loadable():
        op.get_bind().execute(
            sa.text("SELECT cron.schedule(:job, :schedule, :command)"),
            {"job": JOB, "schedule": SCHEDULE, "command": COMMAND},
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'")).scalar():
        bind.execute(
            sa.text("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = :job"),
            {"job": JOB},
        )
        # the extension goes too unless someone else scheduled jobs with it
        if not bind.execute(sa.text("SELECT 1 FROM cron.job LIMIT 1")).scalar():
            op.execute("DROP EXTENSION pg_cron")
    op.execute("DROP FUNCTION IF EXISTS gateway_audit_delete_expired(integer)")

"""The Alembic chain upgrades, downgrades and upgrades again on the real PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest

from devstack import PostgresService
from tests.integration._audit_db import AUDIT_ROLES, alembic, create_database

AUDIT_TABLE = "gateway_audit_logs"
TABLES = {"plans", "plan_budget_limits", "customer_plans", "customer_budget_overrides", AUDIT_TABLE}
REQUIRED_COLUMNS = {
    "id", "request_id", "correlation_id", "causation_id", "created_at", "gateway_type",
    "route_id", "method", "path", "status_code", "decision", "denied_stage", "problem_type",
    "user_id", "customer_id", "roles", "trial_mode", "opa_decisions", "budget_metric",
    "budget_cost", "budget_used", "budget_limit", "client_ip", "user_agent", "authz_latency_ms",
    "total_duration_ms", "service_version",
}  # fmt: skip
JOB_QUERY = "SELECT schedule, command FROM cron.job WHERE jobname = 'gateway-audit-retention'"


def _tables(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {r[0] for r in rows} - {"alembic_version"}


def _assert_head_schema(conn: psycopg.Connection) -> None:
    assert _tables(conn) == TABLES
    columns: dict[str, str] = dict(conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s",
        (AUDIT_TABLE,),
    ).fetchall())  # fmt: skip
    assert len(columns) >= 25
    assert columns.keys() >= REQUIRED_COLUMNS
    assert columns["client_ip"] == "inet"
    assert columns["opa_decisions"] == "jsonb"
    indexes = conn.execute(
        "SELECT count(*) FROM pg_indexes WHERE tablename = %s AND indexname <> %s",
        (AUDIT_TABLE, "gateway_audit_logs_pkey"),
    ).fetchone()
    # 12 of 0003 and the shadow-denials index of 0006; the primary key is not one of them
    assert indexes == (13,)
    rls = conn.execute(
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = %s",
        (AUDIT_TABLE,),
    ).fetchone()
    assert rls == (True, True)
    policies = conn.execute("SELECT count(*) FROM pg_policies WHERE tablename = %s", (AUDIT_TABLE,))
    assert policies.fetchone() == (4,)
    roles = conn.execute("SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY(%s)",
                         (list(AUDIT_ROLES),)).fetchall()  # fmt: skip
    assert sorted(roles) == sorted((r, False) for r in AUDIT_ROLES)
    settings = conn.execute(
        "SELECT setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
        "WHERE d.datname = current_database() AND s.setrole = 0"
    ).fetchone()
    assert settings is not None
    assert {"app.user_id=", "app.customer_id="} <= set(settings[0])
    # 0007: the writer's one-statement batch function, executable by the writer role only
    grants = conn.execute(
        "SELECT has_function_privilege('gateway_audit_writer', p.oid, 'EXECUTE'), "
        "has_function_privilege('gateway_audit_admin', p.oid, 'EXECUTE'), p.prosecdef "
        "FROM pg_proc p WHERE p.oid = 'gateway_audit_record_rows(json)'::regprocedure"
    ).fetchone()
    assert grants == (True, False, True)


def _assert_base_schema(conn: psycopg.Connection) -> None:
    assert _tables(conn) == set()
    functions = conn.execute("SELECT proname FROM pg_proc WHERE proname LIKE 'gateway_audit_%'")
    assert functions.fetchall() == []


def test_upgrade_downgrade_upgrade_on_a_fresh_database(postgres: PostgresService) -> None:
    dsn = create_database(postgres, "mig")
    alembic(dsn, "upgrade", "head")
    with psycopg.connect(dsn) as conn:
        _assert_head_schema(conn)
    alembic(dsn, "downgrade", "base")
    with psycopg.connect(dsn) as conn:
        _assert_base_schema(conn)
    alembic(dsn, "upgrade", "head")
    with psycopg.connect(dsn) as conn:
        _assert_head_schema(conn)
        # pg_cron only loads in the "gateway" database (cron.database_name): none here
        assert (
            conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'").fetchone() is None
        )


def test_pg_cron_job_follows_the_chain_in_the_gateway_database(postgres: PostgresService) -> None:
    if not postgres.pg_cron:
        pytest.fail("pg_cron is not installed: apt-get install postgresql-15-cron")
    alembic(postgres.dsn, "upgrade", "head")
    with psycopg.connect(postgres.dsn) as conn:
        assert conn.execute(JOB_QUERY).fetchall() == [
            ("17 3 * * *", "SELECT public.gateway_audit_delete_expired(90)")
        ]
    alembic(postgres.dsn, "downgrade", "base")
    with psycopg.connect(postgres.dsn) as conn:
        _assert_base_schema(conn)
        assert (
            conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'").fetchone() is None
        )
    alembic(postgres.dsn, "upgrade", "head")  # and the gateway database is left at head
    with psycopg.connect(postgres.dsn) as conn:
        _assert_head_schema(conn)
        assert len(conn.execute(JOB_QUERY).fetchall()) == 1

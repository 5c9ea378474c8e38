"""The Alembic chain upgrades, downgrades and upgrades again on the real PostgreSQL."""

from __future__ import annotations

import psycopg
import pytest

from devstack import PostgresService
from devstack.provision import Logins, provision
from tests.integration._audit_db import (
    AUDIT_ROLES,
    alembic,
    create_database,
    provisioned_database,
    superuser_dsn,
)

AUDIT_TABLE = "gateway_audit_logs"
TABLES = {"plans", "plan_budget_limits", "customer_plans", "customer_budget_overrides", AUDIT_TABLE}
REQUIRED_COLUMNS = {
    "id", "request_id", "correlation_id", "causation_id", "created_at", "gateway_type",
    "route_id", "method", "path", "status_code", "decision", "denied_stage", "problem_type",
    "user_id", "customer_id", "roles", "trial_mode", "opa_decisions", "budget_metric",
    "budget_cost", "budget_used", "budget_limit", "client_ip", "user_agent", "authz_latency_ms",
    "total_duration_ms", "service_version", "decided_at", "started_at", "authz_consulted",
    "journal_id", "journal_seq", "journal_prev_hash", "journal_hash", "access_log_id",
    "access_log_seq", "access_log_prev_hash", "access_log_hash", "decision_differs",
    "completion_differs", "response_code_details", "upstream_host",
}  # fmt: skip
TABLES |= {"gateway_audit_ship_state", "gateway_audit_rejected", "gateway_audit_chain_retired",
           "gateway_audit_chain_epoch"}  # fmt: skip
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
    # 12 of 0003, the shadow-denials index of 0006, and 0008's key (request, hop) instead of
    # request alone plus each chain's (id, seq); the primary key is not one of them
    assert indexes == (15,)
    rls = conn.execute(
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = %s",
        (AUDIT_TABLE,),
    ).fetchone()
    assert rls == (True, True)
    policies = conn.execute("SELECT count(*) FROM pg_policies WHERE tablename = %s", (AUDIT_TABLE,))
    assert policies.fetchone() == (8,)  # three readers, the shipper's three, retention's two
    roles = conn.execute("SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY(%s)",
                         (list(AUDIT_ROLES),)).fetchall()  # fmt: skip
    assert sorted(roles) == sorted((r, False) for r in AUDIT_ROLES)
    settings = conn.execute(
        "SELECT setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
        "WHERE d.datname = current_database() AND s.setrole = 0"
    ).fetchone()
    assert settings is not None
    assert {"app.user_id=", "app.customer_id="} <= set(settings[0])
    # 0008: no writer function is left; the triggers keep every row write-once
    functions = conn.execute("SELECT proname FROM pg_proc WHERE proname LIKE 'gateway_audit_%'")
    assert {f[0] for f in functions} == {
        "gateway_audit_delete_expired", "gateway_audit_write_once", "gateway_audit_server_time",
        "gateway_audit_note_retired",
    }  # fmt: skip
    privileges = conn.execute(
        "SELECT has_table_privilege(r, %s, 'DELETE'), has_table_privilege(r, %s, 'UPDATE') "
        "FROM unnest(%s::text[]) AS r",
        (AUDIT_TABLE, AUDIT_TABLE, list(AUDIT_ROLES)),
    ).fetchall()
    deleting = {r for r, (delete, _) in zip(AUDIT_ROLES, privileges, strict=True) if delete}
    assert deleting == {"gateway_audit_retention"}, "no role but retention can DELETE"
    updating = {r for r, (_, update) in zip(AUDIT_ROLES, privileges, strict=True) if update}
    assert updating == set(), "nobody may UPDATE whole rows (the shipper: a half's columns)"


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


def test_the_chain_runs_as_the_migrations_login_after_provisioning(
    postgres: PostgresService,
) -> None:
    """Nothing of the chain needs the superuser once provisioning has run."""
    database = provisioned_database(postgres, "mig_login")
    migrator = database.logins.migrator
    with psycopg.connect(superuser_dsn(postgres, database)) as conn:
        _assert_head_schema(conn)
        owners = conn.execute(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        assert owners == [(migrator,)]
    alembic(database.migrator_dsn, "downgrade", "0007_audit_record_rows")
    alembic(database.migrator_dsn, "upgrade", "head")
    with psycopg.connect(superuser_dsn(postgres, database)) as conn:
        _assert_head_schema(conn)


def test_pg_cron_runs_retention_as_the_retention_login(postgres: PostgresService) -> None:
    """In the gateway database (cron.database_name): the job 0005 scheduled as the superuser
    (an older install) goes at provisioning, the one it schedules as the migrations login goes
    with 0008, and retention's own is the only one left."""
    if not postgres.pg_cron:
        pytest.fail("pg_cron is not installed: apt-get install postgresql-15-cron")
    alembic(postgres.dsn, "upgrade", "0007_audit_record_rows")  # an older install, as superuser
    with psycopg.connect(postgres.dsn) as conn:
        assert conn.execute(JOB_QUERY).fetchall() == [
            ("17 3 * * *", "SELECT public.gateway_audit_delete_expired(90)")
        ]
    logins = Logins(migrator="cron_migrator", shipper="cron_shipper",
                    retention="cron_retention", reader="cron_reader")  # fmt: skip
    done = provision(postgres.dsn_for("postgres"), postgres.database, logins)
    alembic(done.migrator_dsn, "upgrade", "head")
    with psycopg.connect(postgres.dsn) as conn:
        jobs = conn.execute(
            "SELECT username, schedule, command FROM cron.job WHERE jobname = %s",
            ("gateway-audit-retention",),
        ).fetchall()
    assert jobs == [("cron_retention", "17 3 * * *",
                     "SELECT public.gateway_audit_delete_expired(90)")]  # fmt: skip

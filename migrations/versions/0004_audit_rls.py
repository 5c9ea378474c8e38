"""Audit roles, row-level security (enabled and forced, 4 policies) and the writer's functions.

Roles (NOLOGIN groups; grant them to LOGIN users, see authz_service/audit/README.md):
- gateway_audit_admin: reads every row.
- gateway_audit_user: reads the rows whose user_id = current_setting('app.user_id').
- gateway_audit_customer_admin: reads the rows whose customer_id =
  current_setting('app.customer_id').
- gateway_audit_writer: inserts rows and nothing else; its upserts (a replay, or Envoy's
  completion of a row) go through SECURITY DEFINER functions that can only insert rows or set
  the decision or the completion columns.
- gateway_audit_maintainer: owns those functions; BYPASSRLS so they can see the conflicting row.
  Never granted to anyone.

The session settings the policies read (app.user_id, app.customer_id) are declared for this
database with an empty default, which the policies treat as "nobody".

Revision ID: 0004_audit_rls
Revises: 0003_audit_logs
Create Date: 2025-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004_audit_rls"
down_revision: str | Sequence[str] | None = "0003_audit_logs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

READERS = ("gateway_audit_admin", "gateway_audit_user", "gateway_audit_customer_admin")
WRITER = "gateway_audit_writer"
MAINTAINER = "gateway_audit_maintainer"
SETTINGS = ("app.user_id", "app.customer_id")

# the columns the pipeline's decision sets, and the ones Envoy's access log sets
DECISION_COLUMNS = (
    "correlation_id", "causation_id", "created_at", "gateway_type", "route_id", "method", "path",
    "authz_status_code", "decision", "denied_stage", "problem_type", "user_id", "customer_id",
    "roles", "trial_mode", "plan", "opa_decisions", "budget_metric", "budget_cost",
    "budget_used", "budget_limit", "client_ip", "user_agent", "authz_latency_ms",
    "config_revision", "service_version", "shadow_denials",
)  # fmt: skip
COMPLETION_COLUMNS = (
    "status_code", "total_duration_ms", "request_bytes", "response_bytes", "upstream_cluster",
    "response_flags", "completed_at",
)  # fmt: skip

_ROLE_SQL = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN
        CREATE ROLE {name} NOLOGIN {attributes};
    END IF;
END
$$;
"""

_DROP_ROLE_SQL = """
DO $$
BEGIN
    DROP ROLE IF EXISTS {name};
EXCEPTION WHEN dependent_objects_still_exist THEN
    -- roles are cluster-wide: another database still uses it, so it stays
    RAISE NOTICE 'role {name} is still used in another database; kept';
END
$$;
"""


# what a key missing from the JSON means (jsonb_populate_recordset gives NULL, not the default)
DEFAULTS = {"created_at": "now()", "roles": "'{}'", "shadow_denials": "'{}'"}


def _record_decisions_sql() -> str:
    columns = ", ".join(DECISION_COLUMNS)
    values = ", ".join(
        f"coalesce({c}, {DEFAULTS[c]})" if c in DEFAULTS else c for c in DECISION_COLUMNS
    )
    updates = ",\n            ".join(f"{c} = EXCLUDED.{c}" for c in DECISION_COLUMNS)
    return f"""
CREATE FUNCTION gateway_audit_record_decisions(records jsonb) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $fn$
    WITH incoming AS (
        -- the last record of a request id in a batch wins (ON CONFLICT cannot hit a row twice)
        SELECT DISTINCT ON (r.request_id) r.*
        FROM jsonb_populate_recordset(NULL::public.gateway_audit_logs, records)
             WITH ORDINALITY AS r
        ORDER BY r.request_id, r.ordinality DESC
    ), upserted AS (
        INSERT INTO public.gateway_audit_logs AS t (request_id, status_code, {columns})
        SELECT request_id, authz_status_code, {values} FROM incoming
        ON CONFLICT (request_id) DO UPDATE SET
            {updates},
            -- Envoy's final status, when it came first, is what the client got: keep it
            status_code = CASE WHEN t.completed_at IS NULL THEN EXCLUDED.status_code
                               ELSE t.status_code END
        RETURNING 1
    )
    SELECT count(*)::integer FROM upserted
$fn$;
"""  # noqa: S608 - fixed column names, no input


def _record_completions_sql() -> str:
    columns = ", ".join(COMPLETION_COLUMNS)
    updates = ",\n            ".join(f"{c} = EXCLUDED.{c}" for c in COMPLETION_COLUMNS)
    return f"""
CREATE FUNCTION gateway_audit_record_completions(records jsonb) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $fn$
    WITH incoming AS (
        SELECT DISTINCT ON (r.request_id) r.*
        FROM jsonb_populate_recordset(NULL::public.gateway_audit_logs, records)
             WITH ORDINALITY AS r
        ORDER BY r.request_id, r.ordinality DESC
    ), upserted AS (
        -- a completion before its decision makes a row the decision fills in later
        INSERT INTO public.gateway_audit_logs AS t (request_id, created_at, {columns})
        SELECT request_id, coalesce(created_at, now()), {columns} FROM incoming
        ON CONFLICT (request_id) DO UPDATE SET
            {updates}
        RETURNING 1
    )
    SELECT count(*)::integer FROM upserted
$fn$;
"""  # noqa: S608 - fixed column names, no input


FUNCTIONS = ("gateway_audit_record_decisions(jsonb)", "gateway_audit_record_completions(jsonb)")

POLICIES = (
    ("audit_admin_read_all", "FOR SELECT TO gateway_audit_admin USING (true)"),
    ("audit_user_read_own",
     "FOR SELECT TO gateway_audit_user "
     "USING (user_id = nullif(current_setting('app.user_id', true), ''))"),
    ("audit_customer_admin_read_customer",
     "FOR SELECT TO gateway_audit_customer_admin "
     "USING (customer_id = nullif(current_setting('app.customer_id', true), ''))"),
    ("audit_writer_insert_only", "FOR INSERT TO gateway_audit_writer WITH CHECK (true)"),
)  # fmt: skip


def upgrade() -> None:
    for role in (*READERS, WRITER):
        op.execute(_ROLE_SQL.format(name=role, attributes=""))
    op.execute(_ROLE_SQL.format(name=MAINTAINER, attributes="BYPASSRLS"))
    for setting in SETTINGS:
        op.execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET "
            f"{setting} = ''''', current_database()); END $$;"
        )
    op.execute("REVOKE ALL ON gateway_audit_logs FROM PUBLIC")
    op.execute(f"GRANT SELECT ON gateway_audit_logs TO {', '.join(READERS)}")
    op.execute(f"GRANT INSERT ON gateway_audit_logs TO {WRITER}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON gateway_audit_logs TO {MAINTAINER}")
    op.execute(_record_decisions_sql())
    op.execute(_record_completions_sql())
    for function in FUNCTIONS:
        op.execute(f"ALTER FUNCTION {function} OWNER TO {MAINTAINER}")
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {function} TO {WRITER}")
    op.execute("ALTER TABLE gateway_audit_logs ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE gateway_audit_logs FORCE ROW LEVEL SECURITY")
    for name, body in POLICIES:
        op.execute(f"CREATE POLICY {name} ON gateway_audit_logs {body}")


def downgrade() -> None:
    for name, _body in POLICIES:
        op.execute(f"DROP POLICY IF EXISTS {name} ON gateway_audit_logs")
    op.execute("ALTER TABLE gateway_audit_logs NO FORCE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE gateway_audit_logs DISABLE ROW LEVEL SECURITY")
    for function in FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    op.execute(f"REVOKE ALL ON gateway_audit_logs FROM {', '.join((*READERS, WRITER, MAINTAINER))}")
    for setting in SETTINGS:
        op.execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET "
            f"{setting}', current_database()); END $$;"
        )
    for role in (MAINTAINER, WRITER, *READERS):
        op.execute(_DROP_ROLE_SQL.format(name=role))

"""Write-once audit rows, the server's clock, hash-chain columns, and a role per duty.

- Both halves of a row (the decision from the journal, the completion from Envoy's access
  log) are set once: a trigger refuses any UPDATE that changes a value already there, the
  key, `id` or `created_at`. `created_at` is the server's clock at insert (a trigger sets it);
  the service's own time of decision is `decided_at`.
- Chain columns per half (journal_* and access_log_*), the half's own view of the shared
  facts where it differs from the row's (`decision_differs`, `completion_differs`), and the
  completion's new facts (started_at, response_code_details, upstream_host, authz_consulted).
- The key is (request_id, gateway_type); `cancelled` joins the decisions.
- gateway_audit_shipper may INSERT rows, read the key and the columns the join compares, and
  UPDATE only the columns of a half (the trigger lets it fill them where NULL). Nobody else
  writes; gateway_audit_retention alone may DELETE, and only rows older than 90 days by the
  server's clock (row-level security). The writer's upsert functions (0004, 0007) are dropped
  and the writer role keeps no privilege.
- gateway_audit_ship_state: the shipper's durable offsets and chain state, written in the
  same transaction as the rows they cover (`seq`: the chain's last record before the offset;
  `high_seq`: the highest it wrote, past a decision still waiting for its completion).
  gateway_audit_rejected: records PostgreSQL refused (kept whole).
  gateway_audit_chain_retired: per chain, the newest sequence number retention deleted
  (filled by a trigger), so `audit verify` tells retention from tampering.
  gateway_audit_chain_epoch: rows up to `last_legacy_id` predate the chain.
- pg_cron: the job 0005 scheduled as the migrating role is removed; the provisioning step
  schedules it as the retention login (devstack/provision.py).

The migration runs as the migrations role after provisioning (which creates the roles this
chain expects, with BYPASSRLS where needed); as a superuser it creates missing roles itself.

Revision ID: 0008_audit_write_once
Revises: 0007_audit_record_rows
Create Date: 2026-11-29
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0008_audit_write_once"
down_revision: str | Sequence[str] | None = "0007_audit_record_rows"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "gateway_audit_logs"
SHIPPER = "gateway_audit_shipper"
RETENTION = "gateway_audit_retention"
ADMIN = "gateway_audit_admin"
WRITER = "gateway_audit_writer"
MAINTAINER = "gateway_audit_maintainer"
RETENTION_DAYS = 90
JOB = "gateway-audit-retention"

KEY = ("request_id", "gateway_type")
SHARED = ("correlation_id", "causation_id", "route_id", "method", "path", "client_ip",
          "user_agent")  # fmt: skip
DECISION = (
    "decided_at", "decision", "authz_status_code", "denied_stage", "problem_type", "user_id",
    "customer_id", "roles", "trial_mode", "plan", "opa_decisions", "budget_metric",
    "budget_cost", "budget_used", "budget_limit", "authz_latency_ms", "config_revision",
    "policy_revision", "service_version", "shadow_denials",
    "journal_id", "journal_seq", "journal_prev_hash", "journal_hash", "decision_differs",
)  # fmt: skip
COMPLETION = (
    "status_code", "response_code_details", "response_flags", "total_duration_ms",
    "request_bytes", "response_bytes", "upstream_cluster", "upstream_host", "started_at",
    "completed_at", "authz_consulted",
    "access_log_id", "access_log_seq", "access_log_prev_hash", "access_log_hash",
    "completion_differs",
)  # fmt: skip
NEW_COLUMNS = (
    ("decided_at", "timestamptz"), ("started_at", "timestamptz"),
    ("response_code_details", "text"), ("upstream_host", "text"), ("authz_consulted", "boolean"),
    ("decision_differs", "jsonb"), ("completion_differs", "jsonb"),
    ("journal_id", "text"), ("journal_seq", "bigint"), ("journal_prev_hash", "text"),
    ("journal_hash", "text"), ("access_log_id", "text"), ("access_log_seq", "bigint"),
    ("access_log_prev_hash", "text"), ("access_log_hash", "text"),
)  # fmt: skip
# the writer's upsert functions (0004, 0007): they could overwrite a decision
WRITER_FUNCTIONS = (
    "gateway_audit_record_decisions(jsonb)",
    "gateway_audit_record_completions(jsonb)",
    "gateway_audit_record_rows(json)",
)
# never changed once set, even from NULL (the key) or ever (id, created_at)
FROZEN = ("id", "created_at", "request_id", "gateway_type")
EXPIRED = f"created_at < now() - interval '{RETENTION_DAYS} days'"

_ROLE_SQL = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN
        CREATE ROLE {name} NOLOGIN;
    END IF;
END
$$;
"""

_WRITE_ONCE = f"""
CREATE FUNCTION gateway_audit_write_once() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $fn$
DECLARE
    changed text;
BEGIN
    SELECT string_agg(o.key, ', ' ORDER BY o.key) INTO changed
    FROM jsonb_each(to_jsonb(OLD)) AS o JOIN jsonb_each(to_jsonb(NEW)) AS n USING (key)
    WHERE o.value IS DISTINCT FROM n.value
      AND (o.value <> 'null'::jsonb OR o.key IN ({", ".join(f"'{c}'" for c in FROZEN)}));
    IF changed IS NOT NULL THEN
        RAISE EXCEPTION 'audit rows are write-once: % already set (row %)', changed, OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$fn$;
"""  # noqa: S608 - built from constants, no input

_SERVER_TIME = """
CREATE FUNCTION gateway_audit_server_time() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $fn$
BEGIN
    NEW.created_at := now();  -- whatever a writer sent: the row is dated by the server
    RETURN NEW;
END
$fn$;
"""

_NOTE_RETIRED = f"""
CREATE FUNCTION gateway_audit_note_retired() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $fn$
BEGIN
    -- only what the retention rule removes counts as retired: any other deletion is a gap
    INSERT INTO public.gateway_audit_chain_retired AS r (chain_kind, chain_id, max_seq)
    SELECT kind, chain, max(seq) FROM (
        SELECT 'decision' AS kind, journal_id AS chain, journal_seq AS seq, created_at FROM gone
        UNION ALL
        SELECT 'completion', access_log_id, access_log_seq, created_at FROM gone
    ) AS deleted
    WHERE chain IS NOT NULL AND {EXPIRED}
    GROUP BY kind, chain
    ON CONFLICT (chain_kind, chain_id) DO UPDATE SET max_seq = greatest(r.max_seq, EXCLUDED.max_seq);
    RETURN NULL;
END
$fn$;
"""  # noqa: E501, S608 - built from constants, no input

_DELETE_EXPIRED = f"""
CREATE OR REPLACE FUNCTION gateway_audit_delete_expired(days integer DEFAULT 90) RETURNS bigint
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, public AS $fn$
DECLARE
    deleted bigint;
BEGIN
    IF days IS NULL OR days < {RETENTION_DAYS} THEN
        RAISE EXCEPTION 'audit retention is at least {RETENTION_DAYS} days, got %', days
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- the caller's row-level security applies too: retention sees expired rows only
    DELETE FROM public.gateway_audit_logs WHERE created_at < now() - make_interval(days => days);
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END
$fn$;
"""  # noqa: S608 - built from constants, no input

_TABLES = """
CREATE TABLE gateway_audit_ship_state (
    source_kind text NOT NULL CHECK (source_kind IN ('journal', 'access_log')),
    source_id text NOT NULL,
    segment bigint NOT NULL,
    "offset" bigint NOT NULL,
    seq bigint NOT NULL,
    last_hash text NOT NULL,
    high_seq bigint NOT NULL DEFAULT 0,
    finished boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_kind, source_id)
);
CREATE TABLE gateway_audit_rejected (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    chain_kind text NOT NULL,
    chain_id text NOT NULL,
    seq bigint NOT NULL,
    hash text NOT NULL,
    reason text NOT NULL,
    payload bytea NOT NULL,
    UNIQUE (chain_kind, chain_id, seq)
);
CREATE TABLE gateway_audit_chain_retired (
    chain_kind text NOT NULL,
    chain_id text NOT NULL,
    max_seq bigint NOT NULL,
    PRIMARY KEY (chain_kind, chain_id)
);
CREATE TABLE gateway_audit_chain_epoch (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last_legacy_id bigint NOT NULL,
    chained_since timestamptz NOT NULL DEFAULT now()
);
"""

POLICIES = (
    ("audit_shipper_insert", f"FOR INSERT TO {SHIPPER} WITH CHECK (true)"),
    ("audit_shipper_read", f"FOR SELECT TO {SHIPPER} USING (true)"),
    ("audit_shipper_complete", f"FOR UPDATE TO {SHIPPER} USING (true) WITH CHECK (true)"),
    ("audit_retention_read_expired", f"FOR SELECT TO {RETENTION} USING ({EXPIRED})"),
    ("audit_retention_delete_expired", f"FOR DELETE TO {RETENTION} USING ({EXPIRED})"),
)
INDEXES = (
    ("uq_gateway_audit_logs_request_hop", "(request_id, gateway_type) NULLS NOT DISTINCT", ""),
    ("uq_gateway_audit_logs_journal_seq", "(journal_id, journal_seq)",
     "WHERE journal_id IS NOT NULL"),
    ("uq_gateway_audit_logs_access_log_seq", "(access_log_id, access_log_seq)",
     "WHERE access_log_id IS NOT NULL"),
)  # fmt: skip


def _older(name: str) -> ModuleType:
    """An earlier revision's module: its SQL builders restore what this one drops."""
    path = Path(__file__).with_name(name)
    spec = importlib.util.spec_from_file_location(f"_audit_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _unschedule_own_job() -> None:
    """0005's job runs as whoever migrated; retention has its own login now (provisioning)."""
    op.execute(f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        PERFORM cron.unschedule(jobid) FROM cron.job
        WHERE jobname = '{JOB}' AND username = current_user;
    END IF;
EXCEPTION WHEN insufficient_privilege OR undefined_table OR invalid_schema_name THEN
    RAISE NOTICE 'pg_cron job {JOB} of % left in place: %', current_user, SQLERRM;
END
$$;
""")  # noqa: S608 - built from constants, no input


@contextlib.contextmanager
def _owner_sees_rows() -> Iterator[None]:
    """FORCE row-level security hides every row from the owner too (no policy names it):
    lifted for the data statements of this migration, inside its transaction."""
    op.execute(f"ALTER TABLE {TABLE} NO FORCE ROW LEVEL SECURITY")
    yield
    op.execute(f"ALTER TABLE {TABLE} FORCE ROW LEVEL SECURITY")


def _columns_and_key() -> None:
    additions = ", ".join(f"ADD COLUMN {name} {kind}" for name, kind in NEW_COLUMNS)
    op.execute(f"ALTER TABLE {TABLE} {additions}")
    # a completion-only row leaves the decision's arrays NULL, for the decision to fill
    for column in ("roles", "shadow_denials"):
        op.execute(f"ALTER TABLE {TABLE} ALTER COLUMN {column} DROP NOT NULL, "
                   f"ALTER COLUMN {column} DROP DEFAULT")  # fmt: skip
    with _owner_sees_rows():
        op.execute(f"UPDATE {TABLE} SET decided_at = created_at WHERE decision IS NOT NULL")  # noqa: S608
    op.execute(f"ALTER TABLE {TABLE} DROP CONSTRAINT ck_gateway_audit_logs_decision")
    decisions = "'allow', 'deny', 'error', 'cancelled'"
    op.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT ck_gateway_audit_logs_decision CHECK "
               f"(decision IS NULL OR decision IN ({decisions}))")  # fmt: skip
    for name, columns, where in INDEXES:
        op.execute(f"CREATE UNIQUE INDEX {name} ON {TABLE} {columns} {where}")
    op.execute("DROP INDEX uq_gateway_audit_logs_request_id")


def _triggers() -> None:
    op.execute(_WRITE_ONCE)
    op.execute(_SERVER_TIME)
    op.execute(f"CREATE TRIGGER gateway_audit_write_once BEFORE UPDATE ON {TABLE} "
               "FOR EACH ROW EXECUTE FUNCTION gateway_audit_write_once()")  # fmt: skip
    op.execute(f"CREATE TRIGGER gateway_audit_server_time BEFORE INSERT ON {TABLE} "
               "FOR EACH ROW EXECUTE FUNCTION gateway_audit_server_time()")  # fmt: skip
    op.execute(_NOTE_RETIRED)
    op.execute(f"ALTER FUNCTION gateway_audit_note_retired() OWNER TO {MAINTAINER}")
    op.execute("REVOKE ALL ON FUNCTION gateway_audit_note_retired() FROM PUBLIC")
    op.execute(f"CREATE TRIGGER gateway_audit_note_retired AFTER DELETE ON {TABLE} "
               "REFERENCING OLD TABLE AS gone FOR EACH STATEMENT "
               "EXECUTE FUNCTION gateway_audit_note_retired()")  # fmt: skip


def _privileges() -> None:
    for role in (SHIPPER, RETENTION):
        op.execute(_ROLE_SQL.format(name=role))
    for function in WRITER_FUNCTIONS:
        op.execute(f"DROP FUNCTION {function}")
    op.execute(f"REVOKE ALL ON {TABLE} FROM {WRITER}, {MAINTAINER}")
    op.execute(f"DROP POLICY audit_writer_insert_only ON {TABLE}")
    inserted = ", ".join((*KEY, *SHARED, *DECISION, *COMPLETION))
    op.execute(f"GRANT INSERT ({inserted}) ON {TABLE} TO {SHIPPER}")
    op.execute(f"GRANT UPDATE ({', '.join((*DECISION, *COMPLETION))}) ON {TABLE} TO {SHIPPER}")
    op.execute(f"GRANT SELECT ({', '.join((*KEY, *SHARED, 'decision', 'completed_at'))}) "
               f"ON {TABLE} TO {SHIPPER}")  # fmt: skip
    op.execute(f"GRANT SELECT (id, created_at), DELETE ON {TABLE} TO {RETENTION}")
    for name, body in POLICIES:
        op.execute(f"CREATE POLICY {name} ON {TABLE} {body}")
    op.execute(_DELETE_EXPIRED)
    op.execute(f"REVOKE ALL ON FUNCTION gateway_audit_delete_expired(integer) FROM {WRITER}")
    op.execute(f"GRANT EXECUTE ON FUNCTION gateway_audit_delete_expired(integer) TO {RETENTION}")
    op.execute(_TABLES)
    legacy = f"SELECT coalesce(max(id), 0) FROM {TABLE}"  # noqa: S608
    with _owner_sees_rows():
        op.execute(f"INSERT INTO gateway_audit_chain_epoch (last_legacy_id) {legacy}")
    for table in ("ship_state", "rejected", "chain_retired", "chain_epoch"):
        op.execute(f"REVOKE ALL ON gateway_audit_{table} FROM PUBLIC")
        op.execute(f"GRANT SELECT ON gateway_audit_{table} TO {ADMIN}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON gateway_audit_ship_state TO {SHIPPER}")
    op.execute(f"GRANT INSERT ON gateway_audit_rejected TO {SHIPPER}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON gateway_audit_chain_retired TO {MAINTAINER}")


def upgrade() -> None:
    _columns_and_key()
    _triggers()
    _privileges()
    _unschedule_own_job()


def _restore_functions() -> None:
    rls, rows = _older("0004_audit_rls.py"), _older("0007_audit_record_rows.py")
    saved = rls.DECISION_COLUMNS
    rls.DECISION_COLUMNS = (*saved, "policy_revision")  # as 0006 left it
    try:
        sql = [rls._record_decisions_sql(), rls._record_completions_sql()]
    finally:
        rls.DECISION_COLUMNS = saved
    sql.append(rows._record_rows_sql(rls))
    for statement in sql:
        op.execute(statement)
    for function in WRITER_FUNCTIONS:
        op.execute(f"ALTER FUNCTION {function} OWNER TO {MAINTAINER}")
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {function} TO {WRITER}")


def downgrade() -> None:
    for table in ("chain_epoch", "chain_retired", "rejected", "ship_state"):
        op.execute(f"DROP TABLE gateway_audit_{table}")
    for name, _body in POLICIES:
        op.execute(f"DROP POLICY {name} ON {TABLE}")
    op.execute(f"REVOKE ALL ON {TABLE} FROM {SHIPPER}, {RETENTION}")
    op.execute(f"REVOKE ALL ON FUNCTION gateway_audit_delete_expired(integer) FROM {RETENTION}")
    op.execute(_older("0005_audit_retention.py")._DELETE_FUNCTION.replace(
        "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))  # fmt: skip
    op.execute(f"GRANT EXECUTE ON FUNCTION gateway_audit_delete_expired(integer) TO {WRITER}")
    for trigger in ("note_retired", "server_time", "write_once"):
        op.execute(f"DROP TRIGGER gateway_audit_{trigger} ON {TABLE}")
        op.execute(f"DROP FUNCTION gateway_audit_{trigger}()")
    op.execute(f"CREATE UNIQUE INDEX uq_gateway_audit_logs_request_id ON {TABLE} (request_id)")
    for name, _columns, _where in INDEXES:
        op.execute(f"DROP INDEX {name}")
    op.execute(f"ALTER TABLE {TABLE} DROP CONSTRAINT ck_gateway_audit_logs_decision")
    with _owner_sees_rows():
        op.execute(f"UPDATE {TABLE} SET decision = 'error' WHERE decision = 'cancelled'")  # noqa: S608
        for column in ("roles", "shadow_denials"):
            op.execute(f"UPDATE {TABLE} SET {column} = '{{}}' WHERE {column} IS NULL")  # noqa: S608
    op.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT ck_gateway_audit_logs_decision CHECK "
               "(decision IS NULL OR decision IN ('allow', 'deny', 'error'))")  # fmt: skip
    for column in ("roles", "shadow_denials"):
        op.execute(f"ALTER TABLE {TABLE} ALTER COLUMN {column} SET DEFAULT '{{}}', "
                   f"ALTER COLUMN {column} SET NOT NULL")  # fmt: skip
    op.execute(f"ALTER TABLE {TABLE} " + ", ".join(f"DROP COLUMN {n}" for n, _ in NEW_COLUMNS))
    op.execute(f"GRANT INSERT ON {TABLE} TO {WRITER}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {TABLE} TO {MAINTAINER}")
    op.execute(f"CREATE POLICY audit_writer_insert_only ON {TABLE} FOR INSERT TO {WRITER} "
               "WITH CHECK (true)")  # fmt: skip
    _restore_functions()

"""gateway_audit_record_rows(json): one upsert per batch for decisions, completions or both.

The writer merges a request's decision and its access-log completion when both are still in
memory, and sends a whole batch as one JSON array. Each element carries a decision
(`decision` set), a completion (`completed_at` set) or both, and the function sets only the
columns the element carries, so a merged row is one INSERT and a late completion still
completes a row written earlier. It runs as gateway_audit_maintainer like the functions of
0004 (kept for writers of an older release); the writer role may only execute it.

Cheaper for PostgreSQL than 0004's functions, measured per row: plpgsql keeps the plan for the
session (a LANGUAGE sql SECURITY DEFINER function is planned again on every call, ~0.6 ms),
and `json` is parsed once where `jsonb` is first built and then walked.

Revision ID: 0007_audit_record_rows
Revises: 0006_policy_revision_shadow
Create Date: 2025-11-27
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0007_audit_record_rows"
down_revision: str | Sequence[str] | None = "0006_policy_revision_shadow"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = "gateway_audit_record_rows(json)"


def _rls_revision() -> ModuleType:
    """0004's module: the roles and the decision and completion column lists live there."""
    path = Path(__file__).with_name("0004_audit_rls.py")
    spec = importlib.util.spec_from_file_location("_audit_rls_0004", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record_rows_sql(rls: ModuleType) -> str:
    decision = (*rls.DECISION_COLUMNS, "policy_revision")  # 0006 added policy_revision
    completion = tuple(c for c in rls.COMPLETION_COLUMNS if c != "status_code")
    columns = ", ".join((*decision, *completion))
    values = ", ".join(
        f"coalesce({c}, {rls.DEFAULTS[c]})" if c in rls.DEFAULTS else c
        for c in (*decision, *completion)
    )
    updates = ",\n        ".join(
        [f"{c} = CASE WHEN EXCLUDED.decision IS NULL THEN t.{c} ELSE EXCLUDED.{c} END"
         for c in decision]
        + [f"{c} = CASE WHEN EXCLUDED.completed_at IS NULL THEN t.{c} ELSE EXCLUDED.{c} END"
           for c in completion]
    )  # fmt: skip
    return f"""
CREATE FUNCTION gateway_audit_record_rows(records json) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $fn$
DECLARE
    written integer;
BEGIN
    WITH incoming AS (
        -- the writer sends one element per request id; should a caller not, the last one wins
        -- (ON CONFLICT cannot hit a row twice)
        SELECT DISTINCT ON (r.request_id) r.*
        FROM json_populate_recordset(NULL::public.gateway_audit_logs, records)
             WITH ORDINALITY AS r
        ORDER BY r.request_id, r.ordinality DESC
    )
    INSERT INTO public.gateway_audit_logs AS t (request_id, status_code, {columns})
    SELECT request_id,
           CASE WHEN completed_at IS NULL THEN authz_status_code ELSE status_code END,
           {values}
    FROM incoming
    ON CONFLICT (request_id) DO UPDATE SET
        {updates},
        -- Envoy's final status is what the client got: a decision never overwrites it
        status_code = CASE WHEN EXCLUDED.completed_at IS NOT NULL OR t.completed_at IS NULL
                           THEN EXCLUDED.status_code ELSE t.status_code END;
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END
$fn$;
"""  # noqa: S608 - fixed column names, no input


def upgrade() -> None:
    rls = _rls_revision()
    op.execute(_record_rows_sql(rls))
    op.execute(f"ALTER FUNCTION {FUNCTION} OWNER TO {rls.MAINTAINER}")
    op.execute(f"REVOKE ALL ON FUNCTION {FUNCTION} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {FUNCTION} TO {rls.WRITER}")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}")

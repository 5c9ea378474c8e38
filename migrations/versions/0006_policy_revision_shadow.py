"""policy_revision on audit rows, and a partial index for "what would shadow mode have blocked".

- policy_revision: sha256 of the Rego policies that made the decision (live reload changes it
  without a config change, so config_revision alone cannot say which policy decided).
- ix_gateway_audit_logs_shadow_created: rows with shadow denials, newest first, partial so it
  holds only those rows: `WHERE shadow_denials <> '{}' AND created_at > now() - interval '1
  hour'` ("what would the new policy have blocked in the last hour").
- gateway_audit_record_decisions() is recreated with policy_revision among the columns a
  decision sets (the writer sends it; an older writer's rows leave it NULL).

Revision ID: 0006_policy_revision_shadow
Revises: 0005_audit_retention
Create Date: 2025-11-26
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision: str = "0006_policy_revision_shadow"
down_revision: str | Sequence[str] | None = "0005_audit_retention"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "gateway_audit_logs"
INDEX = "ix_gateway_audit_logs_shadow_created"
FUNCTION = "gateway_audit_record_decisions(jsonb)"


def _rls_revision() -> ModuleType:
    """0004's module: the function's SQL is generated there from its column list."""
    path = Path(__file__).with_name("0004_audit_rls.py")
    spec = importlib.util.spec_from_file_location("_audit_rls_0004", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _recreate_record_decisions(columns: tuple[str, ...]) -> None:
    rls = _rls_revision()
    saved = rls.DECISION_COLUMNS
    rls.DECISION_COLUMNS = columns
    try:
        sql = rls._record_decisions_sql()
    finally:
        rls.DECISION_COLUMNS = saved
    op.execute(f"DROP FUNCTION {FUNCTION}")
    op.execute(sql)
    op.execute(f"ALTER FUNCTION {FUNCTION} OWNER TO {rls.MAINTAINER}")
    op.execute(f"REVOKE ALL ON FUNCTION {FUNCTION} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {FUNCTION} TO {rls.WRITER}")


def upgrade() -> None:
    op.add_column(TABLE, sa.Column("policy_revision", sa.Text))
    op.create_index(
        INDEX,
        TABLE,
        [sa.text("created_at DESC")],
        postgresql_where=sa.text("shadow_denials <> '{}'::text[]"),
    )
    _recreate_record_decisions((*_rls_revision().DECISION_COLUMNS, "policy_revision"))


def downgrade() -> None:
    _recreate_record_decisions(_rls_revision().DECISION_COLUMNS)
    op.drop_index(INDEX, table_name=TABLE)
    op.drop_column(TABLE, "policy_revision")

"""The audit trail table gateway_audit_logs and the 12 indexes behind the operators' queries.

Columns beyond the issue's list, and why (each answers a query operators run):
- plan: usage and denials per plan ("are trial users hitting budget limits?").
- authz_status_code: what the authz service decided, kept apart from status_code (what the
  client finally got), so "allowed by authz but failed upstream" is one WHERE clause.
- request_bytes, response_bytes: traffic per customer/route for capacity and billing checks.
- upstream_cluster, response_flags: Envoy's view of a failure (UF, UT, UAEX...) next to the
  decision, to tell a gateway fault from a backend fault.
- completed_at: when the access log completed the row; NULL finds rows whose Envoy entry never
  came (and rows that Envoy logged without a decision have decision NULL).
- config_revision: which rendered gateway config made the decision (rollback investigations).
- shadow_denials: stages that would have denied in trial/shadow mode, to evaluate a policy
  before enforcing it.

Revision ID: 0003_audit_logs
Revises: 0002_customer_overrides
Create Date: 2025-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0003_audit_logs"
down_revision: str | Sequence[str] | None = "0002_customer_overrides"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "gateway_audit_logs"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("correlation_id", sa.Text),
        sa.Column("causation_id", sa.Text),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("gateway_type", sa.Text),
        sa.Column("route_id", sa.Text),
        sa.Column("method", sa.Text),
        sa.Column("path", sa.Text),
        sa.Column("status_code", sa.SmallInteger),
        sa.Column("authz_status_code", sa.SmallInteger),
        sa.Column("decision", sa.Text),  # allow | deny | error; NULL: access log only
        sa.Column("denied_stage", sa.Text),
        sa.Column("problem_type", sa.Text),
        sa.Column("user_id", sa.Text),
        sa.Column("customer_id", sa.Text),
        sa.Column("roles", pg.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("trial_mode", sa.Boolean),
        sa.Column("plan", sa.Text),
        sa.Column("opa_decisions", pg.JSONB),
        sa.Column("budget_metric", sa.Text),
        sa.Column("budget_cost", sa.Integer),
        sa.Column("budget_used", sa.BigInteger),
        sa.Column("budget_limit", sa.BigInteger),
        sa.Column("client_ip", pg.INET),
        sa.Column("user_agent", sa.Text),
        sa.Column("authz_latency_ms", sa.Float),
        sa.Column("total_duration_ms", sa.Float),
        sa.Column("request_bytes", sa.BigInteger),
        sa.Column("response_bytes", sa.BigInteger),
        sa.Column("upstream_cluster", sa.Text),
        sa.Column("response_flags", sa.Text),
        sa.Column("completed_at", TS),
        sa.Column("config_revision", sa.Text),
        sa.Column("service_version", sa.Text),
        sa.Column("shadow_denials", pg.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.CheckConstraint(
            "decision IS NULL OR decision IN ('allow', 'deny', 'error')",
            name="ck_gateway_audit_logs_decision",
        ),
    )
    for name, columns, options in INDEXES:
        op.create_index(name, TABLE, columns, **options)


def _recent(*leading: str) -> list[str | sa.TextClause]:
    return [*leading, sa.text("created_at DESC")]


# name, columns, options: one per operator query (docs in authz_service/audit/README.md)
INDEXES: list[tuple[str, list[str | sa.TextClause], dict[str, object]]] = [
    # find one request, and the upsert's conflict target: a replay never duplicates
    ("uq_gateway_audit_logs_request_id", ["request_id"], {"unique": True}),
    # trace a request's trail across hops
    ("ix_gateway_audit_logs_correlation_id", ["correlation_id"], {}),
    ("ix_gateway_audit_logs_causation_id", ["causation_id"], {}),
    # a user's / a customer's activity over time
    ("ix_gateway_audit_logs_user_created", _recent("user_id"), {}),
    ("ix_gateway_audit_logs_customer_created", _recent("customer_id"), {}),
    # errors over time: partial, so it stays small
    (
        "ix_gateway_audit_logs_errors_created",
        _recent(),
        {"postgresql_where": sa.text("status_code >= 400")},
    ),
    # denials by stage (and by stable problem code) over time
    (
        "ix_gateway_audit_logs_denials_stage",
        _recent("denied_stage"),
        {"postgresql_where": sa.text("decision = 'deny'")},
    ),
    (
        "ix_gateway_audit_logs_problem_created",
        _recent("problem_type"),
        {"postgresql_where": sa.text("problem_type IS NOT NULL")},
    ),
    # containment queries on OPA decisions: opa_decisions @> '{"allow": false}'
    (
        "ix_gateway_audit_logs_opa_decisions",
        ["opa_decisions"],
        {"postgresql_using": "gin", "postgresql_ops": {"opa_decisions": "jsonb_path_ops"}},
    ),
    # time-range scans: rows arrive in time order, so a tiny BRIN summarises the whole table
    ("ix_gateway_audit_logs_created_brin", ["created_at"], {"postgresql_using": "brin"}),
    # per-route and per-gateway activity
    ("ix_gateway_audit_logs_route_created", _recent("route_id"), {}),
    ("ix_gateway_audit_logs_gateway_created", _recent("gateway_type"), {}),
]


def downgrade() -> None:
    for name, _columns, _options in reversed(INDEXES):
        op.drop_index(name, table_name=TABLE)
    op.drop_table(TABLE)

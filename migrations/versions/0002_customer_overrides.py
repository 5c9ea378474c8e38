"""Per-customer plan assignment (with trial end) and per-customer budget overrides.

Revision ID: 0002_customer_overrides
Revises: 0001_budget_plans
Create Date: 2025-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_customer_overrides"
down_revision: str | Sequence[str] | None = "0001_budget_plans"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customer_plans",
        sa.Column("customer_id", sa.Text, primary_key=True),
        sa.Column("plan", sa.Text, sa.ForeignKey("plans.name"), nullable=False),
        # NULL: not on a trial; past: the trial has ended and paid_only routes stay closed
        sa.Column("trial_ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index("ix_customer_plans_plan", "customer_plans", ["plan"])
    op.create_table(
        "customer_budget_overrides",
        # a customer id, or a user id for principals without a customer (as in runtime.json)
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("metric", sa.Text, nullable=False),
        sa.Column("window", sa.Text, nullable=False),
        sa.Column("limit_value", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("customer_id", "metric", "window"),
        sa.CheckConstraint("\"window\" IN ('day', 'month')", name="ck_customer_overrides_window"),
        sa.CheckConstraint("limit_value >= 0", name="ck_customer_overrides_limit"),
    )


def downgrade() -> None:
    op.drop_table("customer_budget_overrides")
    op.drop_index("ix_customer_plans_plan", table_name="customer_plans")
    op.drop_table("customer_plans")

"""Budget plans and their limits (the pipeline's budget stage and trial mode read them).

Revision ID: 0001_budget_plans
Revises:
Create Date: 2025-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_budget_plans"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        # trial plans: principals on them get x-trial-mode: true and paid_only routes refuse them
        sa.Column("trial", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_table(
        "plan_budget_limits",
        sa.Column("plan", sa.Text, sa.ForeignKey("plans.name", ondelete="CASCADE"), nullable=False),
        sa.Column("metric", sa.Text, nullable=False),
        sa.Column("window", sa.Text, nullable=False),
        sa.Column("limit_value", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("plan", "metric", "window"),
        sa.CheckConstraint("\"window\" IN ('day', 'month')", name="ck_plan_budget_limits_window"),
        sa.CheckConstraint("limit_value >= 0", name="ck_plan_budget_limits_limit"),
    )


def downgrade() -> None:
    op.drop_table("plan_budget_limits")
    op.drop_table("plans")

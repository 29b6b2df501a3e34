"""when each patient is planned next

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

A worker cycle plans only the patients whose facts changed or whose next moment has
come (`replan_at`; NULL means at the next cycle). Every existing patient starts
marked, so the first cycle after the upgrade plans everyone. The digest of the
settings the last plan used is kept: when they change, everyone is planned again.
A campaign occurrence's newsletters are found by an index, and the occurrences
whose audience has been planned are recorded: their first plan spreads everyone.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_campaign_id_campaign_day",
        "deliveries",
        ["campaign_id", "campaign_day"],
        unique=False,
    )
    op.create_table(
        "planned_occurrences",
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("planned_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "day", name=op.f("pk_planned_occurrences")),
    )
    op.create_table(
        "planning_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_planning_settings")),
    )
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("replan_at", sa.DateTime(), nullable=True))
        batch_op.create_index(batch_op.f("ix_patients_replan_at"), ["replan_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patients_replan_at"))
        batch_op.drop_column("replan_at")
    op.drop_table("planning_settings")
    op.drop_table("planned_occurrences")
    op.drop_index("ix_deliveries_campaign_id_campaign_day", table_name="deliveries")

"""when each patient is planned next

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

A worker cycle plans only the patients whose facts changed or whose next moment has
come (`replan_at`; NULL means at the next cycle). Every existing patient starts
marked, so the first cycle after the upgrade plans everyone.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("replan_at", sa.DateTime(), nullable=True))
        batch_op.create_index(batch_op.f("ix_patients_replan_at"), ["replan_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patients_replan_at"))
        batch_op.drop_column("replan_at")

"""campaigns paused in the desk

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29

The desk pauses and resumes a clinic's seasonal campaigns. The campaigns themselves
stay in the clinic's campaigns file, which the desk cannot edit: a pause is a row
here (who paused it, and when), and resuming deletes it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "paused_campaigns",
        sa.Column("clinic_id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("paused_by", sa.Integer(), nullable=True),
        sa.Column("paused_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinics.id"], name=op.f("fk_paused_campaigns_clinic_id_clinics")
        ),
        sa.ForeignKeyConstraint(
            ["paused_by"], ["desk_users.id"], name=op.f("fk_paused_campaigns_paused_by_desk_users")
        ),
        sa.PrimaryKeyConstraint("clinic_id", "campaign_id", name=op.f("pk_paused_campaigns")),
    )


def downgrade() -> None:
    op.drop_table("paused_campaigns")

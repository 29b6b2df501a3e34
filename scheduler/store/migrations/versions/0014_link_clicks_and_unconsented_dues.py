"""booking-link clicks and the reminders patients without consent would have had

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03

The desk's results page counts the booking links pressed in each sent message
(`link_clicks`, one row a press) and sets the patients who got a message beside
those who were due one but had not consented: the planner records such would-be
reminders as it plans (`unconsented_dues`).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "link_clicks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("clinic_id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.String(length=36), nullable=False),
        sa.Column("clicked_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinics.id"], name=op.f("fk_link_clicks_clinic_id_clinics")
        ),
        sa.ForeignKeyConstraint(
            ["delivery_id"], ["deliveries.id"], name=op.f("fk_link_clicks_delivery_id_deliveries")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_link_clicks")),
    )
    op.create_index(
        "ix_link_clicks_clinic_id_delivery_id",
        "link_clicks",
        ["clinic_id", "delivery_id"],
        unique=False,
    )
    op.create_table(
        "unconsented_dues",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("clinic_id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinics.id"], name=op.f("fk_unconsented_dues_clinic_id_clinics")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_unconsented_dues_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_unconsented_dues")),
        sa.UniqueConstraint(
            "clinic_id", "idempotency_key", name=op.f("uq_unconsented_dues_clinic_id")
        ),
    )
    op.create_index(
        "ix_unconsented_dues_clinic_id_due_at",
        "unconsented_dues",
        ["clinic_id", "due_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_unconsented_dues_patient_id"), "unconsented_dues", ["patient_id"], unique=False
    )
    # Every patient is planned again at the next cycle (as after a change of the
    # settings): a patient without consent was given a far-off next moment, and would
    # otherwise have no would-be reminders recorded until their facts change.
    op.execute("UPDATE patients SET replan_at = NULL")


def downgrade() -> None:
    op.drop_index(op.f("ix_unconsented_dues_patient_id"), table_name="unconsented_dues")
    op.drop_index("ix_unconsented_dues_clinic_id_due_at", table_name="unconsented_dues")
    op.drop_table("unconsented_dues")
    op.drop_index("ix_link_clicks_clinic_id_delivery_id", table_name="link_clicks")
    op.drop_table("link_clicks")

"""messages held by hand

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03

The desk's Upcoming page holds a coming message (and releases it): a record per
clinic and idempotency key, which the worker's claim skips. Keyed by the message,
not by an outbox row, because most coming messages have no row yet.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "held_messages",
        sa.Column("clinic_id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("held_by", sa.Integer(), nullable=True),
        sa.Column("held_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinics.id"], name=op.f("fk_held_messages_clinic_id_clinics")
        ),
        sa.ForeignKeyConstraint(
            ["held_by"], ["desk_users.id"], name=op.f("fk_held_messages_held_by_desk_users")
        ),
        sa.PrimaryKeyConstraint("clinic_id", "idempotency_key", name=op.f("pk_held_messages")),
    )


def downgrade() -> None:
    op.drop_table("held_messages")

"""channel holds and uncertain LINE pushes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

A channel can be held (LINE's monthly quota reached, credentials refused) and the
last reading of LINE's quota is kept, so every process sees the same picture.
A delivery remembers when a LINE push of it first had an uncertain outcome: LINE
honours a retry key for 24 hours only.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "channel_states",
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("held_because", sa.String(length=16), nullable=True),
        sa.Column("held_reason", sa.Text(), nullable=True),
        sa.Column("held_since", sa.DateTime(), nullable=True),
        sa.Column("held_until", sa.DateTime(), nullable=True),
        sa.Column("quota_limit", sa.Integer(), nullable=True),
        sa.Column("quota_used", sa.Integer(), nullable=True),
        sa.Column("quota_read_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("channel", name=op.f("pk_channel_states")),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("line_uncertain_since", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("line_uncertain_since")
    op.drop_table("channel_states")

"""the tip of each delivery

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25

Which self-care tip went with a message, so a patient does not get the same tip
again within 90 days.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tip_id", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("tip_id")

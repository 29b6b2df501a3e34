"""the campaign of each newsletter

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25

A newsletter delivery names its campaign (config/campaigns.toml) and the day of
the occurrence it belongs to.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("campaign_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("campaign_day", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("campaign_day")
        batch_op.drop_column("campaign_id")

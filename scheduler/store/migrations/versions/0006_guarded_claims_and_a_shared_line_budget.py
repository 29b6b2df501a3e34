"""guarded claims, leases on the database's clock, and one LINE budget for all workers

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28

A claim carries a random token (every outcome write is guarded by it) and a lease
that ends at a moment of the database's clock. A delivery remembers whether it may
have reached the patient already, the first LINE request that carried its retry key
(honoured for 24 hours from then) and the month whose LINE budget holds a place for
it. The month's budget is one row that every worker reserves from; LINE's own
reading of the quota moves there from `channel_states`.
"""

from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Rows a worker of the previous version left `sending` keep the lease it had.
_LEASE = timedelta(seconds=300)


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claim_token", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("lease_until", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("quota_month", sa.String(length=7), nullable=True))
        batch_op.add_column(
            sa.Column("maybe_sent", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.alter_column("line_uncertain_since", new_column_name="line_first_request_at")
    deliveries = sa.table(
        "deliveries",
        sa.column("state", sa.String),
        sa.column("claimed_at", sa.DateTime),
        sa.column("lease_until", sa.DateTime),
        sa.column("maybe_sent", sa.Boolean),
        sa.column("line_first_request_at", sa.DateTime),
    )
    connection = op.get_bind()
    # A row left sending, or retried after a LINE push with no answer, may have
    # reached the patient.
    connection.execute(
        deliveries.update()
        .where(
            sa.or_(deliveries.c.state == "sending", deliveries.c.line_first_request_at.is_not(None))
        )
        .values(maybe_sent=True)
    )
    for (claimed_at,) in connection.execute(
        sa.select(deliveries.c.claimed_at)
        .where(deliveries.c.state == "sending", deliveries.c.claimed_at.is_not(None))
        .distinct()
    ):
        connection.execute(
            deliveries.update()
            .where(deliveries.c.state == "sending", deliveries.c.claimed_at == claimed_at)
            .values(lease_until=claimed_at + _LEASE)
        )
    op.create_table(
        "line_quota_months",
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("quota_limit", sa.Integer(), nullable=True),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.Column("reserved", sa.Integer(), nullable=False),
        sa.Column("read_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("month", name=op.f("pk_line_quota_months")),
    )
    with op.batch_alter_table("channel_states", schema=None) as batch_op:
        batch_op.drop_column("quota_limit")
        batch_op.drop_column("quota_used")
        batch_op.drop_column("quota_read_at")


def downgrade() -> None:
    with op.batch_alter_table("channel_states", schema=None) as batch_op:
        batch_op.add_column(sa.Column("quota_read_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("quota_used", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("quota_limit", sa.Integer(), nullable=True))
    op.drop_table("line_quota_months")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.alter_column("line_first_request_at", new_column_name="line_uncertain_since")
        batch_op.drop_column("maybe_sent")
        batch_op.drop_column("quota_month")
        batch_op.drop_column("lease_until")
        batch_op.drop_column("claim_token")

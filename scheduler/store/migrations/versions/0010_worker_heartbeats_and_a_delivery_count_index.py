"""worker heartbeats, and deliveries counted from an index

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

Each worker records its last completed cycle (when, how long, which worker), one row
a worker: the health check reports a worker pool that stopped cycling, and the
metrics show each worker's cycles. The metrics count deliveries by state, reason and
channel at every scrape: an index of those three answers from the index alone.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "worker_heartbeats",
        sa.Column("worker", sa.String(length=255), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("worker", name=op.f("pk_worker_heartbeats")),
    )
    op.create_index(
        "ix_deliveries_clinic_id_state_reason_channel",
        "deliveries",
        ["clinic_id", "state", "reason", "channel"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_clinic_id_state_reason_channel", table_name="deliveries")
    op.drop_table("worker_heartbeats")

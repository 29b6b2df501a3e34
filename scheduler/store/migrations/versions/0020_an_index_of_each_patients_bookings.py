"""appointments: an index of each patient's bookings

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-29

The planner reads of each patient only the appointments the rules can still read:
the latest visit and what came after it, and every booking. It found the latest
visit and the bookings before it by reading all of the patient's past appointments
(ten rows where it keeps one or two). The unique index on (patient_id, starts_at)
finds the latest visit from the end; this partial one finds the bookings, a few in a
hundred appointments, so it costs an import little.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_appointments_patient_id_starts_at_booked"


def upgrade() -> None:
    booked = sa.text("status = 'booked'")
    op.create_index(
        _INDEX,
        "appointments",
        ["patient_id", "starts_at"],
        sqlite_where=booked,
        postgresql_where=booked,
    )


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="appointments")

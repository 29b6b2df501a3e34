"""appointments: one index by patient, not two

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-29

The unique index on (patient_id, starts_at) answers every lookup by patient that
the index on patient_id alone did, including the foreign key's checks. The second
index only cost each appointment written (a clinic's import writes a million).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_appointments_patient_id"))


def downgrade() -> None:
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_appointments_patient_id"), ["patient_id"], unique=False
        )

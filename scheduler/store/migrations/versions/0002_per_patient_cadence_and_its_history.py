"""per-patient cadence and its history

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

Each patient may have their own cadence; phase and cadence changes are kept as an
append-only history; deliveries may have no patient (the practitioner's digest).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cadence_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=True),
        sa.Column("nudge_after_days", sa.Integer(), nullable=True),
        sa.Column("follow_up_days", sa.Integer(), nullable=True),
        sa.Column("changed_at", sa.DateTime(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_cadence_changes_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cadence_changes")),
    )
    with op.batch_alter_table("cadence_changes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_cadence_changes_patient_id"), ["patient_id"], unique=False
        )

    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("nudge_after_days", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("follow_up_days", sa.Integer(), nullable=True))

    # Every existing patient starts their history with what they have now.
    op.execute(
        "INSERT INTO cadence_changes (patient_id, phase, changed_at, source) "
        "SELECT id, phase, created_at, 'migration' FROM patients"
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.alter_column("patient_id", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM deliveries WHERE patient_id IS NULL")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.alter_column("patient_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_column("follow_up_days")
        batch_op.drop_column("nudge_after_days")

    with op.batch_alter_table("cadence_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cadence_changes_patient_id"))

    op.drop_table("cadence_changes")

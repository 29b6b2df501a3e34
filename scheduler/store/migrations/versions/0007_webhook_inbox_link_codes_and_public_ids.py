"""the web process: an inbox of LINE webhook events, link codes, public patient ids

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28

LINE's webhook events are stored once by their id before anything is done with
them. A patient links their LINE with a one-time code (one per patient at a time);
wrong codes are counted per LINE user to lock out guessing. A patient has a random
public id, which unsubscribe links carry instead of the internal one, and records
of when their LINE was linked and when they were forgotten.
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("processed_at", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
    )
    op.create_index(
        op.f("ix_webhook_events_processed_at"), "webhook_events", ["processed_at"], unique=False
    )
    op.create_table(
        "link_codes",
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=8), nullable=False),
        sa.Column("issued_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_link_codes_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("patient_id", name=op.f("pk_link_codes")),
        sa.UniqueConstraint("code", name=op.f("uq_link_codes_code")),
    )
    op.create_table(
        "link_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("line_user_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_link_failures")),
    )
    op.create_index(
        op.f("ix_link_failures_line_user_id"), "link_failures", ["line_user_id"], unique=False
    )
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("public_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("line_linked_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("forgotten_at", sa.DateTime(), nullable=True))
    patients = sa.table("patients", sa.column("id", sa.Integer), sa.column("public_id", sa.String))
    connection = op.get_bind()
    for (patient_id,) in connection.execute(sa.select(patients.c.id)):
        connection.execute(
            patients.update()
            .where(patients.c.id == patient_id)
            .values(public_id=secrets.token_hex(16))
        )
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.alter_column("public_id", existing_type=sa.String(length=32), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_patients_public_id"), ["public_id"])


def downgrade() -> None:
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_patients_public_id"), type_="unique")
        batch_op.drop_column("forgotten_at")
        batch_op.drop_column("line_linked_at")
        batch_op.drop_column("public_id")
    op.drop_index(op.f("ix_link_failures_line_user_id"), table_name="link_failures")
    op.drop_table("link_failures")
    op.drop_table("link_codes")
    op.drop_index(op.f("ix_webhook_events_processed_at"), table_name="webhook_events")
    op.drop_table("webhook_events")

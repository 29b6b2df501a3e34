"""desk accounts, the desk's audit log and failed sign-ins

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

The practitioner's desk (a web application) signs its staff in: accounts per clinic
(an email unique within the clinic, an Argon2 hash), every change made in the desk
recorded with who made it, and failed sign-ins kept for the rate limit's window, in
the database so that every web process counts the same ones.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "desk_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("clinic_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("disabled_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinics.id"], name=op.f("fk_desk_users_clinic_id_clinics")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_desk_users")),
        sa.UniqueConstraint("clinic_id", "email", name=op.f("uq_desk_users_clinic_id")),
    )
    op.create_table(
        "desk_audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("clinic_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinics.id"], name=op.f("fk_desk_audit_clinic_id_clinics")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["desk_users.id"], name=op.f("fk_desk_audit_user_id_desk_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_desk_audit")),
    )
    op.create_index("ix_desk_audit_clinic_id_at", "desk_audit", ["clinic_id", "at"], unique=False)
    op.create_table(
        "desk_sign_in_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("clinic_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"],
            ["clinics.id"],
            name=op.f("fk_desk_sign_in_failures_clinic_id_clinics"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_desk_sign_in_failures")),
    )
    op.create_index(
        op.f("ix_desk_sign_in_failures_key"), "desk_sign_in_failures", ["key"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_desk_sign_in_failures_key"), table_name="desk_sign_in_failures")
    op.drop_table("desk_sign_in_failures")
    op.drop_index("ix_desk_audit_clinic_id_at", table_name="desk_audit")
    op.drop_table("desk_audit")
    op.drop_table("desk_users")

"""owners and staff among the desk's accounts

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04

An owner manages the clinic's desk accounts; staff use the desk. Every account made
before this was made by the operator with `tayori user add`, so each becomes an owner.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The default fills the existing rows, then goes: every new account says its role.
    with op.batch_alter_table("desk_users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("role", sa.String(length=16), nullable=False, server_default="owner")
        )
    with op.batch_alter_table("desk_users", schema=None) as batch_op:
        batch_op.alter_column("role", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("desk_users", schema=None) as batch_op:
        batch_op.drop_column("role")

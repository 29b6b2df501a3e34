"""the versions of the practitioner's messages saved in the desk

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03

The desk's message editor writes the files in the clinic's messages folder and keeps
every text it replaced or wrote, per clinic and file, so that any version can be
restored.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "template_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("clinic_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("saved_by", sa.Integer(), nullable=True),
        sa.Column("saved_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinics.id"], name=op.f("fk_template_versions_clinic_id_clinics")
        ),
        sa.ForeignKeyConstraint(
            ["saved_by"], ["desk_users.id"], name=op.f("fk_template_versions_saved_by_desk_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_template_versions")),
    )
    op.create_index(
        "ix_template_versions_clinic_id_path",
        "template_versions",
        ["clinic_id", "path"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_template_versions_clinic_id_path", table_name="template_versions")
    op.drop_table("template_versions")

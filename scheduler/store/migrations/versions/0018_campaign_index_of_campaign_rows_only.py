"""deliveries: the campaign index holds the rows of a campaign only

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-29

Most deliveries belong to no campaign (reminders, nudges, follow-ups: a clinic's
first plan writes one for most of its patients), and every one of them was written
into the index by campaign as well. A partial index leaves them out: it answers the
same questions, which all name a campaign or ask for rows that have one.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_deliveries_clinic_id_campaign_id_campaign_day"
_COLUMNS = ["clinic_id", "campaign_id", "campaign_day"]


def upgrade() -> None:
    of_a_campaign = sa.text("campaign_id IS NOT NULL")
    op.drop_index(_INDEX, table_name="deliveries")
    op.create_index(
        _INDEX,
        "deliveries",
        _COLUMNS,
        sqlite_where=of_a_campaign,
        postgresql_where=of_a_campaign,
    )


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="deliveries")
    op.create_index(_INDEX, "deliveries", _COLUMNS)

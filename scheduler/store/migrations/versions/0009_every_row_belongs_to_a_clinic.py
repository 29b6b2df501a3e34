"""every row belongs to a clinic

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29

One installation can serve several clinics. The clinic of this installation's own
settings is the first one (id 1, slug "default"), and everything already in the
database is moved into it: patients (and through them their appointments, consent
and cadence histories and link codes), deliveries, channel holds, the LINE budget,
webhook events, failed link attempts and the planner's records. A patient's number
and a delivery's idempotency key are unique within their clinic.
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FIRST_CLINIC = 1
# Tables whose primary key gains the clinic: rebuilt, their rows copied.
REKEYED = {
    "channel_states": (
        ["channel"],
        [
            sa.Column("channel", sa.String(length=16), nullable=False),
            sa.Column("held_because", sa.String(length=16), nullable=True),
            sa.Column("held_reason", sa.Text(), nullable=True),
            sa.Column("held_since", sa.DateTime(), nullable=True),
            sa.Column("held_until", sa.DateTime(), nullable=True),
        ],
    ),
    "line_quota_months": (
        ["month"],
        [
            sa.Column("month", sa.String(length=7), nullable=False),
            sa.Column("quota_limit", sa.Integer(), nullable=True),
            sa.Column("used", sa.Integer(), nullable=False),
            sa.Column("reserved", sa.Integer(), nullable=False),
            sa.Column("read_at", sa.DateTime(), nullable=True),
        ],
    ),
    "planning_settings": (
        [],
        [
            sa.Column("fingerprint", sa.String(length=64), nullable=False),
            sa.Column("recorded_at", sa.DateTime(), nullable=False),
        ],
    ),
    "planned_occurrences": (
        ["campaign_id", "day"],
        [
            sa.Column("campaign_id", sa.String(length=64), nullable=False),
            sa.Column("day", sa.Date(), nullable=False),
            sa.Column("planned_at", sa.DateTime(), nullable=False),
        ],
    ),
    # LINE's event ids are unique per channel: two clinics' events never shadow each
    # other.
    "webhook_events": (
        ["id"],
        [
            sa.Column("id", sa.String(length=64), nullable=False),
            sa.Column("event_type", sa.String(length=32), nullable=False),
            sa.Column("body", sa.Text(), nullable=False),
            sa.Column("received_at", sa.DateTime(), nullable=False),
            sa.Column("processed_at", sa.DateTime(), nullable=True),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("last_error", sa.Text(), nullable=True),
        ],
    ),
}
# Indexes of the deliveries that now lead with the clinic: each clinic's claims,
# and a campaign's newsletters, are found without reading another clinic's.
DELIVERY_INDEXES = {
    "ix_deliveries_state_send_after": ["state", "send_after"],
    "ix_deliveries_campaign_id_campaign_day": ["campaign_id", "campaign_day"],
}


def upgrade() -> None:
    clinics = op.create_table(
        "clinics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=40), nullable=False),
        sa.Column("config_dir", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clinics")),
        sa.UniqueConstraint("slug", name=op.f("uq_clinics_slug")),
    )
    now = datetime.now(UTC).replace(tzinfo=None)
    # Its id comes from the table's own sequence (1, the table being new), so that
    # PostgreSQL's next clinic gets 2.
    op.bulk_insert(clinics, [{"slug": "default", "config_dir": None, "created_at": now}])
    with op.batch_alter_table("patients", schema=None) as batch_op:
        _add_clinic(batch_op, "patients")
        batch_op.drop_constraint(batch_op.f("uq_patients_external_id"), type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_patients_clinic_id"), ["clinic_id", "external_id"]
        )
        batch_op.drop_index(batch_op.f("ix_patients_replan_at"))
        batch_op.create_index("ix_patients_clinic_id_replan_at", ["clinic_id", "replan_at"])
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        _add_clinic(batch_op, "deliveries")
        batch_op.drop_constraint(batch_op.f("uq_deliveries_idempotency_key"), type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_deliveries_clinic_id"), ["clinic_id", "idempotency_key"]
        )
        for name, indexed in DELIVERY_INDEXES.items():
            batch_op.drop_index(name)
            batch_op.create_index(
                name.replace("ix_deliveries_", "ix_deliveries_clinic_id_"), ["clinic_id", *indexed]
            )
    with op.batch_alter_table("link_failures", schema=None) as batch_op:
        _add_clinic(batch_op, "link_failures")
    for table in ("patients", "deliveries", "link_failures"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("clinic_id", server_default=None)
    for table, (key, columns) in REKEYED.items():
        _rekey(table, key, columns)
    op.create_index(
        op.f("ix_webhook_events_processed_at"), "webhook_events", ["processed_at"], unique=False
    )


def _add_clinic(batch_op: object, table: str) -> None:
    batch_op.add_column(  # type: ignore[attr-defined]
        sa.Column("clinic_id", sa.Integer(), nullable=False, server_default=str(FIRST_CLINIC))
    )
    batch_op.create_foreign_key(  # type: ignore[attr-defined]
        op.f(f"fk_{table}_clinic_id_clinics"), "clinics", ["clinic_id"], ["id"]
    )


def _rekey(table: str, key: list[str], columns: list[Any]) -> None:
    """Rebuild `table` with the clinic first in its primary key, rows kept (these
    tables hold a handful of rows, the inbox a few thousand)."""
    names = [c.name for c in columns]
    # Read through the columns' types: SQLite hands back its dates as text.
    old = sa.table(table, *(sa.column(c.name, c.type) for c in columns))
    rows = op.get_bind().execute(sa.select(*old.c)).all()
    op.drop_table(table)
    rebuilt = op.create_table(
        table,
        sa.Column("clinic_id", sa.Integer(), nullable=False),
        *columns,
        sa.ForeignKeyConstraint(
            ["clinic_id"], ["clinics.id"], name=op.f(f"fk_{table}_clinic_id_clinics")
        ),
        sa.PrimaryKeyConstraint("clinic_id", *key, name=op.f(f"pk_{table}")),
    )
    op.bulk_insert(
        rebuilt, [{"clinic_id": FIRST_CLINIC, **dict(zip(names, row, strict=True))} for row in rows]
    )


def downgrade() -> None:
    raise NotImplementedError(
        "0009 cannot be undone: patients of several clinics may share a number; "
        "restore the backup taken before the upgrade"
    )

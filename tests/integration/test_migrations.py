"""The migrations build exactly the tables the models describe, on both engines."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from scheduler.store import db
from scheduler.store.models import Base
from tests.conftest import DATABASES


def test_the_migrated_database_matches_the_models(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_the_latest_migration_the_code_names_is_alembics_only_head() -> None:
    engine = sa.create_engine("sqlite://")
    script = ScriptDirectory.from_config(db._alembic_config(engine))
    assert script.get_heads() == [db.LATEST_MIGRATION]


def test_the_latest_migration_downgrades_and_upgrades_again(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        config = db._alembic_config(engine)
        command.downgrade(config, "-1")
        command.upgrade(config, "head")
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def _index_definition(database_url: str, index: str) -> str:
    # compare_metadata does not compare an index's condition: read it from the catalog.
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                query = "SELECT sql FROM sqlite_master WHERE name = :index"
            else:
                query = (
                    "SELECT indexdef FROM pg_indexes "
                    "WHERE indexname = :index AND schemaname = current_schema()"
                )
            definition: str = connection.execute(sa.text(query), {"index": index}).scalar_one()
    finally:
        engine.dispose()
    return definition


def test_the_campaign_index_holds_only_rows_of_a_campaign(database_url: str) -> None:
    definition = _index_definition(database_url, "ix_deliveries_clinic_id_campaign_id_campaign_day")
    assert "WHERE" in definition.upper()
    assert "campaign_id IS NOT NULL" in definition


def test_the_bookings_index_holds_only_bookings(database_url: str) -> None:
    definition = _index_definition(database_url, "ix_appointments_patient_id_starts_at_booked")
    assert "WHERE" in definition.upper()
    assert "'booked'" in definition


@contextmanager
def _at(request: pytest.FixtureRequest, tmp_path: Path, revision: str) -> Iterator[sa.Engine]:
    """A database (of the test's parameter) migrated up to `revision` only; on
    PostgreSQL in a schema of its own, dropped afterwards."""
    if request.param == "sqlite":
        engine = db.make_engine(f"sqlite:///{tmp_path / 'tayori.db'}")
        drop = None
    else:
        base = request.getfixturevalue("postgres_schema_url")  # skips without a server
        schema = f"tayori_{revision}_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(base)
        with admin.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        engine = db.make_engine(url.render_as_string(hide_password=False))
        drop = (admin, schema)
    command.upgrade(db._alembic_config(engine), revision)
    try:
        yield engine
    finally:
        engine.dispose()
        if drop is not None:
            admin, schema = drop
            with admin.begin() as connection:
                connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


@pytest.fixture(params=DATABASES)
def before_clinics(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """A database at 0008, the last migration before clinics, holding a row in every
    table that 0009 changes."""
    with _at(request, tmp_path, "0008") as engine:
        at = "2026-11-20 09:00:00"
        with engine.begin() as connection:
            for statement in (
                "INSERT INTO patients (external_id, name, preferred_channel, public_id, "
                f"created_at, updated_at) VALUES ('P1', 'x', 'line', '{'0' * 32}', '{at}', '{at}')",
                "INSERT INTO deliveries (id, idempotency_key, patient_id, reason, send_after, "
                "state, attempts, maybe_sent, created_at, updated_at) VALUES "
                f"('d1', 'k1', 1, 'cadence_nudge', '{at}', 'planned', 0, false, '{at}', '{at}')",
                "INSERT INTO channel_states (channel, held_because, held_since) "
                f"VALUES ('line', 'quota', '{at}')",
                "INSERT INTO line_quota_months (month, quota_limit, used, reserved, read_at) "
                f"VALUES ('2026-11', 200, 7, 0, '{at}')",
                "INSERT INTO planning_settings (id, fingerprint, recorded_at) "
                f"VALUES (1, 'f', '{at}')",
                "INSERT INTO planned_occurrences (campaign_id, day, planned_at) "
                f"VALUES ('year-end', '2026-12-20', '{at}')",
                "INSERT INTO webhook_events (id, event_type, body, received_at, attempts) "
                f"VALUES ('e1', 'follow', '{{}}', '{at}', 0)",
            ):
                connection.execute(sa.text(statement))
        yield engine


@pytest.fixture(params=DATABASES)
def before_roles(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """A database at 0015, the last migration before desk roles, with an account."""
    with _at(request, tmp_path, "0015") as engine:
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO desk_users (clinic_id, email, password_hash, created_at) "
                    "VALUES (1, 'reception@clinic.example', 'x', '2026-11-20 09:00:00')"
                )
            )
        yield engine


@pytest.fixture(params=DATABASES)
def before_replans(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """A database at 0018, the last migration with `patients.replan_at`: one patient
    planned until a moment, one marked."""
    with _at(request, tmp_path, "0018") as engine:
        at = "2026-11-20 09:00:00"
        with engine.begin() as connection:
            for external_id, public_id, replan_at in (
                ("P1", "1" * 32, "'2026-12-01 01:00:00'"),
                ("P2", "2" * 32, "NULL"),
            ):
                connection.execute(
                    sa.text(
                        "INSERT INTO patients (clinic_id, external_id, name, preferred_channel, "
                        "public_id, created_at, updated_at, replan_at) VALUES "
                        f"(1, '{external_id}', 'x', 'line', '{public_id}', '{at}', '{at}', "
                        f"{replan_at})"
                    )
                )
        yield engine


def test_the_replans_migration_keeps_each_patients_moment_and_mark(
    before_replans: sa.Engine,
) -> None:
    command.upgrade(db._alembic_config(before_replans), "0019")
    with before_replans.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT p.external_id, r.clinic_id, r.replan_at FROM replans r "
                "JOIN patients p ON p.id = r.patient_id ORDER BY p.external_id"
            )
        ).all()
    assert [(external_id, clinic, str(at)[:19]) for external_id, clinic, at in rows] == [
        ("P1", 1, "2026-12-01 01:00:00"),
        ("P2", 1, "None"),
    ]


def test_the_roles_migration_makes_every_existing_account_an_owner(
    before_roles: sa.Engine,
) -> None:
    command.upgrade(db._alembic_config(before_roles), "0016")
    with before_roles.connect() as connection:
        roles = connection.execute(sa.text("SELECT role FROM desk_users")).scalars().all()
    assert roles == ["owner"]


def test_the_clinics_migration_moves_every_existing_row_into_the_first_clinic(
    before_clinics: sa.Engine,
) -> None:
    db.upgrade(before_clinics)
    with before_clinics.connect() as connection:
        for table in (
            "patients",
            "deliveries",
            "channel_states",
            "line_quota_months",
            "planning_settings",
            "planned_occurrences",
            "webhook_events",
        ):
            clinics = connection.execute(sa.text(f"SELECT clinic_id FROM {table}")).scalars()
            assert list(clinics) == [1], table
        used = connection.execute(sa.text("SELECT used FROM line_quota_months")).scalar()
        assert used == 7
        slugs = connection.execute(sa.text("SELECT id, slug FROM clinics")).all()
    assert [tuple(row) for row in slugs] == [(1, "default")]

"""The migrations build exactly the tables the models describe, on both engines."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from scheduler.store.models import Base


def test_the_migrated_database_matches_the_models(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_the_latest_migration_downgrades_and_upgrades_again(database_url: str) -> None:
    from alembic import command

    from scheduler.store.db import _alembic_config

    engine = sa.create_engine(database_url)
    try:
        config = _alembic_config(engine)
        command.downgrade(config, "-1")
        command.upgrade(config, "head")
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    assert differences == []

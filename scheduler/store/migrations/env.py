"""Alembic runs migrations on the engine Tayori hands it (see scheduler.store.db.upgrade)."""

from alembic import context

from scheduler.store.models import Base

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    # SQLite alters a table by building a new one and dropping the old: with foreign
    # keys enforced, dropping `patients` would fail while appointments refer to it.
    # The pragma only takes effect outside a transaction, so it goes through the
    # driver's connection (SQLAlchemy's would begin one first); the references are
    # checked again before the migration commits.
    sqlite = connection.dialect.name == "sqlite"
    driver = connection.connection.driver_connection
    if sqlite:
        driver.execute("PRAGMA foreign_keys=OFF")
    try:
        context.configure(
            connection=connection, target_metadata=Base.metadata, render_as_batch=sqlite
        )
        with context.begin_transaction():
            context.run_migrations()
            if sqlite and (broken := connection.exec_driver_sql("PRAGMA foreign_key_check").all()):
                raise RuntimeError(f"the migration left {len(broken)} broken references")
    finally:
        if sqlite:
            driver.execute("PRAGMA foreign_keys=ON")

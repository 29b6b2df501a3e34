"""Alembic runs migrations on the engine Tayori hands it (see scheduler.store.db.upgrade)."""

from alembic import context

from scheduler.store.models import Base

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()

"""The database at the edge: engine, sessions, migrations."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Integer,
    String,
    any_,
    bindparam,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from scheduler.clock import Clock
from scheduler.settings import DEFAULT_CLINIC_ID

# Imported for its flush hook, which marks the patients whose facts a session changes.
from scheduler.store import replan as _replan  # noqa: F401
from scheduler.store.clinics import clinic_of, session_info
from scheduler.store.models import Patient

if TYPE_CHECKING:
    # Alembic is imported where it is used: most commands only check the version.
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# How long a SQLite connection waits for another process's write lock, in seconds,
# unless DATABASE_URL says otherwise (sqlite:///path?timeout=5).
SQLITE_BUSY_TIMEOUT = 30


class DatabaseFolderError(Exception):
    """The folder of a SQLite database file does not exist and cannot be made."""

    def __init__(self, folder: Path, reason: str) -> None:
        super().__init__(f"cannot create the folder {folder}: {reason}")
        self.folder = folder
        self.reason = reason


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    # Errors carry no SQL parameters: they may be a patient's name or contact.
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _make_folder(Path(parsed.database).parent)
        busy = {} if "timeout" in parsed.query else {"timeout": SQLITE_BUSY_TIMEOUT}
        engine = create_engine(url, connect_args=busy, hide_parameters=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    return create_engine(url, pool_pre_ping=True, hide_parameters=True)


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise DatabaseFolderError(folder, "a file is in the way") from e
    except OSError as e:
        raise DatabaseFolderError(folder, e.strerror or type(e).__name__) from e


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
    dbapi_connection.isolation_level = None  # type: ignore[attr-defined]
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    # WAL lets `tayori status` read while the worker writes; foreign keys are off by
    # default in SQLite and we rely on them.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin_immediate(connection: Connection) -> None:
    # Take the write lock at BEGIN: two processes that read and then write would
    # otherwise fail with "database is locked" instead of waiting their turn. A
    # read-only session (`reading`) needs no lock: WAL gives it a snapshot.
    if connection.get_execution_options().get(_READ_ONLY):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: Engine, clinic_id: int = DEFAULT_CLINIC_ID) -> sessionmaker[Session]:
    """Sessions that work for one clinic (see store/clinics.py)."""
    return sessionmaker(engine, expire_on_commit=False, info=session_info(clinic_id))


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on any error."""
    with sessions() as session, session.begin():
        yield session


_READ_ONLY = "tayori_read_only"


@contextmanager
def reading(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session that only reads: on SQLite it takes no write lock, so reading a
    batch's facts never holds up an import or another worker's outcome."""
    with sessions() as session:
        session.connection(execution_options={_READ_ONLY: True})
        yield session


@contextmanager
def snapshot(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session that only reads and sees one moment throughout, so that what several
    queries read agrees (an export's files): SQLite's read transaction is one
    snapshot already; PostgreSQL's needs REPEATABLE READ."""
    with sessions() as session:
        options: dict[str, object] = {_READ_ONLY: True}
        if session.get_bind().dialect.name == "postgresql":
            options["isolation_level"] = "REPEATABLE READ"
        session.connection(execution_options=options)
        yield session


class DatabaseClock:
    """The database's own time. Claims' leases are measured on it, so workers whose
    clocks differ, or a worker started with `--now`, agree on when a lease ends.

    PostgreSQL answers with its clock; SQLite has no server, and every process that
    shares its file runs on the one host whose clock this reads. Tests pin it with
    `DatabaseClock(pinned=FixedClock(...))`.
    """

    def __init__(self, pinned: Clock | None = None) -> None:
        self._pinned = pinned

    def read(self, session: Session) -> datetime:
        if self._pinned is not None:
            return self._pinned.now()
        if session.get_bind().dialect.name == "postgresql":
            moment = session.scalar(select(func.clock_timestamp()))
            assert isinstance(moment, datetime)
            return moment.astimezone(UTC)
        return datetime.now(UTC)


def _alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> None:
    from alembic import command

    command.upgrade(_alembic_config(engine), "head")


class Migrations(Enum):
    """Where a database stands against this version's migrations."""

    CURRENT = "current"
    BEHIND = "behind"  # some or all to apply: `tayori db upgrade`
    # At a revision this version does not know: a newer Tayori migrated it.
    NEWER = "newer"


# The revision of the newest file in store/migrations/versions (a test holds the two
# together): a database there is up to date without asking alembic, whose import
# costs a tenth of a second at the start of every command.
LATEST_MIGRATION = "0020"
_VERSION_TABLE = "alembic_version"  # alembic's default, which env.py keeps


def migrations(engine: Engine) -> Migrations:
    current = _recorded_revisions(engine)
    if current == {LATEST_MIGRATION}:
        return Migrations.CURRENT
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config(engine))
    if current == set(script.get_heads()):
        return Migrations.CURRENT
    if current - {revision.revision for revision in script.walk_revisions()}:
        return Migrations.NEWER
    return Migrations.BEHIND


def _recorded_revisions(engine: Engine) -> set[str]:
    """The revisions alembic recorded in the database (none before the first
    migration)."""
    with engine.connect() as connection:
        if not inspect(connection).has_table(_VERSION_TABLE):
            return set()
        return set(connection.scalars(text(f"SELECT version_num FROM {_VERSION_TABLE}")))


def may_use_temporary_tables(engine: Engine) -> bool:
    """Whether the role may create temporary tables, as bulk writes on PostgreSQL do
    (store/bulk.py). PostgreSQL grants it to every role unless it is revoked."""
    if engine.dialect.name != "postgresql":
        return True
    with engine.connect() as connection:
        return bool(
            connection.scalar(
                text("SELECT has_database_privilege(current_database(), 'TEMPORARY')")
            )
        )


def is_up_to_date(engine: Engine) -> bool:
    return migrations(engine) is Migrations.CURRENT


def is_empty(sessions: sessionmaker[Session]) -> bool:
    with sessions() as session:
        patients = select(func.count()).where(Patient.clinic_id == clinic_of(session))
        return session.scalar(patients) == 0


def among(
    session: Session, column: ColumnElement[Any] | InstrumentedAttribute[Any], ids: Sequence[int]
) -> ColumnElement[bool]:
    """`column IN ids`. On PostgreSQL as `= ANY(array)`: one parameter instead of one
    per id keeps the statement short, so psycopg parses it once and not per batch
    (a thousand-id IN list costs it some 15 ms of Python each time).

    Ids without a gap (a plan of everyone reads patients in runs of a thousand) go
    as a range: two parameters, whatever the number of ids."""
    if ids and max(ids) - min(ids) + 1 == len(ids) == len(set(ids)):
        return column.between(min(ids), max(ids))
    return _in_list(session, column, ids, Integer)


def among_texts(
    session: Session, column: ColumnElement[Any] | InstrumentedAttribute[Any], values: Sequence[str]
) -> ColumnElement[bool]:
    """`column IN values`, on PostgreSQL as `= ANY(array)` for the reason `among` gives."""
    return _in_list(session, column, values, String)


def _in_list(
    session: Session,
    column: ColumnElement[Any] | InstrumentedAttribute[Any],
    values: Sequence[object],
    element: type[Integer] | type[String],
) -> ColumnElement[bool]:
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(element)))
    return column.in_(values)


# An import refreshes a table's statistics itself when it changed this many rows (or
# patients), and at least this share of the table's (autovacuum's own default share).
ANALYZE_FROM_ROWS = 1_000
ANALYZE_FROM_SHARE = 0.1


def refresh_statistics(session: Session, tables: Iterable[str], changed: int) -> None:
    """After a bulk write on PostgreSQL of `changed` rows (or patients), `ANALYZE`
    each of these tables whose statistics it may have outdated: a table never
    analysed, or one of whose estimated rows it changed a share.

    The query planner chooses its plans from these statistics, and autovacuum
    refreshes them only a minute or more after a large change: until then the
    worker's next cycle and a dry run may run with plans made for an empty table
    (7.6 s instead of 5.2 s for the dry run of a planned 100,000-patient clinic,
    bench/README.md).

    It runs in the caller's transaction. Until that ends, ANALYZE holds a lock on the
    table that only another ANALYZE, a VACUUM or a schema change waits for. The row
    estimates count at once, the column statistics from the commit. A role that does
    not own the table gets a warning from PostgreSQL and no statistics. SQLite's
    (`sqlite_stat1`) are never gathered: its plans here come from the indexes alone."""
    if session.get_bind().dialect.name != "postgresql" or changed < ANALYZE_FROM_ROWS:
        return
    for table in tables:
        estimate = session.scalar(
            text("SELECT reltuples FROM pg_class WHERE oid = CAST(:table AS regclass)"),
            {"table": table},
        )
        if estimate is None or estimate < 0 or changed >= ANALYZE_FROM_SHARE * estimate:
            session.execute(text(f"ANALYZE {table}"))


def upsert_insert(session: Session, table: type[Any]) -> postgresql.Insert | sqlite.Insert:
    """An INSERT for `table` that can say ON CONFLICT, in the session's dialect."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)

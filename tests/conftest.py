"""Shared fixtures: real databases (SQLite always, PostgreSQL when available).

PostgreSQL comes from TEST_POSTGRES_URL. Off CI its tests skip with the reason when
it is unset or unreachable; on CI (CI=true) they fail instead, so a broken database
setup can never pass unnoticed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from scheduler.runtime import Runtime, open_runtime
from scheduler.settings import Settings, load_settings
from scheduler.store import db
from scheduler.store.models import Base

ROOT = Path(__file__).resolve().parent.parent
ON_CI = os.environ.get("CI", "").lower() == "true"


def _unavailable(reason: str) -> None:
    if ON_CI:
        pytest.fail(f"PostgreSQL is required on CI: {reason}")
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty SQLite file that each test copies (faster than migrating)."""
    path = tmp_path_factory.mktemp("template") / "tayori.db"
    engine = db.make_engine(f"sqlite:///{path}")
    db.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_schema_url() -> Iterator[str]:
    """A private schema in the test database, migrated once for the session."""
    base = os.environ.get("TEST_POSTGRES_URL")
    if not base:
        _unavailable("TEST_POSTGRES_URL is not set")
    assert base is not None
    schema = f"tayori_test_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base)
    try:
        with admin.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as e:
        admin.dispose()
        _unavailable(f"cannot connect to {make_url(base).render_as_string()}: {e.orig}")
    url = (
        make_url(base)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )
    engine = db.make_engine(url)
    db.upgrade(engine)
    engine.dispose()
    yield url
    with admin.begin() as connection:
        connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a migrated, empty database: every test using it runs on both engines."""
    return empty_database(request, request.param, tmp_path)


# Every table but the clinics and Alembic's own, the referencing ones first.
_TABLES = [t.name for t in reversed(Base.metadata.sorted_tables) if t.name != "clinics"]
# A test that leaves more than this in a table (an import of 70,000 patients) has
# the table truncated: its dead rows would slow the next tests, PostgreSQL here
# running without autovacuum.
_TRUNCATE_FROM_BYTES = 1 << 20


def _empty_postgres(connection: sa.Connection) -> None:
    """Empty the schema as migrated, but for the installation's own clinic (which
    migration 0009 made), with every id starting again from 1.

    DELETE rather than TRUNCATE: TRUNCATE makes each table's files anew, about 80 ms
    a test on this machine's PostgreSQL against 10 ms to delete a test's few rows."""
    large = connection.execute(
        sa.text(
            "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
            "AND relkind = 'r' AND relname = ANY(:tables) AND pg_relation_size(oid) > :bytes"
        ),
        {"tables": _TABLES, "bytes": _TRUNCATE_FROM_BYTES},
    ).scalars()
    truncated = ", ".join(f'"{name}"' for name in large)
    if truncated:
        connection.exec_driver_sql(f"TRUNCATE {truncated} CASCADE")
    connection.exec_driver_sql(
        "; ".join(f'DELETE FROM "{name}"' for name in _TABLES)
        + "; DELETE FROM clinics WHERE id <> 1"
    )
    connection.exec_driver_sql(
        "SELECT setval(quote_ident(sequencename)::regclass, 1, sequencename = 'clinics_id_seq') "
        "FROM pg_sequences WHERE schemaname = current_schema()"
    )


def empty_database(request: pytest.FixtureRequest, which: str, folder: Path) -> str:
    """A migrated, empty database, `which` is "sqlite" (a file in `folder`) or "postgresql":
    `database_url`'s, for fixtures of a wider scope (such as a module's web process)."""
    if which == "sqlite":
        path = folder / "tayori.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_schema_url")
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        _empty_postgres(connection)
    engine.dispose()
    return url


def clinic_variables(database_url: str, folder: Path) -> dict[str, str]:
    """The environment of a clinic with the shipped settings and messages, its
    previews in `folder`."""
    return {
        "DATABASE_URL": database_url,
        "TAYORI_CONFIG": str(ROOT / "config" / "tayori.toml"),
        "TAYORI_MESSAGES_DIR": str(ROOT / "messages"),
        "TAYORI_OUTBOX_DIR": str(folder / "outbox"),
    }


def install_clinic_env(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Set the environment of a clinic installation in a temporary directory, as the
    CLI and the worker read it, and make that directory the current one."""
    env = clinic_variables(database_url, tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return env


@pytest.fixture
def clinic_env(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    return install_clinic_env(database_url, tmp_path, monkeypatch)


@pytest.fixture
def local_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_template: Path
) -> dict[str, str]:
    """Like `clinic_env`, on SQLite only: for behaviour that does not depend on the
    database engine (arguments, settings, a database never migrated)."""
    database = tmp_path / "tayori.db"
    shutil.copy(sqlite_template, database)
    return install_clinic_env(f"sqlite:///{database}", tmp_path, monkeypatch)


def run_tayori(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m scheduler ARGS`, as a separate process in the current directory,
    with `stdin` as its standard input (a pipe, not a terminal) when given."""
    return subprocess.run(
        [sys.executable, "-m", "scheduler", *args],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def settings(clinic_env: dict[str, str]) -> Settings:
    return load_settings(clinic_env)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    """The wired application (engine, dispatcher with the preview channel)."""
    opened = open_runtime(settings)
    yield opened
    opened.close()


@pytest.fixture
def sessions(runtime: Runtime) -> sessionmaker[Session]:
    return runtime.sessions


@pytest.fixture
def repo_settings() -> Settings:
    """The shipped settings file, with no database: for tests that need none."""
    return load_settings({"TAYORI_CONFIG": str(ROOT / "config" / "tayori.toml")})


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium, driven by Playwright (tests/integration/browser.py)."""
    from tests.integration.browser import launch, require_a_browser

    require_a_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()

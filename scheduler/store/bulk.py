"""Many rows in one go, through the driver's own executemany (or COPY).

At a hundred thousand rows, SQLAlchemy's work for each row and value (building its
parameters, converting each datetime) costs several times the database's own. Here
each value is converted once by its column's own type (a clinic's rows share a few
thousand moments and one `now`), and the rows go to the driver as plain tuples.

On PostgreSQL, rows go by COPY, in binary format: in its text format psycopg
formats each value in Python (some 6 µs a row of five columns, against 0.5 µs). Rows
that must meet what the table holds (an insert that skips existing keys, an update)
are COPYed into a temporary table first and then written by one statement that
reads it. PostgreSQL runs an `INSERT … VALUES` or an `UPDATE` once per row of an
executemany, starting its executor each time; from a table it runs once. For a
first plan's 68,000 outbox rows that took the insert from 2.2 s to 1.65 s, and
`replan_at` for 100,000 patients from 1.0 s (one statement over arrays, `unnest`,
per batch) to 0.8 s. An `INSERT … SELECT` over arrays was slower than either.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from operator import call, itemgetter
from typing import Any, TypeVar

from sqlalchemy import Dialect, Table
from sqlalchemy.orm import Session

from scheduler.store.clinics import clinic_of

T = TypeVar("T")

_LENGTH = re.compile(r"\(.*?\)")


class DriverRows:
    """Turns values for `columns` of `table` into the tuples the driver takes."""

    def __init__(self, dialect: Dialect, table: Table, columns: Iterable[str]) -> None:
        self.table = table.name
        self.columns = tuple(columns)
        self.converters = [
            _cached(table.c[column].type.dialect_impl(dialect).bind_processor(dialect))
            for column in self.columns
        ]
        self.marker = "?" if dialect.paramstyle == "qmark" else "%s"
        self.postgresql = dialect.name == "postgresql"
        # The columns' types as PostgreSQL names them, without a length (VARCHAR(64)
        # is VARCHAR): what a binary COPY needs. The length is still checked, as each
        # value goes into its column.
        self.types = (
            [
                _LENGTH.sub("", table.c[c].type.compile(dialect=dialect)).lower()
                for c in self.columns
            ]
            if self.postgresql
            else []
        )

    def row(self, *values: object) -> tuple[object, ...]:
        return tuple(map(call, self.converters, values))

    def placeholders(self) -> str:
        return ", ".join([self.marker] * len(self.columns))


def executemany(session: Session, sql: str, rows: list[tuple[object, ...]]) -> int:
    """Run `sql` once per row in the session's transaction; how many rows it changed
    (both drivers add up the rows each statement changed)."""
    if not rows:
        return 0
    result = session.connection().exec_driver_sql(sql, rows)
    return max(result.rowcount, 0)


def insert_new(session: Session, table: Table, rows: list[dict[str, Any]]) -> int:
    """Insert rows of this clinic (each with the same columns, and without the
    clinic's), leaving a row whose (clinic_id, idempotency_key) exists as it is;
    how many were new."""
    if not rows:
        return 0
    values = DriverRows(session.get_bind().dialect, table, ("clinic_id", *rows[0]))
    clinic_id = clinic_of(session)
    in_order = itemgetter(*rows[0])
    driver_rows = [values.row(clinic_id, *in_order(row)) for row in rows]
    columns = ", ".join(values.columns)
    skip_existing = "ON CONFLICT (clinic_id, idempotency_key) DO NOTHING"
    if values.postgresql:
        staged = _staged(session, values, driver_rows)
        return _changed(
            session,
            f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {staged} " + skip_existing,
        )
    sql = f"INSERT INTO {table.name} ({columns}) VALUES ({values.placeholders()}) " + skip_existing
    return executemany(session, sql, driver_rows)


def update_by_key(session: Session, values: DriverRows, rows: list[tuple[object, ...]]) -> int:
    """Set the columns of `values` but its last, the table's key (`id`, say), in the
    row of each key (each at most once); how many rows were changed."""
    *columns, key = values.columns
    if not rows:
        return 0
    if values.postgresql:
        assignments = ", ".join(f"{column} = given.{column}" for column in columns)
        staged = _staged(session, values, rows)
        return _changed(
            session,
            f"UPDATE {values.table} SET {assignments} FROM {staged} AS given "
            f"WHERE {values.table}.{key} = given.{key}",
        )
    assignments = ", ".join(f"{column} = {values.marker}" for column in columns)
    sql = f"UPDATE {values.table} SET {assignments} WHERE {key} = {values.marker}"
    return executemany(session, sql, rows)


def _staged(session: Session, values: DriverRows, rows: Iterable[tuple[object, ...]]) -> str:
    """PostgreSQL: the name of a temporary table now holding `rows` (the columns of
    `values`, COPYed in), for the statement that reads them. It is dropped when the
    transaction ends."""
    # In the session's own schema by name: never a table of the database's that
    # happens to be called the same.
    staged = f"pg_temp.staged_{values.table}"
    columns = ", ".join(values.columns)
    # Only the columns themselves: no defaults (a sequence would be drawn twice), no
    # constraints (the real table checks its rows as they go in). Emptied of the last
    # batch's rows in the same round trip: TRUNCATE rather than DELETE, whose rows
    # every later statement would read again, dead, until the transaction ends.
    session.connection().exec_driver_sql(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {staged} ON COMMIT DROP AS "
        f"SELECT {columns} FROM {values.table} WITH NO DATA; TRUNCATE {staged}"
    )
    copy_rows(session, values, rows, into=staged)
    return staged


def _changed(session: Session, sql: str) -> int:
    return max(session.connection().exec_driver_sql(sql).rowcount, 0)


def copy_rows(
    session: Session,
    values: DriverRows,
    rows: Iterable[tuple[object, ...]],
    *,
    into: str | None = None,
) -> None:
    """PostgreSQL's COPY FROM STDIN with psycopg's own connection, in the session's
    transaction: one stream rather than a statement per row. The rows go into
    `values`' table, or `into` another of the same columns."""
    driver = session.connection().connection.driver_connection
    assert driver is not None
    table = into or values.table
    sql = f"COPY {table} ({', '.join(values.columns)}) FROM STDIN (FORMAT BINARY)"
    with driver.cursor() as cursor, cursor.copy(sql) as copy:
        copy.set_types(values.types)
        for row in rows:
            copy.write_row(row)


def _cached(processor: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    if processor is None:
        return _unchanged
    return lru_cache(maxsize=1 << 16)(processor)


def _unchanged(value: T) -> T:
    return value

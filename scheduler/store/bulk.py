"""Many rows in one go, through the driver's own executemany (or COPY).

At a hundred thousand rows, SQLAlchemy's work for each row and value (building its
parameters, converting each datetime) costs several times the database's own. Here
each value is converted once by its column's own type (a clinic's rows share a few
thousand moments and one `now`), and the rows go to the driver as plain tuples.

On PostgreSQL, COPY goes in binary format: in its text format psycopg formats each
value in Python (some 6 µs a row of five columns, against 0.5 µs). An update of
many rows goes as one statement over arrays (`unnest`): PostgreSQL then runs one
statement, not one per row, which halves psycopg's CPU and cuts the server's time
by a fifth. An insert gains nothing that way: there the server's work for each row
(the indexes, the foreign keys) is most of the cost.
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
        # is VARCHAR): what an array cast and a binary COPY need. The length is still
        # checked, as each value goes into its column.
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
    sql = (
        f"INSERT INTO {table.name} ({', '.join(values.columns)}) VALUES "
        f"({values.placeholders()}) ON CONFLICT (clinic_id, idempotency_key) DO NOTHING"
    )
    clinic_id = clinic_of(session)
    in_order = itemgetter(*rows[0])
    return executemany(session, sql, [values.row(clinic_id, *in_order(row)) for row in rows])


def update_by_key(session: Session, values: DriverRows, rows: list[tuple[object, ...]]) -> int:
    """Set the columns of `values` but its last, the table's key (`id`, say), in the
    row of each key (each at most once); how many rows were changed."""
    *columns, key = values.columns
    if not rows:
        return 0
    if values.postgresql:
        # One statement, the rows given as an array a column.
        arrays = ", ".join(f"%s::{type_}[]" for type_ in values.types)
        assignments = ", ".join(f"{column} = given.{column}" for column in columns)
        sql = (
            f"UPDATE {values.table} SET {assignments} FROM unnest({arrays}) "
            f"AS given ({', '.join(values.columns)}) WHERE {values.table}.{key} = given.{key}"
        )
        by_column = tuple(list(column) for column in zip(*rows, strict=True))
        result = session.connection().exec_driver_sql(sql, by_column)
        return max(result.rowcount, 0)
    assignments = ", ".join(f"{column} = {values.marker}" for column in columns)
    sql = f"UPDATE {values.table} SET {assignments} WHERE {key} = {values.marker}"
    return executemany(session, sql, rows)


def copy_rows(session: Session, values: DriverRows, rows: Iterable[tuple[object, ...]]) -> None:
    """PostgreSQL's COPY FROM STDIN with psycopg's own connection, in the session's
    transaction: one stream rather than a statement per row."""
    driver = session.connection().connection.driver_connection
    assert driver is not None
    sql = f"COPY {values.table} ({', '.join(values.columns)}) FROM STDIN (FORMAT BINARY)"
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

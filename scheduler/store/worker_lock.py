"""On SQLite, one worker at a time: SQLite lets one process write at a time, so a
second worker would only wait for the first's locks (and make every import and
command wait longer). PostgreSQL takes any number of workers: no lock there.

The lock is the operating system's (flock) on `<database>.worker.lock` beside the
database file, held while the worker runs: it goes with the process however the
process ends, even by SIGKILL, so a dead worker never keeps the next one out. The
file itself stays (removing it would let a waiting opener lock a file no longer
there), and the database is not touched.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url

LOCK_SUFFIX = ".worker.lock"


class WorkerRunning(Exception):
    """Another worker holds the lock on this database file."""

    def __init__(self, database: Path) -> None:
        super().__init__(
            f"another worker is running on the database {database}: stop it first "
            "(on SQLite one worker runs at a time; PostgreSQL takes several)"
        )
        self.database = database


def _database_file(database_url: str) -> Path | None:
    """The SQLite database's file; None when there is no file to share (PostgreSQL,
    or SQLite in memory)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database).resolve()


@contextmanager
def sole_worker(database_url: str) -> Iterator[None]:
    """Hold the worker lock of a SQLite database for the block; WorkerRunning at
    once if another process holds it. The database's folder must exist."""
    database = _database_file(database_url)
    if database is None:
        yield
        return
    descriptor = os.open(
        database.with_name(database.name + LOCK_SUFFIX), os.O_RDWR | os.O_CREAT, 0o644
    )
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkerRunning(database) from None
        yield
    finally:
        os.close(descriptor)  # and with it the lock

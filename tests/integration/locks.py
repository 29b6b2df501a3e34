"""Waiting, in a test, for another transaction to wait on a lock (PostgreSQL)."""

from __future__ import annotations

import threading

from sqlalchemy import text
from sqlalchemy.orm import Session


def wait_until_a_lock_is_awaited(session: Session) -> None:
    """Return once some transaction waits for a lock (on the server of `session`):
    the other thread of a test has reached the point where it waits for this one."""
    waiting = text("SELECT count(*) FROM pg_locks WHERE NOT granted")
    for _ in range(3000):
        with session.get_bind().connect() as connection:
            if connection.execute(waiting).scalar():
                return
        threading.Event().wait(0.01)
    raise AssertionError("no transaction ever waited for a lock")

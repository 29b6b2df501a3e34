"""The fork server the planning processes are forked from (outbox/spread.py).

One per process, started at most once, and it serves every later plan of the
process. Starting it costs about half a second: the server imports the planner.
`tayori plan` and `tayori tick` start it first thing (`start_ahead`), so that
the import runs beside the command's own rather than after it, when the plan
begins and waits for it. This module imports nothing heavy (no SQLAlchemy): asking
for it costs multiprocessing's own import and the reading of the setting, some
30–50 ms.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import threading
from collections.abc import Mapping

from scheduler.core.config import ConfigError
from scheduler.planning_processes import planning_processes

_lock = threading.Lock()
_started = False

# What a planning process imports to open a PostgreSQL database, imported by the
# server once rather than by each process it forks: some 40 ms of CPU before each
# one's first batch. (SQLite's driver takes a few milliseconds.)
_POSTGRESQL_DRIVER = ("psycopg", "sqlalchemy.dialects.postgresql.psycopg")


def start(database_url: str | None = None) -> bool:
    """Start the server without waiting for it, the first time in this process;
    whether it was started now. Given a PostgreSQL database's URL, the server imports
    its driver too."""
    global _started
    with _lock:
        if _started:
            return False
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["scheduler.outbox.planner", *_driver(database_url)])
        # What `Process.start` calls first; undocumented, but in every Python since
        # 3.4. Called here, it returns once the server is launched, not ready.
        multiprocessing.forkserver.ensure_running()
        _started = True
        return True


def _driver(database_url: str | None) -> tuple[str, ...]:
    # The scheme as written: this module reads no URL with SQLAlchemy (see above).
    scheme = (database_url or "").partition(":")[0]
    return _POSTGRESQL_DRIVER if scheme.startswith("postgres") else ()


def start_ahead(env: Mapping[str, str]) -> None:
    """Start the server now if a plan may use it: unless `TAYORI_PLANNING_PROCESSES`
    in `env` says one process (or this machine has one core, for `auto`). It imports
    the driver of `DATABASE_URL` in `env`.

    Read before the settings are loaded: a value they will refuse starts nothing
    (they say what is wrong), and a `.env` file is not read yet (a URL set there
    only leaves each planning process to import its driver itself). A clinic too
    small to spread its plans has then started a server for nothing: half a second
    of another core's time, once per command."""
    try:
        several = planning_processes(env) > 1
    except ConfigError:
        return
    if several:
        start(env.get("DATABASE_URL"))

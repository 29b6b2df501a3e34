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


def start() -> bool:
    """Start the server without waiting for it, the first time in this process;
    whether it was started now."""
    global _started
    with _lock:
        if _started:
            return False
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["scheduler.outbox.planner"])
        # What `Process.start` calls first; undocumented, but in every Python since
        # 3.4. Called here, it returns once the server is launched, not ready.
        multiprocessing.forkserver.ensure_running()
        _started = True
        return True


def start_ahead(env: Mapping[str, str]) -> None:
    """Start the server now if a plan may use it: unless `TAYORI_PLANNING_PROCESSES`
    in `env` says one process (or this machine has one core, for `auto`).

    Read before the settings are loaded: a value they will refuse starts nothing
    (they say what is wrong), and a `.env` file is not read yet. A clinic too small
    to spread its plans has then started a server for nothing: half a second of
    another core's time, once per command."""
    try:
        several = planning_processes(env) > 1
    except ConfigError:
        return
    if several:
        start()

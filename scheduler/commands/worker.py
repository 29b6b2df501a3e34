"""The worker: `tayori tick` (one cycle), `tayori replan` and `tayori run`. Both
`tick` and `run` serve every clinic of the installation unless `--clinic` names one.

On SQLite, `run` and `tick` each take the database's worker lock
(scheduler/store/worker_lock.py) and refuse to start while another holds it: a
cycle by hand while a worker runs would only queue for SQLite's write lock.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

from scheduler.clock import Clock, ShiftedClock, SystemClock
from scheduler.commands.common import clinics_served, command_now, fixed_clock, opened
from scheduler.runtime import Runtime, open_runtimes
from scheduler.settings import Settings
from scheduler.store.db import transaction
from scheduler.store.replan import mark_everyone
from scheduler.store.worker_lock import sole_worker
from scheduler.worker import Worker, tick


def tick_once(args: argparse.Namespace, settings: Settings) -> int:
    now = command_now(args, settings)
    with clinics_of(args, settings) as runtimes:
        for runtime in runtimes:
            result = tick(runtime, now)
            planned, sent = result.planned, result.dispatched
            outcomes = ", ".join(f"{n} {k}" for k, n in sorted(sent.counts.items()))
            events = f"; LINE events processed: {result.events}" if result.events else ""
            clinic = f"{runtime.settings.clinic_slug}: " if len(runtimes) > 1 else ""
            print(
                f"{clinic}planned {planned.created} new, {planned.revived} revived, "
                f"{planned.withdrawn} withdrawn; dispatched: {outcomes or 'nothing due'}{events}"
            )
    return 0


def replan(args: argparse.Namespace, settings: Settings) -> int:
    with opened(settings) as runtime, transaction(runtime.sessions) as session:
        marked = mark_everyone(session)
    print(f"{marked} patient(s) will be planned again at the next worker cycle")
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    fixed = fixed_clock(args, settings)
    clock: Clock = ShiftedClock(fixed.now()) if fixed else SystemClock()
    with clinics_of(args, settings) as runtimes:
        Worker(runtimes, clock).run()
    return 0


@contextmanager
def clinics_of(args: argparse.Namespace, settings: Settings) -> Iterator[list[Runtime]]:
    """The runtimes of the clinics to serve (one engine for all), holding the worker
    lock on SQLite."""
    # The clinics first: reading them checks the database is there and migrated.
    runtimes = open_runtimes(clinics_served(settings, args.clinic))
    try:
        with sole_worker(settings.database_url):
            yield runtimes
    finally:
        runtimes[0].close()

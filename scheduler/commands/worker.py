"""The worker: `tayori tick` (one cycle), `tayori replan` and `tayori run`.

On SQLite, `run` and `tick` each take the database's worker lock
(scheduler/store/worker_lock.py) and refuse to start while another holds it: a
cycle by hand while a worker runs would only queue for SQLite's write lock.
"""

from __future__ import annotations

import argparse

from scheduler.clock import Clock, ShiftedClock, SystemClock
from scheduler.commands.common import command_now, fixed_clock, opened
from scheduler.settings import Settings
from scheduler.store.db import transaction
from scheduler.store.replan import mark_everyone
from scheduler.store.worker_lock import sole_worker
from scheduler.worker import Worker, tick


def tick_once(args: argparse.Namespace, settings: Settings) -> int:
    now = command_now(args, settings)
    with opened(settings) as runtime, sole_worker(settings.database_url):
        result = tick(runtime, now)
    planned, sent = result.planned, result.dispatched
    outcomes = ", ".join(f"{n} {k}" for k, n in sorted(sent.counts.items())) or "nothing due"
    events = f"; LINE events processed: {result.events}" if result.events else ""
    print(
        f"planned {planned.created} new, {planned.revived} revived, "
        f"{planned.withdrawn} withdrawn; dispatched: {outcomes}{events}"
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
    # The runtime first: it makes the database's folder, where the lock goes.
    with opened(settings) as runtime, sole_worker(settings.database_url):
        Worker(runtime, clock).run()
    return 0

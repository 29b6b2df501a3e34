"""Each worker's last completed cycle: when it ended (by the worker's clock), how long
it took, and which worker it was (host and process id). One row a worker, replaced
at every cycle; the health check and the metrics read them.

A restarted worker has a new process id, so a new row. The rows of workers that
have not completed a cycle for `FORGOTTEN_AFTER` are deleted by the next worker that
records one: the table holds the workers of the last hour, and when every worker has
stopped, the last ones, which the health check needs to say since when.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from scheduler.store.db import upsert_insert
from scheduler.store.models import WorkerHeartbeat

# No worker has completed a cycle for this long (a cycle starts every minute): the
# workers are stopped, stuck, or cannot reach the database.
STALE_AFTER = timedelta(minutes=5)
FORGOTTEN_AFTER = timedelta(hours=1)
_NAME_LENGTH = 255  # worker_heartbeats.worker


@dataclass(frozen=True)
class Heartbeat:
    worker: str
    finished_at: datetime
    duration_seconds: float


def this_worker() -> str:
    """This process, as the heartbeats name it: "host:pid"."""
    pid = str(os.getpid())
    return f"{socket.gethostname()[: _NAME_LENGTH - len(pid) - 1]}:{pid}"


def record_cycle(
    session: Session, worker: str, finished_at: datetime, duration_seconds: float
) -> None:
    """`worker` has completed a cycle; forget the workers gone for an hour."""
    values = {"finished_at": finished_at, "duration_seconds": duration_seconds}
    session.execute(
        upsert_insert(session, WorkerHeartbeat)
        .values(worker=worker, **values)
        .on_conflict_do_update(index_elements=["worker"], set_=values)
    )
    session.execute(
        delete(WorkerHeartbeat).where(WorkerHeartbeat.finished_at < finished_at - FORGOTTEN_AFTER)
    )


def heartbeats(session: Session) -> list[Heartbeat]:
    return [
        Heartbeat(row.worker, row.finished_at, row.duration_seconds)
        for row in session.scalars(select(WorkerHeartbeat).order_by(WorkerHeartbeat.worker))
    ]


def last_cycle(session: Session) -> datetime | None:
    """When a worker last completed a cycle; None: none ever has."""
    return session.scalar(select(func.max(WorkerHeartbeat.finished_at)))


def worker_problem(last: datetime | None, now: datetime) -> str | None:
    """What is wrong with the workers, or None when one completed a cycle lately."""
    if last is None:
        return "no cycle yet"
    if now - last > STALE_AFTER:
        return f"no cycle since {last.isoformat(timespec='seconds')}"
    return None

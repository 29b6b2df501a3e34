"""Each worker records its completed cycles in the database, one row a worker, so
that any process can tell whether the workers are getting through their cycles."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta

from scheduler.clock import FixedClock
from scheduler.runtime import Runtime
from scheduler.store.db import reading, transaction
from scheduler.store.heartbeats import Heartbeat, heartbeats, last_cycle, record_cycle
from scheduler.worker import Worker

NOW = datetime(2026, 11, 25, 1, 30, tzinfo=UTC)


def _recorded(runtime: Runtime) -> list[Heartbeat]:
    with reading(runtime.sessions) as session:
        return heartbeats(session)


def test_a_completed_cycle_records_when_it_ended_by_the_workers_clock(runtime: Runtime) -> None:
    Worker([runtime], FixedClock(NOW)).run_once()

    [beat] = _recorded(runtime)
    assert beat.finished_at == NOW
    assert beat.duration_seconds >= 0


def test_a_worker_is_named_by_its_host_and_process_id(runtime: Runtime) -> None:
    Worker([runtime], FixedClock(NOW)).run_once()

    assert [beat.worker for beat in _recorded(runtime)] == [f"{socket.gethostname()}:{os.getpid()}"]


def test_a_workers_next_cycle_replaces_its_heartbeat(runtime: Runtime) -> None:
    clock = FixedClock(NOW)
    worker = Worker([runtime], clock)
    worker.run_once()
    clock.set(NOW + timedelta(minutes=1))
    worker.run_once()

    assert [beat.finished_at for beat in _recorded(runtime)] == [NOW + timedelta(minutes=1)]


def test_each_worker_has_its_own_heartbeat(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        record_cycle(session, "host-a:1", NOW, 1.5)
        record_cycle(session, "host-b:1", NOW + timedelta(seconds=10), 2.5)

    assert _recorded(runtime) == [
        Heartbeat("host-a:1", NOW, 1.5),
        Heartbeat("host-b:1", NOW + timedelta(seconds=10), 2.5),
    ]


def test_workers_gone_for_an_hour_are_forgotten_when_another_completes_a_cycle(
    runtime: Runtime,
) -> None:
    with transaction(runtime.sessions) as session:
        record_cycle(session, "restarted:1", NOW - timedelta(minutes=61), 1.0)
        record_cycle(session, "lately:2", NOW - timedelta(minutes=59), 1.0)
        record_cycle(session, "running:3", NOW, 1.0)

    assert [beat.worker for beat in _recorded(runtime)] == ["lately:2", "running:3"]


def test_the_last_cycle_is_the_latest_of_any_worker(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        assert last_cycle(session) is None
        record_cycle(session, "host-a:1", NOW, 1.0)
        record_cycle(session, "host-b:1", NOW - timedelta(minutes=3), 1.0)

        assert last_cycle(session) == NOW

"""Several `tayori run` workers on one PostgreSQL database, as a host runs them: they
share the outbox, some answers come slower than a lease, one worker is killed, and
every message still goes out exactly once.

Real processes, a real database, real LINE and SMTP servers on loopback: nothing of
Tayori's is replaced. Leases last two seconds and the workers run a cycle every two
seconds, so what takes minutes in production is watched within seconds here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler.core.domain import DeliveryState, Reason
from scheduler.outbox.planner import plan
from scheduler.runtime import Runtime
from scheduler.store.db import transaction
from scheduler.store.models import Delivery
from tests.integration.channel_env import install_channel_env, open_channel_runtime
from tests.integration.dispatching import NUDGE_TIME, PLANNED_AT
from tests.integration.workers import (
    by_email,
    by_line,
    config_with,
    nudged_clinic,
    start_workers,
    wait_until,
)
from tests.servers.line_api import LineApiServer
from tests.servers.smtp import SmtpServer

DELIVERIES = 2000
WORKERS = 3
LEASE_SECONDS = 2
SLOW_SECONDS = 3  # longer than a lease: only renewing it keeps a slow send's row
SLOW_ANSWERS = 40

pytestmark = pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
def servers() -> Iterator[tuple[LineApiServer, SmtpServer]]:
    with LineApiServer(monthly_limit=None) as line_api, SmtpServer() as smtp_server:
        yield line_api, smtp_server


def _planned(runtime: Runtime) -> None:
    """The outbox planned beforehand: the workers' own planning then finds it done."""
    with transaction(runtime.sessions) as session:
        plan(session, PLANNED_AT, runtime.settings.rules)


def _env(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    servers: tuple[LineApiServer, SmtpServer],
) -> dict[str, str]:
    env = install_channel_env(database_url, tmp_path, monkeypatch, *servers)
    env["TAYORI_CONFIG"] = str(
        config_with(
            tmp_path / "config",
            lease_seconds=LEASE_SECONDS,
            cycle_seconds=2,
            concurrency=16,
            monthly_quota=100_000,
        )
    )
    return env


def _nudges(runtime: Runtime) -> Counter[DeliveryState]:
    with runtime.sessions() as session:
        return Counter(
            session.scalars(select(Delivery.state).where(Delivery.reason == Reason.CADENCE_NUDGE))
        )


def _sent_nudges(runtime: Runtime) -> set[str]:
    with runtime.sessions() as session:
        return set(
            session.scalars(
                select(Delivery.id).where(
                    Delivery.reason == Reason.CADENCE_NUDGE,
                    Delivery.state == DeliveryState.SENT,
                )
            )
        )


def test_three_workers_one_killed_push_every_line_message_exactly_once(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    servers: tuple[LineApiServer, SmtpServer],
) -> None:
    line_api, _ = servers
    env = _env(database_url, tmp_path, monkeypatch, servers)
    runtime = open_channel_runtime(env)
    nudged_clinic(runtime, DELIVERIES, by_line)
    _planned(runtime)
    line_api.hang_next(SLOW_SECONDS, times=SLOW_ANSWERS)

    workers = start_workers(env, NUDGE_TIME.isoformat(), tmp_path / "logs", WORKERS)
    wait_until(lambda: len(line_api.accepted) >= DELIVERIES // 3, workers, "a third sent")
    workers[0].kill()
    survivors = workers[1:]
    wait_until(
        lambda: _nudges(runtime) == {DeliveryState.SENT: DELIVERIES},
        survivors,
        "every nudge sent",
    )
    for worker in survivors:
        worker.stop()

    sent = _sent_nudges(runtime)
    runtime.close()
    nudges_accepted = {key for key in line_api.accepted if key in sent}
    # Each delivery's retry key was accepted once: a repeat (a takeover, the killed
    # worker's pushes) was answered 409 and counted by LINE no more.
    assert nudges_accepted == sent and len(sent) == DELIVERIES
    assert line_api.usage == len(line_api.accepted)
    assert line_api.schema_errors == []


def test_three_workers_with_answers_slower_than_a_lease_mail_every_message_once(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    servers: tuple[LineApiServer, SmtpServer],
) -> None:
    """No worker is killed here: a mail cut off between the server's 250 and its
    record is sent again (SMTP has no retry key; README.md says so). What this
    shows is that a slow send keeps its claim, so no other worker sends it too."""
    _, smtp_server = servers
    env = _env(database_url, tmp_path, monkeypatch, servers)
    runtime = open_channel_runtime(env)
    nudged_clinic(runtime, DELIVERIES, by_email)
    _planned(runtime)
    smtp_server.hang_next(SLOW_SECONDS, times=SLOW_ANSWERS)

    workers = start_workers(env, NUDGE_TIME.isoformat(), tmp_path / "logs", WORKERS)
    wait_until(
        lambda: _nudges(runtime) == {DeliveryState.SENT: DELIVERIES},
        workers,
        "every nudge sent",
    )
    for worker in workers:
        worker.stop()

    sent = _sent_nudges(runtime)
    runtime.close()
    message_ids = Counter(r.message["Message-ID"] for r in smtp_server.received)
    assert {f"<{delivery_id}@clinic.example>" for delivery_id in sent} <= set(message_ids)
    assert [mid for mid, times in message_ids.items() if times > 1] == []

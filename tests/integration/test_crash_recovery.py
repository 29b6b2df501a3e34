"""A worker killed with SIGKILL in the middle of sending loses nothing and, on LINE,
duplicates nothing: the restarted worker takes the abandoned deliveries again after
their lease, under the same delivery ids."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler.core.domain import ChannelName, DeliveryState
from scheduler.store.models import Delivery
from tests.integration.channel_env import install_channel_env, open_channel_runtime
from tests.integration.dispatching import NUDGE_TIME
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

PATIENTS = 300  # half on LINE, half by email, every one nudged at NUDGE_TIME
LEASE_SECONDS = 2


def _half_by_line(n: int) -> tuple[str | None, str | None, ChannelName]:
    return by_line(n) if n % 2 else by_email(n)


def test_worker_killed_mid_sending_ends_with_every_message_sent_once(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A little latency keeps a few hundred messages in flight long enough to be cut.
    with (
        LineApiServer(monthly_limit=None, latency_seconds=0.01) as line_api,
        SmtpServer(latency_seconds=0.01) as smtp_server,
    ):
        env = install_channel_env(database_url, tmp_path, monkeypatch, line_api, smtp_server)
        # A short lease: the killed worker's claims come back within seconds.
        env["TAYORI_CONFIG"] = str(
            config_with(tmp_path / "config", lease_seconds=LEASE_SECONDS, cycle_seconds=1)
        )
        runtime = open_channel_runtime(env)
        nudged_clinic(runtime, PATIENTS, _half_by_line)

        def arrived() -> int:
            return len(line_api.accepted) + len(smtp_server.received)

        logs = tmp_path / "logs"
        [first] = start_workers(env, NUDGE_TIME.isoformat(), logs)
        wait_until(lambda: arrived() >= PATIENTS // 4, [first], "the first messages")
        first.kill()
        assert arrived() < PATIENTS, "the worker finished before it could be killed"

        # Restarted at once: it takes the deliveries left `sending` once their lease
        # ends on the database's clock.
        [second] = start_workers(env, NUDGE_TIME.isoformat(), logs)

        def all_finished() -> bool:
            with runtime.sessions() as session:
                states = Counter(session.scalars(select(Delivery.state)))
            # Every nudge and the clinic's digest; the follow-ups wait for their day.
            return states[DeliveryState.SENT] == PATIENTS + 1 and not states[DeliveryState.SENDING]

        wait_until(all_finished, [second], "sending everything")
        second.stop()

        with runtime.sessions() as session:
            sent = session.scalars(
                select(Delivery).where(Delivery.state == DeliveryState.SENT)
            ).all()
        runtime.close()

    by_line = {d.id for d in sent if d.channel is ChannelName.LINE}
    by_email = {d.id for d in sent if d.channel is ChannelName.EMAIL}
    # LINE: every push accepted exactly once (a resent retry key answers 409).
    assert set(line_api.accepted) == by_line
    assert line_api.usage == len(by_line)
    # Email: every message arrived; a mail cut off between the server's "250 OK"
    # and our commit is sent again under the same Message-ID, never a new one.
    message_ids = Counter(r.message["Message-ID"] for r in smtp_server.received)
    domain = "clinic.example"
    assert set(message_ids) == {f"<{delivery_id}@{domain}>" for delivery_id in by_email}
    assert sum(message_ids.values()) - len(message_ids) <= runtime.settings.dispatch.concurrency

"""A worker killed with SIGKILL in the middle of sending loses nothing and, on LINE,
duplicates nothing: the restarted worker takes the abandoned deliveries again after
their lease, under the same delivery ids."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler.core.domain import AppointmentStatus, ChannelName, DeliveryState, Phase
from scheduler.runtime import Runtime
from scheduler.store.db import transaction
from scheduler.store.importer import AppointmentRow, PatientRow, save_appointments, save_patients
from scheduler.store.models import Delivery
from tests.conftest import ROOT
from tests.integration.channel_env import install_channel_env, open_channel_runtime
from tests.integration.dispatching import NUDGE_TIME, PLANNED_AT
from tests.servers.line_api import LineApiServer
from tests.servers.smtp import SmtpServer

PATIENTS = 300  # half on LINE, half by email, every one nudged at NUDGE_TIME


def _clinic(runtime: Runtime) -> None:
    def contact(n: int) -> tuple[str | None, str | None, ChannelName]:
        if n % 2:
            return None, f"U{n:032x}", ChannelName.LINE
        return f"p{n}@example.jp", None, ChannelName.EMAIL

    patients = [
        PatientRow(n, f"P{n:03d}", f"患者 {n}", Phase.ACUTE, *contact(n), True, False)
        for n in range(PATIENTS)
    ]
    visits = [
        AppointmentRow(n, f"P{n:03d}", PLANNED_AT - timedelta(days=1), AppointmentStatus.VISITED)
        for n in range(PATIENTS)
    ]
    with transaction(runtime.sessions) as session:
        save_patients(session, patients, PLANNED_AT)
        save_appointments(session, Path("visits.csv"), visits, PLANNED_AT)


def _start_worker(env: dict[str, str], now: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "scheduler", "run", "--now", now],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_until(done: Callable[[], bool], process: subprocess.Popen[str], what: str) -> None:
    """Poll (no fixed sleep) until `done`; fail with the worker's log if it never is."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if done():
            return
        time.sleep(0.02)
    process.kill()
    _, log = process.communicate()
    raise AssertionError(f"{what} did not happen; the worker's log:\n{log}")


def test_worker_killed_mid_sending_ends_with_every_message_sent_once(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A little latency keeps a few hundred messages in flight long enough to be cut.
    with (
        LineApiServer(monthly_limit=None, latency_seconds=0.01) as line_api,
        SmtpServer(latency_seconds=0.01) as smtp_server,
    ):
        env = install_channel_env(database_url, tmp_path, monkeypatch, line_api, smtp_server)
        runtime = open_channel_runtime(env)
        _clinic(runtime)

        def arrived() -> int:
            return len(line_api.accepted) + len(smtp_server.received)

        first = _start_worker(env, NUDGE_TIME.isoformat())
        _wait_until(lambda: arrived() >= PATIENTS // 4, first, "the first messages")
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert arrived() < PATIENTS, "the worker finished before it could be killed"

        # Restarted after the lease of the deliveries it left `sending`.
        lease = timedelta(seconds=runtime.settings.dispatch.lease_seconds)
        second = _start_worker(env, (NUDGE_TIME + lease + timedelta(minutes=1)).isoformat())

        def all_finished() -> bool:
            with runtime.sessions() as session:
                states = Counter(session.scalars(select(Delivery.state)))
            # Every nudge and the clinic's digest; the follow-ups wait for their day.
            return states[DeliveryState.SENT] == PATIENTS + 1 and not states[DeliveryState.SENDING]

        _wait_until(all_finished, second, "sending everything")
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=60)

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

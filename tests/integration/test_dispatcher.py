"""The dispatcher against real databases: claims, sends, records; retries what
failed for a passing reason; never sends one delivery twice."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler.channels import DeliveryError, Failure, OutgoingMessage, Receipt
from scheduler.core.domain import ChannelName, DeliveryState, Reason
from scheduler.messages.templates import Renderer
from scheduler.outbox.planner import plan
from scheduler.runtime import Runtime
from scheduler.store.db import transaction
from scheduler.store.models import Delivery, Patient
from scheduler.worker import tick
from tests.integration.clinic import add_appointment, add_patient
from tests.integration.dispatching import (
    JST,
    NUDGE_TIME,
    PLANNED_AT,
    RecordingTransport,
    deliveries,
    dispatcher_with,
    nudged_patients,
    the_nudge,
)


def test_line_message_is_written_to_the_outbox_named_after_its_delivery(
    runtime: Runtime,
) -> None:
    nudged_patients(runtime)
    tick(runtime, NUDGE_TIME)
    nudge = the_nudge(runtime)
    document = json.loads((runtime.settings.outbox_dir / f"{nudge.id}.json").read_text("utf-8"))
    assert document["headers"]["X-Line-Retry-Key"] == nudge.id
    assert document["body"]["to"].startswith("U")
    assert "山田 花子様" in document["body"]["messages"][0]["text"]
    assert nudge.state is DeliveryState.SENT


def test_email_message_is_written_as_eml_with_a_message_id_from_its_delivery(
    runtime: Runtime,
) -> None:
    nudged_patients(runtime, line_user_id=None, email="hanako@example.jp")
    tick(runtime, NUDGE_TIME)
    nudge = the_nudge(runtime)
    mail = message_from_bytes((runtime.settings.outbox_dir / f"{nudge.id}.eml").read_bytes())
    assert mail["To"] == "hanako@example.jp"
    assert mail["Message-ID"].startswith(f"<{nudge.id}@")
    assert mail["Subject"]


def test_a_second_tick_at_the_same_moment_sends_nothing_again(runtime: Runtime) -> None:
    nudged_patients(runtime, count=3)
    first = tick(runtime, NUDGE_TIME)
    second = tick(runtime, NUDGE_TIME)
    assert first.dispatched.counts == {"sent": 3 + 1}  # three nudges, the clinic's digest
    assert second.dispatched.total == 0
    assert len(list(runtime.settings.outbox_dir.iterdir())) == 3 + 1


@pytest.mark.parametrize(
    ("moment", "sent"),
    [
        pytest.param(datetime(2026, 11, 25, 8, 59, tzinfo=JST), 0, id="before-opening"),
        pytest.param(datetime(2026, 11, 25, 20, 0, tzinfo=JST), 0, id="at-closing"),
        pytest.param(datetime(2026, 11, 26, 9, 0, tzinfo=JST), 1, id="next-opening"),
    ],
)
def test_overdue_messages_wait_for_the_send_window(
    runtime: Runtime, moment: datetime, sent: int
) -> None:
    nudged_patients(runtime)
    transport = RecordingTransport()
    dispatcher_with(runtime, transport).dispatch_due(moment)
    assert len(transport.received) == sent


def test_transient_failure_is_retried_later_under_the_same_delivery_id(
    runtime: Runtime,
) -> None:
    nudged_patients(runtime)
    transport = RecordingTransport([DeliveryError("connection reset", Failure.TRANSIENT)])
    dispatcher = dispatcher_with(runtime, transport)

    dispatcher.dispatch_due(NUDGE_TIME)
    waiting = the_nudge(runtime)
    dispatcher.dispatch_due(waiting.send_after)

    assert waiting.state is DeliveryState.PLANNED
    assert waiting.last_error == "connection reset"
    assert waiting.send_after > NUDGE_TIME
    assert [m.delivery_id for m in transport.received] == [waiting.id]
    assert the_nudge(runtime).state is DeliveryState.SENT


def test_permanent_failure_fails_the_delivery_with_its_reason(runtime: Runtime) -> None:
    nudged_patients(runtime)
    transport = RecordingTransport([DeliveryError("message rejected", Failure.PERMANENT)])
    dispatcher_with(runtime, transport).dispatch_due(NUDGE_TIME)
    nudge = the_nudge(runtime)
    assert nudge.state is DeliveryState.FAILED
    assert nudge.last_error == "message rejected"


def test_delivery_fails_when_its_attempts_are_used_up(runtime: Runtime) -> None:
    nudged_patients(runtime)
    attempts = runtime.settings.dispatch.max_attempts
    transport = RecordingTransport(
        [DeliveryError("timeout", Failure.UNCERTAIN) for _ in range(attempts)]
    )
    dispatcher = dispatcher_with(runtime, transport)
    moment = NUDGE_TIME
    for _ in range(attempts):
        dispatcher.dispatch_due(moment)
        moment = max(moment, the_nudge(runtime).send_after)
    nudge = the_nudge(runtime)
    assert (nudge.state, nudge.attempts) == (DeliveryState.FAILED, attempts)


def _leave_sending(runtime: Runtime, lease_until: datetime) -> None:
    """Every nudge claimed by a worker that stopped, its lease ending at `lease_until`."""
    with transaction(runtime.sessions) as session:
        for delivery in session.scalars(
            select(Delivery).where(Delivery.reason == Reason.CADENCE_NUDGE)
        ):
            delivery.state = DeliveryState.SENDING
            delivery.claim_token = "a-worker-that-stopped"
            delivery.lease_until = lease_until
            delivery.attempts = 1


def test_delivery_abandoned_while_sending_is_resent_once_its_lease_ends(
    runtime: Runtime,
) -> None:
    nudged_patients(runtime)
    nudge = the_nudge(runtime)
    lease_ends = datetime(2026, 11, 25, 1, 5, tzinfo=UTC)
    _leave_sending(runtime, lease_ends)
    transport = RecordingTransport()

    before = dispatcher_with(runtime, transport, database_time=lease_ends - timedelta(seconds=1))
    before.dispatch_due(NUDGE_TIME)
    assert transport.received == []
    after = dispatcher_with(runtime, transport, database_time=lease_ends + timedelta(seconds=1))
    after.dispatch_due(NUDGE_TIME)
    assert [m.delivery_id for m in transport.received] == [nudge.id]
    assert the_nudge(runtime).state is DeliveryState.SENT


def test_a_lease_is_measured_on_the_database_clock_not_the_worker_clock(
    runtime: Runtime,
) -> None:
    nudged_patients(runtime)
    lease_ends = datetime(2026, 11, 25, 1, 5, tzinfo=UTC)
    _leave_sending(runtime, lease_ends)
    transport = RecordingTransport()
    # A worker whose own clock (or `--now`) is far ahead takes no live claim.
    dispatcher = dispatcher_with(
        runtime, transport, database_time=lease_ends - timedelta(minutes=1)
    )
    dispatcher.dispatch_due(NUDGE_TIME + timedelta(days=1))
    assert transport.received == []


def _states(runtime: Runtime) -> dict[DeliveryState, int]:
    counts: dict[DeliveryState, int] = {}
    for nudge in deliveries(runtime.sessions, Reason.CADENCE_NUDGE):
        counts[nudge.state] = counts.get(nudge.state, 0) + 1
    return counts


def test_a_worker_asked_to_stop_puts_back_what_it_claimed_but_did_not_send(
    runtime: Runtime,
) -> None:
    nudged_patients(runtime, count=20)
    transport = RecordingTransport()
    dispatcher = dispatcher_with(runtime, transport)

    dispatcher.dispatch_due(NUDGE_TIME, should_stop=lambda: bool(transport.received))

    sent = len(transport.received)
    assert 1 <= sent <= runtime.settings.dispatch.concurrency
    assert _states(runtime) == {DeliveryState.SENT: sent, DeliveryState.PLANNED: 20 - sent}
    put_back = [d for d in deliveries(runtime.sessions, Reason.CADENCE_NUDGE) if not d.sent_at]
    assert {d.attempts for d in put_back} == {0}
    dispatcher.dispatch_due(NUDGE_TIME)
    assert len(transport.received) == 20


class _FaultyTransport(RecordingTransport):
    """A provider client with a bug: its first send raises what no channel expects."""

    def send(self, message: OutgoingMessage) -> Receipt:
        with self.lock:
            first = self.tries == 0
        if first:
            self.tries += 1
            raise ValueError("a bug in the channel")
        return super().send(message)


def test_an_unexpected_fault_in_a_channel_costs_one_attempt_of_that_message_only(
    runtime: Runtime,
) -> None:
    nudged_patients(runtime, count=20)
    transport = _FaultyTransport()

    dispatcher_with(runtime, transport).dispatch_due(NUDGE_TIME)

    assert _states(runtime) == {DeliveryState.SENT: 19, DeliveryState.PLANNED: 1}
    [faulted] = [
        d
        for d in deliveries(runtime.sessions, Reason.CADENCE_NUDGE)
        if d.state is DeliveryState.PLANNED
    ]
    # It may have left before the fault: retried later under the same id, its
    # attempt counted (so a fault that always happens ends with `failed`).
    assert (faulted.attempts, faulted.send_after > NUDGE_TIME) == (1, True)
    assert "unexpected error in the line channel (ValueError)" in (faulted.last_error or "")
    assert "a bug in the channel" not in (faulted.last_error or "")


def test_contact_lost_after_planning_skips_the_delivery(runtime: Runtime) -> None:
    nudged_patients(runtime)
    with transaction(runtime.sessions) as session:
        patient = session.scalars(select(Patient)).one()
        patient.line_unusable_reason = "blocked"
    transport = RecordingTransport()
    dispatcher_with(runtime, transport).dispatch_due(NUDGE_TIME)
    nudge = the_nudge(runtime)
    assert nudge.state is DeliveryState.SKIPPED
    assert transport.received == []


def test_delivery_falls_back_to_email_when_line_became_unusable(runtime: Runtime) -> None:
    nudged_patients(runtime, email="hanako@example.jp")
    with transaction(runtime.sessions) as session:
        session.scalars(select(Patient)).one().line_unusable_reason = "blocked"
    transport = RecordingTransport()
    dispatcher_with(runtime, transport).dispatch_due(NUDGE_TIME)
    assert [m.channel for m in transport.received] == [ChannelName.EMAIL]
    assert the_nudge(runtime).template == "cadence_nudge/email.j2"


def test_broken_template_keeps_the_delivery_for_a_retry(runtime: Runtime, tmp_path: Path) -> None:
    broken = tmp_path / "broken-messages" / "cadence_nudge"
    broken.mkdir(parents=True)
    (broken / "line.j2").write_text("{{ patient_name }\n", encoding="utf-8")
    nudged_patients(runtime)
    transport = RecordingTransport()
    dispatcher = dispatcher_with(runtime, transport)
    dispatcher.renderer = Renderer(tmp_path / "broken-messages")

    dispatcher.dispatch_due(NUDGE_TIME)

    nudge = the_nudge(runtime)
    assert transport.received == []
    assert nudge.state is DeliveryState.PLANNED
    assert "cadence_nudge/line.j2:1" in (nudge.last_error or "")


def test_appointment_reminder_names_the_appointment_time(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        add_patient(session, PLANNED_AT)
        add_appointment(session, PLANNED_AT, datetime(2026, 11, 24, 15, 30, tzinfo=JST))
    transport = RecordingTransport()
    dispatcher = dispatcher_with(runtime, transport)
    evening = datetime(2026, 11, 23, 18, 0, tzinfo=JST)
    with transaction(runtime.sessions) as session:
        plan(session, PLANNED_AT, runtime.settings.rules)
    dispatcher.dispatch_due(evening)
    [reminder] = transport.received
    assert reminder.reason is Reason.APPOINTMENT_REMINDER
    assert "11月24日（火）15:30" in reminder.text


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_concurrent_workers_on_postgresql_send_each_delivery_once(runtime: Runtime) -> None:
    """On PostgreSQL claims skip the rows another worker holds (SQLite serialises
    its writers, so only PostgreSQL tests this; real processes: test_workers.py)."""
    nudged_patients(runtime, count=300, line_user_id=None, email="p@example.jp")
    transport = RecordingTransport()
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = [
            pool.submit(dispatcher_with(runtime, transport).dispatch_due, NUDGE_TIME)
            for _ in range(4)
        ]
        summaries = [run.result() for run in runs]  # raises what a worker raised
    ids = [m.delivery_id for m in transport.received]
    assert len(ids) == len(set(ids)) == 300
    assert sum(summary.counts.get("sent", 0) for summary in summaries) == 300


def test_log_lines_name_no_patient_and_no_contact(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    nudged_patients(runtime, email="hanako@example.jp")
    with caplog.at_level(logging.INFO):
        tick(runtime, NUDGE_TIME)
    text = caplog.text
    assert "cadence_nudge" in text
    for secret in ("山田", "花子", "hanako@example.jp", "U0123456789abcdef"):
        assert secret not in text

"""No message goes out twice and none is lost, when workers compete for the outbox,
when a claim is taken over, when a row cannot be read or keeps failing, and when the
database cannot take an outcome at once."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import select, update

from scheduler.channels import DeliveryError, Failure, OutgoingMessage, Receipt, Transport
from scheduler.channels.email import SmtpTransport
from scheduler.core.config import Line
from scheduler.core.domain import ChannelName, DeliveryState, HoldCause, Reason
from scheduler.outbox.budget import line_quota
from scheduler.outbox.manual import requeue
from scheduler.outbox.report import status
from scheduler.outbox.transitions import GIVEN_UP, withdraw
from scheduler.runtime import Runtime, open_runtime
from scheduler.settings import Smtp, load_settings
from scheduler.store.channel_state import active_holds, hold_channel
from scheduler.store.db import transaction
from scheduler.store.models import Delivery, LineQuotaMonth, Patient
from scheduler.store.patients import mark_contact_unusable
from tests.conftest import install_clinic_env
from tests.integration.dispatching import (
    JST,
    NUDGE_TIME,
    RecordingTransport,
    deliveries,
    dispatcher_with,
    nudged_patients,
    the_nudge,
)
from tests.servers.smtp import SmtpServer

TIMEOUT = DeliveryError("read timed out", Failure.UNCERTAIN)
LATER = NUDGE_TIME + timedelta(hours=2)  # a retry is due by then


def _states(runtime: Runtime) -> Counter[DeliveryState]:
    return Counter(d.state for d in deliveries(runtime.sessions, Reason.CADENCE_NUDGE))


class _Slow(RecordingTransport):
    """A provider that holds each send until the test lets it answer, then fails it
    as a timeout: the worker cannot know whether it went."""

    def __init__(self) -> None:
        super().__init__()
        self.sending = threading.Event()
        self.answer = threading.Event()

    def send(self, message: OutgoingMessage) -> Receipt:
        self.sending.set()
        self.answer.wait(30)
        raise TIMEOUT


def test_a_late_failure_after_a_takeover_does_not_undo_the_new_claimers_send(
    runtime: Runtime,
) -> None:
    nudged_patients(runtime)
    slow = _Slow()
    first = dispatcher_with(runtime, slow)
    worker = threading.Thread(target=first.dispatch_due, args=(NUDGE_TIME,))
    worker.start()
    assert slow.sending.wait(30)
    # The first worker's lease ends (it is stuck); another worker takes the row over.
    lease_over = datetime.now(UTC) + timedelta(hours=1)
    second = RecordingTransport()
    dispatcher_with(runtime, second, database_time=lease_over).dispatch_due(NUDGE_TIME)
    slow.answer.set()  # the first worker's timeout arrives late
    worker.join(30)

    nudge = the_nudge(runtime)
    assert [m.delivery_id for m in second.received] == [nudge.id]
    assert (nudge.state, nudge.last_error) == (DeliveryState.SENT, None)


def test_a_worker_whose_claim_was_taken_over_logs_it_and_drops_its_outcome(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    nudged_patients(runtime)
    slow = _Slow()
    worker = threading.Thread(
        target=dispatcher_with(runtime, slow).dispatch_due, args=(NUDGE_TIME,)
    )
    worker.start()
    assert slow.sending.wait(30)
    lease_over = datetime.now(UTC) + timedelta(hours=1)
    dispatcher_with(runtime, RecordingTransport(), database_time=lease_over).dispatch_due(
        NUDGE_TIME
    )
    slow.answer.set()
    worker.join(30)
    assert "taken over by another worker" in caplog.text


# -- an uncertain LINE push stays on LINE ----------------------------------------------


def _pushed_once_uncertainly(runtime: Runtime) -> RecordingTransport:
    """A patient with LINE and email whose LINE push timed out: LINE may have it."""
    nudged_patients(runtime, email="hanako@example.jp")
    transport = RecordingTransport([TIMEOUT])
    dispatcher_with(runtime, transport).dispatch_due(NUDGE_TIME)
    assert the_nudge(runtime).state is DeliveryState.PLANNED
    return transport


def test_an_uncertain_line_push_waits_for_a_held_line_rather_than_going_by_email(
    runtime: Runtime,
) -> None:
    transport = _pushed_once_uncertainly(runtime)
    with transaction(runtime.sessions) as session:
        hold_channel(session, ChannelName.LINE, HoldCause.CREDENTIALS, "401", NUDGE_TIME, None)
    dispatcher_with(runtime, transport).dispatch_due(LATER)
    assert transport.received == []
    nudge = the_nudge(runtime)
    assert nudge.state is DeliveryState.PLANNED
    assert "line channel held" in (nudge.last_error or "")


def test_an_uncertain_line_push_waits_for_line_quota_rather_than_going_by_email(
    runtime: Runtime,
) -> None:
    transport = _pushed_once_uncertainly(runtime)
    # The place it holds is kept for its retry, even in a month that filled up.
    tight = _with_line_quota(runtime, 0)
    dispatcher_with(tight, transport).dispatch_due(LATER)
    assert [m.channel for m in transport.received] == [ChannelName.LINE]


def test_an_uncertain_line_push_whose_contact_became_unusable_fails_rather_than_email(
    runtime: Runtime,
) -> None:
    transport = _pushed_once_uncertainly(runtime)
    with transaction(runtime.sessions) as session:
        patient_id = the_nudge(runtime).patient_id
        assert patient_id is not None
        mark_contact_unusable(session, patient_id, ChannelName.LINE, "blocked", LATER, JST)
    dispatcher_with(runtime, transport).dispatch_due(LATER)
    nudge = the_nudge(runtime)
    assert transport.received == []
    assert nudge.state is DeliveryState.FAILED
    assert "it may have reached the patient already" in (nudge.last_error or "")


# -- rows that end --------------------------------------------------------------------


def test_a_delivery_claimed_max_attempts_times_without_an_outcome_fails(
    runtime: Runtime,
) -> None:
    nudged_patients(runtime)
    attempts = runtime.settings.dispatch.max_attempts
    lease_ended = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
    with transaction(runtime.sessions) as session:
        session.execute(
            update(Delivery).values(
                state=DeliveryState.SENDING,
                claim_token="a-worker-that-died",
                lease_until=lease_ended,
                attempts=attempts,
            )
        )
    transport = RecordingTransport()
    dispatcher = dispatcher_with(runtime, transport, database_time=lease_ended + timedelta(1))
    dispatcher.dispatch_due(NUDGE_TIME)
    nudge = the_nudge(runtime)
    assert transport.received == []
    assert (nudge.state, nudge.last_error) == (
        DeliveryState.FAILED,
        GIVEN_UP.format(attempts=attempts),
    )


def test_a_fault_of_ours_while_composing_fails_the_message_instead_of_retrying_it(
    runtime: Runtime,
) -> None:
    """A newsletter row without its occurrence's day cannot be composed, ever."""
    nudged_patients(runtime, count=2)
    campaign = runtime.settings.campaigns[0].id
    with transaction(runtime.sessions) as session:
        nudge = session.scalars(select(Delivery).limit(1)).one()
        nudge.reason, nudge.campaign_id, nudge.campaign_day = Reason.NEWSLETTER, campaign, None
    transport = RecordingTransport()
    dispatcher_with(runtime, transport).dispatch_due(NUDGE_TIME)
    [broken] = deliveries(runtime.sessions, Reason.NEWSLETTER)
    assert (broken.state, broken.last_error) == (
        DeliveryState.FAILED,
        "could not be composed (AssertionError): see the worker's log",
    )
    assert len(transport.received) == 1  # the other nudge


def _a_row_from_a_newer_version(runtime: Runtime) -> str:
    """Nudges planned, and one of them given a reason this version does not know."""
    nudged_patients(runtime, count=3)
    with transaction(runtime.sessions) as session:
        delivery_id = session.scalars(
            select(Delivery.id).where(Delivery.reason == Reason.CADENCE_NUDGE).limit(1)
        ).one()
        session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id)
            .values(reason=sa.literal("birthday_greeting"))
        )
    return delivery_id


def test_a_row_this_version_cannot_read_is_quarantined_and_the_rest_go(
    runtime: Runtime,
) -> None:
    unreadable = _a_row_from_a_newer_version(runtime)
    transport = RecordingTransport()
    dispatcher_with(runtime, transport).dispatch_due(NUDGE_TIME)
    assert len(transport.received) == 2
    assert unreadable not in {m.delivery_id for m in transport.received}
    with runtime.sessions() as session:
        report = status(session, NUDGE_TIME, runtime.settings)
    [quarantined] = [line for line in report.failures if line.id == unreadable]
    assert quarantined.reason == "birthday_greeting"
    assert quarantined.error == "unreadable: unknown reason 'birthday_greeting'"
    assert report.counts["failed"] == 1


def test_status_and_the_quota_count_read_past_a_row_they_cannot_read(
    runtime: Runtime,
) -> None:
    _a_row_from_a_newer_version(runtime)
    with runtime.sessions() as session:
        report = status(session, NUDGE_TIME, runtime.settings)
        quota = line_quota(session, NUDGE_TIME, JST, 200)
    assert report.counts["planned"] == 3 + 3  # the nudges and their follow-ups
    assert quota.planned[Reason.CADENCE_NUDGE] == 2


# -- one LINE budget for every worker ---------------------------------------------------


def _with_line_quota(runtime: Runtime, monthly_quota: int) -> Runtime:
    config = replace(runtime.settings.config, line=Line(monthly_quota=monthly_quota))
    return replace(runtime, settings=replace(runtime.settings, config=config))


def test_two_workers_together_never_exceed_the_months_line_quota(runtime: Runtime) -> None:
    nudged_patients(runtime, count=20)
    tight = _with_line_quota(runtime, 10)
    transport = RecordingTransport()
    with ThreadPoolExecutor(max_workers=2) as pool:
        # `result()` raises what a worker raised: no failure goes unseen.
        for done in [
            pool.submit(dispatcher_with(tight, transport).dispatch_due, NUDGE_TIME)
            for _ in range(2)
        ]:
            done.result()
    assert len(transport.received) == 10
    assert _states(runtime) == {DeliveryState.SENT: 10, DeliveryState.PLANNED: 10}
    with runtime.sessions() as session:
        [month] = session.scalars(select(LineQuotaMonth)).all()
    assert (month.used, month.reserved) == (10, 0)


def test_a_place_is_given_back_when_its_push_certainly_did_not_go(runtime: Runtime) -> None:
    nudged_patients(runtime)
    refused = DeliveryError("429 rate limited", Failure.TRANSIENT)
    dispatcher_with(runtime, RecordingTransport([refused])).dispatch_due(NUDGE_TIME)
    with runtime.sessions() as session:
        [month] = session.scalars(select(LineQuotaMonth)).all()
    assert (month.used, month.reserved) == (0, 0)
    assert the_nudge(runtime).quota_month is None


def test_a_place_is_kept_for_the_retry_of_a_push_that_may_have_gone(runtime: Runtime) -> None:
    nudged_patients(runtime)
    dispatcher_with(runtime, RecordingTransport([TIMEOUT])).dispatch_due(NUDGE_TIME)
    with runtime.sessions() as session:
        [month] = session.scalars(select(LineQuotaMonth)).all()
    assert (month.used, month.reserved) == (0, 1)
    assert the_nudge(runtime).quota_month == month.month


# -- an outcome the database cannot take at once ------------------------------------------


class _LockedAfterSending:
    """The real SMTP channel, and then another process holding SQLite's write lock
    for a while (as `tayori import` does for its whole save)."""

    def __init__(self, smtp: SmtpTransport, database: str, seconds: float) -> None:
        self.smtp, self.database, self.seconds = smtp, database, seconds
        self.released = threading.Event()

    def send(self, message: OutgoingMessage) -> Receipt:
        receipt = self.smtp.send(message)
        locked = threading.Event()
        threading.Thread(target=self._hold_lock, args=(locked,), daemon=True).start()
        locked.wait(10)
        return receipt

    def _hold_lock(self, locked: threading.Event) -> None:
        connection = sqlite3.connect(self.database, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        locked.set()
        self.released.wait(self.seconds)
        connection.execute("ROLLBACK")
        connection.close()
        self.released.set()

    def close(self) -> None:
        self.smtp.close()


def test_a_sent_record_the_database_cannot_take_at_once_is_written_later_and_mailed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_template: Path
) -> None:
    database = tmp_path / "tayori.db"
    shutil.copy(sqlite_template, database)
    # Outcomes wait a fifth of a second for the lock, then try again, and again.
    env = install_clinic_env(f"sqlite:///{database}?timeout=0.2", tmp_path, monkeypatch)
    runtime = open_runtime(load_settings(env))
    try:
        nudged_patients(runtime, line_user_id=None, email="hanako@example.jp")
        with SmtpServer() as server:
            channel = _LockedAfterSending(SmtpTransport(server.settings()), str(database), 1.5)
            dispatcher = dispatcher_with(runtime, channel)
            dispatcher.dispatch_due(NUDGE_TIME)
            dispatcher.dispatch_due(NUDGE_TIME + timedelta(minutes=30))
            message_ids = [r.message["Message-ID"] for r in server.received]
        assert channel.released.is_set()
        nudge = the_nudge(runtime)
        assert nudge.state is DeliveryState.SENT
        assert message_ids == [f"<{nudge.id}@clinic.example>"]
    finally:
        runtime.close()


# -- a channel that cannot be reached -----------------------------------------------------


def _refused_smtp() -> Transport:
    with socket.socket() as probe:  # a port nobody listens on: the SMTP_PORT mistyped
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return SmtpTransport(
        Smtp("127.0.0.1", port, "none", "たより整体院 <info@clinic.example>"), timeout_seconds=2
    )


def test_an_unreachable_mail_server_holds_email_and_keeps_every_message(
    runtime: Runtime,
) -> None:
    nudged_patients(runtime, count=6, line_user_id=None, email="p@example.jp")
    line = RecordingTransport()
    email = _refused_smtp()
    dispatcher = dispatcher_with(runtime, line)
    dispatcher.transports = {ChannelName.LINE: line, ChannelName.EMAIL: email}
    for minutes in range(0, 40, 2):  # the worker's cycles over 40 minutes
        dispatcher.dispatch_due(NUDGE_TIME + timedelta(minutes=minutes))
    nudges = deliveries(runtime.sessions, Reason.CADENCE_NUDGE)
    assert {(d.state, d.attempts) for d in nudges} == {(DeliveryState.PLANNED, 0)}
    with runtime.sessions() as session:
        [hold] = active_holds(session, NUDGE_TIME + timedelta(minutes=39)).values()
    assert (hold.channel, hold.cause) == (ChannelName.EMAIL, HoldCause.UNREACHABLE)


def test_a_patient_with_line_too_gets_it_by_line_while_mail_cannot_be_reached(
    runtime: Runtime,
) -> None:
    nudged_patients(runtime, email="p@example.jp", preferred=ChannelName.EMAIL)
    line = RecordingTransport()
    dispatcher = dispatcher_with(runtime, line)
    dispatcher.transports = {ChannelName.LINE: line, ChannelName.EMAIL: _refused_smtp()}
    dispatcher.dispatch_due(NUDGE_TIME)
    assert [m.channel for m in line.received] == [ChannelName.LINE]
    assert the_nudge(runtime).state is DeliveryState.SENT


def test_an_unreachable_channel_is_tried_less_and_less_often(runtime: Runtime) -> None:
    nudged_patients(runtime, line_user_id=None, email="p@example.jp")
    dispatcher = dispatcher_with(runtime, RecordingTransport())
    dispatcher.transports = {ChannelName.EMAIL: _refused_smtp()}
    waits = []
    moment = NUDGE_TIME
    for _ in range(5):
        dispatcher.dispatch_due(moment)
        with runtime.sessions() as session:
            [hold] = active_holds(session, moment).values()
        assert hold.until is not None
        waits.append(hold.until - moment)
        moment = hold.until
    assert waits == sorted(waits) and waits[-1] > waits[0]


# -- clinic time --------------------------------------------------------------------------


def test_a_contact_marked_unusable_names_the_clinic_day(runtime: Runtime) -> None:
    nudged_patients(runtime)
    late_evening_utc = datetime(2026, 11, 25, 23, 30, tzinfo=UTC)  # 26 November in Tokyo
    with transaction(runtime.sessions) as session:
        patient_id = the_nudge(runtime).patient_id
        assert patient_id is not None
        mark_contact_unusable(
            session, patient_id, ChannelName.LINE, "blocked", late_evening_utc, JST
        )
    with runtime.sessions() as session:
        patient = session.get_one(Patient, patient_id)
    assert patient.line_unusable_reason == f"blocked (since {date(2026, 11, 26)})"


def test_the_mail_date_is_the_cycles_moment_not_the_real_clock(runtime: Runtime) -> None:
    nudged_patients(runtime, line_user_id=None, email="hanako@example.jp")
    runtime.dispatcher.dispatch_due(NUDGE_TIME)
    nudge = the_nudge(runtime)
    mail = message_from_bytes((runtime.settings.outbox_dir / f"{nudge.id}.eml").read_bytes())
    assert parsedate_to_datetime(mail["Date"]) == NUDGE_TIME


# -- what a message that may have gone keeps, and counts ---------------------------------


def _month(runtime: Runtime) -> tuple[int, int]:
    with runtime.sessions() as session:
        [month] = session.scalars(select(LineQuotaMonth)).all()
    return month.used, month.reserved


def test_a_message_queued_again_by_hand_counts_its_line_place_once(runtime: Runtime) -> None:
    dispatch = replace(runtime.settings.dispatch, max_attempts=1)
    one_try = replace(
        runtime,
        settings=replace(
            runtime.settings, config=replace(runtime.settings.config, dispatch=dispatch)
        ),
    )
    nudged_patients(one_try)
    dispatcher_with(one_try, RecordingTransport([TIMEOUT])).dispatch_due(NUDGE_TIME)
    assert (the_nudge(one_try).state, _month(one_try)) == (DeliveryState.FAILED, (1, 0))
    with transaction(one_try.sessions) as session:
        requeue(session, the_nudge(one_try).id, LATER, datetime.now(UTC))
    dispatcher_with(one_try, RecordingTransport()).dispatch_due(LATER)
    # The push that may have gone counted once, the one that went once more.
    assert (the_nudge(one_try).state, _month(one_try)) == (DeliveryState.SENT, (2, 0))


def test_a_mail_that_may_have_gone_is_not_sent_by_line_once_line_is_open_again(
    runtime: Runtime,
) -> None:
    nudged_patients(runtime, email="hanako@example.jp")
    with transaction(runtime.sessions) as session:
        until = NUDGE_TIME + timedelta(minutes=30)
        hold_channel(session, ChannelName.LINE, HoldCause.CREDENTIALS, "401", NUDGE_TIME, until)
    no_answer = DeliveryError("connection lost after the message was sent", Failure.UNCERTAIN)
    first = RecordingTransport([no_answer])
    dispatcher_with(runtime, first).dispatch_due(NUDGE_TIME)
    assert (the_nudge(runtime).channel, the_nudge(runtime).maybe_sent) == (ChannelName.EMAIL, True)
    retry = RecordingTransport()
    dispatcher_with(runtime, retry).dispatch_due(LATER)  # LINE is open again by now
    assert [m.channel for m in retry.received] == [ChannelName.EMAIL]


def test_a_message_that_may_have_gone_and_is_no_longer_due_counts_its_line_place(
    runtime: Runtime,
) -> None:
    nudged_patients(runtime)
    dispatcher_with(runtime, RecordingTransport([TIMEOUT])).dispatch_due(NUDGE_TIME)
    assert _month(runtime) == (0, 1)  # kept for the retry
    with transaction(runtime.sessions) as session:
        withdraw(session, [the_nudge(runtime).id], NUDGE_TIME, "booked meanwhile")
    nudge = the_nudge(runtime)
    assert (nudge.state, nudge.quota_month, _month(runtime)) == (
        DeliveryState.WITHDRAWN,
        None,
        (1, 0),
    )

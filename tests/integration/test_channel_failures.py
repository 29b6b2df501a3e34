"""What the dispatcher does with each kind of channel failure, and how LINE's monthly
quota is shared: the channel says what a failure means, the outbox acts on it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from scheduler.channels import DeliveryError, Failure
from scheduler.clock import FixedClock
from scheduler.core.config import Line
from scheduler.core.domain import ChannelName, DeliveryState, HoldCause, Reason
from scheduler.core.failure_policy import RETRY_KEY_EXPIRED
from scheduler.outbox.planner import plan, plan_digest
from scheduler.outbox.report import status
from scheduler.runtime import Runtime
from scheduler.store.channel_state import active_holds, hold_channel, release_holds
from scheduler.store.db import transaction
from scheduler.store.models import Delivery, Patient
from scheduler.worker import Worker
from tests.integration.clinic import LINE_ID, add_appointment, add_patient, visited
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

BLOCKED = DeliveryError("400 the user cannot receive messages", Failure.CONTACT_UNUSABLE)
BAD_TOKEN = DeliveryError("401 check LINE_CHANNEL_ACCESS_TOKEN", Failure.CHANNEL_UNAVAILABLE)
MONTHLY_LIMIT = DeliveryError("429 You have reached your monthly limit.", Failure.QUOTA_EXHAUSTED)
TIMEOUT = DeliveryError("read timed out", Failure.UNCERTAIN)


def _dispatch_with_line_refusing(runtime: Runtime, error: DeliveryError) -> RecordingTransport:
    """Dispatch what is due at NUDGE_TIME while LINE answers every push with `error`."""
    transport = RecordingTransport(refused={ChannelName.LINE: error})
    dispatcher_with(runtime, transport).dispatch_due(NUDGE_TIME)
    return transport


def _patient(runtime: Runtime) -> Patient:
    with runtime.sessions() as session:
        return session.scalars(select(Patient)).one()


def test_blocked_line_contact_is_marked_and_the_message_goes_by_email(runtime: Runtime) -> None:
    nudged_patients(runtime, email="hanako@example.jp")
    transport = _dispatch_with_line_refusing(runtime, BLOCKED)
    assert [m.channel for m in transport.received] == [ChannelName.EMAIL]
    assert the_nudge(runtime).state is DeliveryState.SENT
    assert "cannot receive" in (_patient(runtime).line_unusable_reason or "")


def test_blocked_line_contact_without_email_skips_the_message(runtime: Runtime) -> None:
    nudged_patients(runtime)
    _dispatch_with_line_refusing(runtime, BLOCKED)
    assert the_nudge(runtime).state is DeliveryState.SKIPPED


def test_refused_credentials_hold_the_channel_without_using_attempts(runtime: Runtime) -> None:
    nudged_patients(runtime, count=2)
    transport = _dispatch_with_line_refusing(runtime, BAD_TOKEN)

    held = deliveries(runtime.sessions, Reason.CADENCE_NUDGE)
    assert transport.received == []
    assert {(d.state, d.attempts) for d in held} == {(DeliveryState.PLANNED, 0)}
    assert all("LINE_CHANNEL_ACCESS_TOKEN" in (d.last_error or "") for d in held)
    with runtime.sessions() as session:
        [hold] = active_holds(session, NUDGE_TIME).values()
    assert (hold.channel, hold.cause) == (ChannelName.LINE, HoldCause.CREDENTIALS)


def test_held_line_channel_sends_by_email_where_the_patient_has_it(runtime: Runtime) -> None:
    nudged_patients(runtime, count=2, email="hanako@example.jp")
    transport = _dispatch_with_line_refusing(runtime, BAD_TOKEN)
    assert [m.channel for m in transport.received] == [ChannelName.EMAIL] * 2


def test_held_channel_is_shown_in_status(runtime: Runtime) -> None:
    nudged_patients(runtime)
    _dispatch_with_line_refusing(runtime, BAD_TOKEN)
    with runtime.sessions() as session:
        report = status(session, NUDGE_TIME, runtime.settings)
    assert [h.reason for h in report.holds] == [BAD_TOKEN.reason]


@pytest.mark.parametrize("cause", [HoldCause.CREDENTIALS, HoldCause.UNREACHABLE])
def test_worker_start_lifts_a_hold_the_settings_may_have_mended_but_not_a_quota_hold(
    runtime: Runtime, cause: HoldCause
) -> None:
    with transaction(runtime.sessions) as session:
        hold_channel(session, ChannelName.LINE, cause, "401", NUDGE_TIME, None)
        hold_channel(session, ChannelName.EMAIL, HoldCause.QUOTA, "limit", NUDGE_TIME, None)
    Worker([runtime], FixedClock(NUDGE_TIME)).start_up()
    with runtime.sessions() as session:
        assert list(active_holds(session, NUDGE_TIME)) == [ChannelName.EMAIL]


def test_monthly_limit_holds_line_until_the_month_turns(runtime: Runtime) -> None:
    nudged_patients(runtime)
    _dispatch_with_line_refusing(runtime, MONTHLY_LIMIT)
    with runtime.sessions() as session:
        [hold] = active_holds(session, NUDGE_TIME).values()
        assert active_holds(session, datetime(2026, 12, 1, 0, 0, tzinfo=JST)) == {}
    assert hold.cause is HoldCause.QUOTA
    assert hold.until == datetime(2026, 12, 1, 0, 0, tzinfo=JST)
    assert "LINE quota" in (the_nudge(runtime).last_error or "")


# The database's clock, on which LINE's 24 hours are measured.
FIRST_PUSH = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)


def test_uncertain_line_outcome_is_not_retried_once_the_retry_key_nears_its_end(
    runtime: Runtime,
) -> None:
    nudged_patients(runtime)
    transport = RecordingTransport([TIMEOUT, TIMEOUT])
    dispatcher_with(runtime, transport, database_time=FIRST_PUSH).dispatch_due(NUDGE_TIME)
    # The worker was down for most of a day: 23 hours on, LINE might forget the key
    # before a retry lands.
    later = FIRST_PUSH + timedelta(hours=23)
    dispatcher_with(runtime, transport, database_time=later).dispatch_due(
        NUDGE_TIME + timedelta(hours=23)
    )
    nudge = the_nudge(runtime)
    assert transport.tries == 1
    assert nudge.state is DeliveryState.FAILED
    assert RETRY_KEY_EXPIRED in (nudge.last_error or "")


def test_an_uncertain_line_push_is_retried_under_its_key_within_the_window(
    runtime: Runtime,
) -> None:
    nudged_patients(runtime)
    transport = RecordingTransport([TIMEOUT])
    dispatcher_with(runtime, transport, database_time=FIRST_PUSH).dispatch_due(NUDGE_TIME)
    later = FIRST_PUSH + timedelta(hours=9)  # the worker was down until the evening
    dispatcher_with(runtime, transport, database_time=later).dispatch_due(
        NUDGE_TIME + timedelta(hours=9)
    )
    nudge = the_nudge(runtime)
    assert [m.delivery_id for m in transport.received] == [nudge.id]
    assert nudge.state is DeliveryState.SENT


def test_the_window_counts_from_the_first_request_not_from_the_first_timeout(
    runtime: Runtime,
) -> None:
    nudged_patients(runtime)
    transport = RecordingTransport([TIMEOUT])
    dispatcher_with(runtime, transport, database_time=FIRST_PUSH).dispatch_due(NUDGE_TIME)
    nudge = the_nudge(runtime)
    assert (nudge.line_first_request_at, nudge.maybe_sent) == (FIRST_PUSH, True)


def _refused_a_day_ago(runtime: Runtime) -> datetime:
    """A push refused (a bad token) at FIRST_PUSH, the hold lifted a day later; that
    later moment on the database's clock."""
    nudged_patients(runtime)
    refusing = RecordingTransport(refused={ChannelName.LINE: BAD_TOKEN})
    dispatcher_with(runtime, refusing, database_time=FIRST_PUSH).dispatch_due(NUDGE_TIME)
    assert the_nudge(runtime).maybe_sent is False  # LINE took nothing
    with transaction(runtime.sessions) as session:
        release_holds(session, HoldCause.CREDENTIALS)
    return FIRST_PUSH + timedelta(hours=25)


def test_after_a_long_hold_the_push_goes_under_its_retry_key(runtime: Runtime) -> None:
    later = _refused_a_day_ago(runtime)
    transport = RecordingTransport()
    dispatcher_with(runtime, transport, database_time=later).dispatch_due(
        NUDGE_TIME + timedelta(hours=25)
    )
    assert [m.delivery_id for m in transport.received] == [the_nudge(runtime).id]


def test_a_timeout_a_day_after_the_first_request_is_not_repeated(runtime: Runtime) -> None:
    """LINE counts a key's 24 hours from the first request that carried it, refused
    or not: a repeat now might find the key forgotten and reach the patient twice."""
    later = _refused_a_day_ago(runtime)
    transport = RecordingTransport([TIMEOUT])
    dispatcher_with(runtime, transport, database_time=later).dispatch_due(
        NUDGE_TIME + timedelta(hours=25)
    )
    nudge = the_nudge(runtime)
    assert (nudge.state, nudge.line_first_request_at) == (DeliveryState.FAILED, FIRST_PUSH)
    assert RETRY_KEY_EXPIRED in (nudge.last_error or "")


def test_line_message_whose_worker_stopped_mid_push_a_day_ago_is_not_sent_again(
    runtime: Runtime,
) -> None:
    nudged_patients(runtime)
    with transaction(runtime.sessions) as session:
        nudge = session.scalars(
            select(Delivery).where(Delivery.reason == Reason.CADENCE_NUDGE)
        ).one()
        nudge.state, nudge.channel, nudge.attempts = DeliveryState.SENDING, ChannelName.LINE, 1
        nudge.claim_token, nudge.lease_until = "stopped", FIRST_PUSH + timedelta(minutes=5)
        nudge.line_first_request_at, nudge.maybe_sent = FIRST_PUSH, True
    transport = RecordingTransport()
    later = FIRST_PUSH + timedelta(hours=24)
    dispatcher_with(runtime, transport, database_time=later).dispatch_due(NUDGE_TIME)
    assert transport.received == []
    assert the_nudge(runtime).last_error == RETRY_KEY_EXPIRED


def _with_line_quota(runtime: Runtime, monthly_quota: int) -> Runtime:
    config = replace(runtime.settings.config, line=Line(monthly_quota=monthly_quota))
    return replace(runtime, settings=replace(runtime.settings, config=config))


def _two_nudges_and_a_reminder_later_this_month(runtime: Runtime, **patient: object) -> None:
    with transaction(runtime.sessions) as session:
        for external_id in ("P1", "P2", "P3"):
            add_patient(session, PLANNED_AT, external_id, **patient)  # type: ignore[arg-type]
        for external_id in ("P1", "P2"):
            visited(session, PLANNED_AT, days_ago=1, external_id=external_id)
        add_appointment(
            session, PLANNED_AT, datetime(2026, 11, 28, 11, 0, tzinfo=JST), external_id="P3"
        )
        plan(session, PLANNED_AT, runtime.settings.rules)


def test_line_quota_is_kept_for_reminders_and_the_rest_waits(runtime: Runtime) -> None:
    _two_nudges_and_a_reminder_later_this_month(runtime)
    tight = _with_line_quota(runtime, 2)
    transport = RecordingTransport()
    dispatcher_with(tight, transport).dispatch_due(NUDGE_TIME)

    nudges = sorted(deliveries(runtime.sessions, Reason.CADENCE_NUDGE), key=lambda d: d.state)
    assert [d.state for d in nudges] == [DeliveryState.PLANNED, DeliveryState.SENT]
    assert (nudges[0].last_error or "").startswith("LINE quota")
    assert len(transport.received) == 1


def test_nudges_that_do_not_fit_in_the_line_quota_go_by_email(runtime: Runtime) -> None:
    _two_nudges_and_a_reminder_later_this_month(runtime, email="hanako@example.jp")
    tight = _with_line_quota(runtime, 2)
    transport = RecordingTransport()
    dispatcher_with(tight, transport).dispatch_due(NUDGE_TIME)
    assert sorted(m.channel for m in transport.received) == [ChannelName.EMAIL, ChannelName.LINE]


def test_status_forecasts_the_months_line_messages(runtime: Runtime) -> None:
    _two_nudges_and_a_reminder_later_this_month(runtime)
    with runtime.sessions() as session:
        quota = status(session, NUDGE_TIME, runtime.settings).line_quota
    assert (quota.used, quota.limit, quota.forecast) == (0, 200, 5)
    assert quota.planned == {
        Reason.APPOINTMENT_REMINDER: 1,
        Reason.CADENCE_NUDGE: 2,
        Reason.CADENCE_FOLLOW_UP: 2,  # planned already; withdrawn if they book
    }


def test_patient_line_id_is_kept_when_marked_unusable(runtime: Runtime) -> None:
    nudged_patients(runtime)
    _dispatch_with_line_refusing(runtime, BLOCKED)
    assert _patient(runtime).line_user_id == LINE_ID


def test_the_digest_waits_while_its_channel_is_held(runtime: Runtime) -> None:
    """The clinic's digest has one channel per row: held, it waits; it does not
    try the held channel again and again within the cycle."""
    with transaction(runtime.sessions) as session:
        plan_digest(session, NUDGE_TIME, runtime.settings)
    refused = DeliveryError(
        "535 check SMTP_USERNAME and SMTP_PASSWORD", Failure.CHANNEL_UNAVAILABLE
    )
    transport = RecordingTransport(refused={ChannelName.EMAIL: refused})
    dispatcher_with(runtime, transport).dispatch_due(NUDGE_TIME)
    [digest] = deliveries(runtime.sessions, Reason.DAILY_DIGEST)
    assert (digest.state, digest.attempts) == (DeliveryState.PLANNED, 0)
    assert digest.send_after > NUDGE_TIME
    assert transport.tries == 1

"""The planner against real databases: outbox rows appear, stay unique, and follow
the facts as they change."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.core.domain import AppointmentStatus, ChannelName, DeliveryState, Phase, Reason
from scheduler.outbox.planner import dry_run, plan
from scheduler.runtime import Runtime
from scheduler.settings import Settings
from scheduler.store.db import transaction
from scheduler.store.models import Delivery
from tests.integration.clinic import add_appointment, add_patient, visited

JST = ZoneInfo("Asia/Tokyo")
MONDAY_9AM = datetime(2026, 11, 23, 9, 0, tzinfo=JST)


def _rows(session: Session) -> dict[str, Delivery]:
    return {d.idempotency_key.split(":")[0]: d for d in session.scalars(select(Delivery))}


def test_acute_patient_gets_nudge_and_follow_up_rows(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    with transaction(sessions) as session:
        add_patient(session, MONDAY_9AM)
        visited(session, MONDAY_9AM, 1)
        result = plan(session, MONDAY_9AM, settings.rules)
        rows = _rows(session)
    assert result.created == 2
    assert rows["cadence_nudge"].send_after == datetime(2026, 11, 25, 10, 0, tzinfo=JST)
    assert rows["cadence_follow_up"].send_after == datetime(2026, 11, 27, 10, 0, tzinfo=JST)
    assert rows["cadence_nudge"].channel is ChannelName.LINE
    assert rows["cadence_nudge"].template == "cadence_nudge/line.j2"
    assert rows["cadence_nudge"].state is DeliveryState.PLANNED


def test_planning_twice_at_the_same_moment_adds_nothing(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    with transaction(sessions) as session:
        add_patient(session, MONDAY_9AM)
        visited(session, MONDAY_9AM, 1)
        plan(session, MONDAY_9AM, settings.rules)
    with transaction(sessions) as session:
        again = plan(session, MONDAY_9AM, settings.rules)
        count = session.scalar(select(func.count()).select_from(Delivery))
    assert (again.created, again.revived, again.withdrawn) == (0, 0, 0)
    assert count == 2


def test_a_new_booking_withdraws_the_pending_nudge(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    with transaction(sessions) as session:
        add_patient(session, MONDAY_9AM)
        visited(session, MONDAY_9AM, 1)
        plan(session, MONDAY_9AM, settings.rules)
        add_appointment(
            session, MONDAY_9AM, MONDAY_9AM + timedelta(days=5), AppointmentStatus.BOOKED
        )
        result = plan(session, MONDAY_9AM, settings.rules)
        rows = _rows(session)
    assert result.withdrawn == 2
    assert rows["cadence_nudge"].state is DeliveryState.WITHDRAWN
    assert rows["appointment_reminder"].state is DeliveryState.PLANNED


def test_a_cancelled_booking_lets_the_nudge_be_planned(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    booked_for = MONDAY_9AM + timedelta(days=5)
    with transaction(sessions) as session:
        add_patient(session, MONDAY_9AM)
        visited(session, MONDAY_9AM, 1)
        add_appointment(session, MONDAY_9AM, booked_for, AppointmentStatus.BOOKED)
        plan(session, MONDAY_9AM, settings.rules)
        add_appointment(session, MONDAY_9AM, booked_for, AppointmentStatus.CANCELLED)
        result = plan(session, MONDAY_9AM, settings.rules)
        rows = _rows(session)
    assert result.revived == 0 and result.created == 2  # nudge and follow-up
    assert rows["appointment_reminder"].state is DeliveryState.WITHDRAWN
    assert rows["cadence_nudge"].state is DeliveryState.PLANNED


def test_withdrawn_nudge_is_revived_when_its_booking_is_cancelled(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    booked_for = MONDAY_9AM + timedelta(days=5)
    with transaction(sessions) as session:
        add_patient(session, MONDAY_9AM)
        visited(session, MONDAY_9AM, 1)
        plan(session, MONDAY_9AM, settings.rules)
        add_appointment(session, MONDAY_9AM, booked_for, AppointmentStatus.BOOKED)
        plan(session, MONDAY_9AM, settings.rules)
        add_appointment(session, MONDAY_9AM, booked_for, AppointmentStatus.CANCELLED)
        result = plan(session, MONDAY_9AM, settings.rules)
        rows = _rows(session)
    assert result.revived == 2
    assert rows["cadence_nudge"].state is DeliveryState.PLANNED


def test_message_without_a_usable_contact_is_skipped_when_due(
    settings: Settings, sessions: sessionmaker[Session], runtime: Runtime
) -> None:
    with transaction(sessions) as session:
        add_patient(session, MONDAY_9AM, line_user_id=None, email=None)
        visited(session, MONDAY_9AM, 1)
        plan(session, MONDAY_9AM, settings.rules)
    runtime.dispatcher.dispatch_due(datetime(2026, 11, 25, 10, 0, tzinfo=JST))
    with sessions() as session:
        rows = _rows(session)
    assert rows["cadence_nudge"].state is DeliveryState.SKIPPED
    assert "no usable contact" in (rows["cadence_nudge"].last_error or "")
    assert rows["cadence_follow_up"].state is DeliveryState.PLANNED  # skipped on its own day


def test_email_is_used_when_the_preferred_line_contact_is_missing(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    with transaction(sessions) as session:
        add_patient(session, MONDAY_9AM, line_user_id=None, email="hanako@example.jp")
        visited(session, MONDAY_9AM, 1)
        plan(session, MONDAY_9AM, settings.rules)
        rows = _rows(session)
    assert rows["cadence_nudge"].channel is ChannelName.EMAIL


def test_booking_learnt_after_the_reminder_moment_gets_no_reminder(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    evening = datetime(2026, 11, 23, 19, 0, tzinfo=JST)
    with transaction(sessions) as session:
        add_patient(session, evening)
        add_appointment(
            session, evening, datetime(2026, 11, 24, 10, 0, tzinfo=JST), AppointmentStatus.BOOKED
        )
        plan(session, evening, settings.rules)
        count = session.scalar(select(func.count()).select_from(Delivery))
    assert count == 0


def test_planned_reminder_survives_its_moment_passing(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    with transaction(sessions) as session:
        add_patient(session, MONDAY_9AM)
        add_appointment(
            session, MONDAY_9AM, datetime(2026, 11, 24, 10, 0, tzinfo=JST), AppointmentStatus.BOOKED
        )
        plan(session, MONDAY_9AM, settings.rules)
        later = datetime(2026, 11, 23, 18, 30, tzinfo=JST)
        result = plan(session, later, settings.rules)
        rows = _rows(session)
    assert result.withdrawn == 0
    assert rows["appointment_reminder"].state is DeliveryState.PLANNED


def test_withdrawn_consent_withdraws_planned_messages(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    with transaction(sessions) as session:
        add_patient(session, MONDAY_9AM)
        visited(session, MONDAY_9AM, 1)
        plan(session, MONDAY_9AM, settings.rules)
        add_patient(session, MONDAY_9AM, reminders=False)
        result = plan(session, MONDAY_9AM, settings.rules)
    assert result.withdrawn == 2


def test_dry_run_lists_follow_ups_and_writes_nothing(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    with transaction(sessions) as session:
        add_patient(session, MONDAY_9AM, "P1", Phase.REHAB)
        visited(session, MONDAY_9AM, 2)
    with sessions() as session:
        expected = dry_run(session, MONDAY_9AM, MONDAY_9AM + timedelta(days=14), settings.rules)
        count = session.scalar(select(func.count()).select_from(Delivery))
    assert [(m.reason, m.send_at) for m in expected] == [
        (Reason.CADENCE_NUDGE.value, datetime(2026, 11, 27, 10, 0, tzinfo=JST)),
        (Reason.CADENCE_FOLLOW_UP.value, datetime(2026, 12, 1, 10, 0, tzinfo=JST)),
    ]
    assert count == 0


def test_dry_run_leaves_out_what_was_already_sent(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    with transaction(sessions) as session:
        add_patient(session, MONDAY_9AM)
        visited(session, MONDAY_9AM, 1)
        plan(session, MONDAY_9AM, settings.rules)
        _rows(session)["cadence_nudge"].state = DeliveryState.SENT
    with sessions() as session:
        expected = dry_run(session, MONDAY_9AM, MONDAY_9AM + timedelta(days=7), settings.rules)
    assert [m.reason for m in expected] == [Reason.CADENCE_FOLLOW_UP.value]


def test_dry_run_foresees_the_nudge_after_a_booked_visit_passes(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    with transaction(sessions) as session:
        add_patient(session, MONDAY_9AM)
        add_appointment(session, MONDAY_9AM, datetime(2026, 11, 24, 15, 0, tzinfo=JST))
    with sessions() as session:
        expected = dry_run(session, MONDAY_9AM, MONDAY_9AM + timedelta(days=7), settings.rules)
    assert [(m.reason, m.send_at) for m in expected] == [
        (Reason.APPOINTMENT_REMINDER.value, datetime(2026, 11, 23, 18, 0, tzinfo=JST)),
        (Reason.CADENCE_NUDGE.value, datetime(2026, 11, 27, 10, 0, tzinfo=JST)),
        (Reason.CADENCE_FOLLOW_UP.value, datetime(2026, 11, 29, 10, 0, tzinfo=JST)),
    ]

"""Appointment reminders and no-show follow-ups."""

from __future__ import annotations

from datetime import datetime

import pytest

from scheduler.core.appointments import appointment_reminders, no_show_follow_ups
from scheduler.core.config import Rules
from scheduler.core.domain import AppointmentStatus, Reason
from tests.unit.facts import JST, appointment, jst, patient

RULES = Rules()
BOOKED = AppointmentStatus.BOOKED
TOMORROW_3PM = jst(11, 26, 15, 0)


def reminder_times(
    now: datetime, status: AppointmentStatus = BOOKED
) -> list[tuple[datetime, bool]]:
    facts = patient(appointment(TOMORROW_3PM, status))
    return [
        (m.send_at.astimezone(JST), m.may_create) for m in appointment_reminders(facts, now, RULES)
    ]


@pytest.mark.parametrize(
    "status",
    [AppointmentStatus.CANCELLED, AppointmentStatus.VISITED, AppointmentStatus.NO_SHOW],
    ids=lambda s: s.value,
)
def test_only_booked_appointments_are_reminded(status: AppointmentStatus) -> None:
    assert reminder_times(jst(11, 20, 12, 0), status) == []


def test_no_reminder_once_the_appointment_has_begun() -> None:
    assert reminder_times(TOMORROW_3PM) == []


def test_reminder_needs_reminder_consent() -> None:
    facts = patient(appointment(TOMORROW_3PM, BOOKED), reminders=False)
    assert appointment_reminders(facts, jst(11, 20, 12, 0), RULES) == []


def test_reminder_key_names_the_appointment() -> None:
    booked = appointment(TOMORROW_3PM, BOOKED)
    [reminder] = appointment_reminders(patient(booked), jst(11, 20, 12, 0), RULES)
    assert (reminder.reason, reminder.appointment_id) == (Reason.APPOINTMENT_REMINDER, booked.id)
    assert reminder.key == f"appointment_reminder:a{booked.id}:7"


MISSED = jst(11, 24, 15, 0)


def follow_ups(now: datetime, *later: object) -> list[tuple[datetime, bool]]:
    facts = patient(appointment(MISSED, AppointmentStatus.NO_SHOW), *later)  # type: ignore[arg-type]
    return [
        (m.send_at.astimezone(JST), m.may_create) for m in no_show_follow_ups(facts, now, RULES)
    ]


@pytest.mark.parametrize(
    "status", [AppointmentStatus.BOOKED, AppointmentStatus.VISITED], ids=lambda s: s.value
)
def test_no_follow_up_once_the_patient_has_booked_or_visited_again(
    status: AppointmentStatus,
) -> None:
    assert follow_ups(jst(11, 24, 16, 0), appointment(jst(11, 30, 10, 0), status)) == []

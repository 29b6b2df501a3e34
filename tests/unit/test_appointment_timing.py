"""When appointment reminders and no-show follow-ups go, and when they are not made:
edges of the day before, clinic-local days, the clinic's settings and time zone."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from scheduler.core.appointments import appointment_reminders, no_show_follow_ups
from scheduler.core.config import Rules
from scheduler.core.domain import AppointmentFact, AppointmentStatus, Due
from tests.unit.clinic_time import BERLIN, clinic_rules, local
from tests.unit.facts import JST, appointment, jst, patient

BOOKED, NO_SHOW = AppointmentStatus.BOOKED, AppointmentStatus.NO_SHOW
TOKYO_RULES = Rules()
BERLIN_RULES = clinic_rules(clinic={"timezone": "Europe/Berlin"})
LONG_BEFORE = jst(11, 20, 12, 0)


def outcome(message: Due, tz: ZoneInfo = JST) -> tuple[datetime, bool]:
    """A planned message as (send moment on the clinic's wall clock, may be created)."""
    return message.send_at.astimezone(tz), message.may_create


def reminder_for(starts_at: datetime, now: datetime, rules: Rules = TOKYO_RULES) -> Due:
    """The one reminder for a single booked appointment."""
    [reminder] = appointment_reminders(patient(appointment(starts_at, BOOKED)), now, rules)
    return reminder


APPOINTMENT = jst(11, 26, 15, 0)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        pytest.param(LONG_BEFORE, (jst(11, 25, 18, 0), True), id="days-ahead"),
        pytest.param(jst(11, 25, 17, 59), (jst(11, 25, 18, 0), True), id="known-17:59"),
        pytest.param(jst(11, 25, 18, 0), (jst(11, 25, 18, 0), True), id="known-exactly-18:00"),
        pytest.param(jst(11, 25, 18, 1), (jst(11, 25, 18, 1), False), id="known-18:01"),
        pytest.param(jst(11, 25, 20, 30), (jst(11, 26, 9, 0), False), id="known-after-closing"),
        pytest.param(jst(11, 26, 14, 59), (jst(11, 26, 14, 59), False), id="known-same-day"),
    ],
)
def test_reminder_is_made_only_if_known_by_six_the_evening_before(
    now: datetime, expected: tuple[datetime, bool]
) -> None:
    assert outcome(reminder_for(APPOINTMENT, now)) == expected


@pytest.mark.parametrize(
    ("starts_at", "reminder_at"),
    [
        pytest.param(jst(11, 27, 0, 30), jst(11, 26, 18, 0), id="00:30-jst-is-the-utc-day-before"),
        pytest.param(jst(11, 26, 8, 30), jst(11, 25, 18, 0), id="08:30-jst-is-23:30-utc"),
        pytest.param(jst(11, 26, 23, 30), jst(11, 25, 18, 0), id="23:30-jst"),
    ],
)
def test_the_day_before_is_the_clinic_day_before(
    starts_at: datetime, reminder_at: datetime
) -> None:
    assert outcome(reminder_for(starts_at, LONG_BEFORE)) == (reminder_at, True)


def test_each_booked_appointment_gets_its_own_reminder() -> None:
    first = appointment(jst(11, 26, 15, 0), BOOKED)
    second = appointment(jst(12, 3, 15, 0), BOOKED)
    reminders = appointment_reminders(patient(first, second), LONG_BEFORE, TOKYO_RULES)
    assert [(r.key, r.appointment_id) for r in reminders] == [
        (f"appointment_reminder:a{first.id}:7", first.id),
        (f"appointment_reminder:a{second.id}:7", second.id),
    ]


def test_reminder_day_and_hour_come_from_the_settings_file() -> None:
    rules = clinic_rules(appointment_reminder={"days_before": 2, "send_at": "19:30"})
    assert outcome(reminder_for(APPOINTMENT, LONG_BEFORE, rules)) == (jst(11, 24, 19, 30), True)


@pytest.mark.parametrize(
    ("starts_at", "expected"),
    [
        pytest.param(jst(11, 26, 15, 0), (jst(11, 26, 9, 0), True), id="afternoon-visit"),
        pytest.param(jst(11, 26, 9, 0), (jst(11, 26, 9, 0), False), id="visit-at-opening"),
    ],
)
def test_a_reminder_pushed_past_the_appointment_by_the_window_is_not_made(
    starts_at: datetime, expected: tuple[datetime, bool]
) -> None:
    # 21:00 the day before is outside the window: the next opening is 09:00 that day.
    rules = clinic_rules(appointment_reminder={"send_at": "21:00"})
    assert outcome(reminder_for(starts_at, LONG_BEFORE, rules)) == expected


@pytest.mark.parametrize(
    ("starts_at", "reminder_utc"),
    [
        pytest.param(
            local(BERLIN, 3, 30, 10, 0),
            datetime(2026, 3, 29, 16, 0, tzinfo=UTC),
            id="evening-clocks-went-forward",
        ),
        pytest.param(
            local(BERLIN, 10, 26, 10, 0),
            datetime(2026, 10, 25, 17, 0, tzinfo=UTC),
            id="evening-clocks-went-back",
        ),
    ],
)
def test_reminder_keeps_six_pm_local_across_daylight_saving(
    starts_at: datetime, reminder_utc: datetime
) -> None:
    reminder = reminder_for(starts_at, local(BERLIN, 3, 1, 12, 0), BERLIN_RULES)
    assert reminder.send_at == reminder_utc
    assert reminder.send_at.astimezone(BERLIN).hour == 18


# A patient who missed a late-evening slot: 23:30 in Tokyo, 14:30 UTC, on the 24th.
MISSED = jst(11, 24, 23, 30)


def follow_ups_for(
    missed: AppointmentFact, *others: AppointmentFact, now: datetime, rules: Rules = TOKYO_RULES
) -> list[Due]:
    """The follow-ups planned for `missed` (not for the other appointments)."""
    messages = no_show_follow_ups(patient(missed, *others), now, rules)
    return [m for m in messages if m.appointment_id == missed.id]


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        pytest.param(jst(11, 24, 23, 45), (jst(11, 25, 10, 0), True), id="known-that-night"),
        pytest.param(jst(11, 25, 9, 59), (jst(11, 25, 10, 0), True), id="known-09:59-next-day"),
        pytest.param(jst(11, 25, 19, 59), (jst(11, 25, 19, 59), True), id="known-19:59-next-day"),
        pytest.param(
            jst(11, 25, 20, 0), (jst(11, 26, 9, 0), True), id="known-20:00-next-day-waits"
        ),
        pytest.param(jst(11, 26, 0, 0), (jst(11, 26, 9, 0), False), id="known-two-days-later"),
    ],
)
def test_no_show_follow_up_goes_the_clinic_day_after_unless_learnt_later_still(
    now: datetime, expected: tuple[datetime, bool]
) -> None:
    [follow_up] = follow_ups_for(appointment(MISSED, NO_SHOW), now=now)
    assert outcome(follow_up) == expected


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(appointment(jst(11, 20, 10, 0)), id="visit-before-the-no-show"),
        pytest.param(appointment(jst(11, 20, 10, 0), BOOKED), id="booking-before-the-no-show"),
        pytest.param(
            appointment(jst(11, 30, 10, 0), AppointmentStatus.CANCELLED),
            id="cancelled-booking-after",
        ),
        pytest.param(appointment(jst(11, 25, 9, 0), NO_SHOW), id="another-no-show-after"),
    ],
)
def test_no_show_is_followed_up_unless_a_later_appointment_is_booked_or_kept(
    other: AppointmentFact,
) -> None:
    missed = appointment(MISSED, NO_SHOW)
    [follow_up] = follow_ups_for(missed, other, now=jst(11, 25, 9, 30))
    assert follow_up.key == f"no_show_follow_up:a{missed.id}:7"


def test_no_show_follow_up_needs_reminder_consent() -> None:
    facts = patient(appointment(MISSED, NO_SHOW), reminders=False)
    assert no_show_follow_ups(facts, jst(11, 25, 9, 0), TOKYO_RULES) == []


def test_no_show_follow_up_day_and_hour_come_from_the_settings_file() -> None:
    rules = clinic_rules(no_show_follow_up={"days_after": 2, "send_at": "11:00"})
    [follow_up] = follow_ups_for(appointment(MISSED, NO_SHOW), now=jst(11, 25, 0, 0), rules=rules)
    assert outcome(follow_up) == (jst(11, 26, 11, 0), True)


def test_no_show_follow_up_uses_the_clinic_day_of_the_configured_time_zone() -> None:
    # 23:30 in Berlin on the 24th is already the 25th in Tokyo.
    missed = appointment(local(BERLIN, 10, 24, 23, 30), NO_SHOW)
    [follow_up] = follow_ups_for(missed, now=local(BERLIN, 10, 24, 23, 45), rules=BERLIN_RULES)
    assert outcome(follow_up, BERLIN) == (local(BERLIN, 10, 25, 10, 0), True)
    assert follow_up.send_at == datetime(2026, 10, 25, 9, 0, tzinfo=UTC)

"""When cadence messages go: late discovery, clinic-local days, lapse and pauses,
and the clinic's own settings and time zone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scheduler.core.cadence import cadence_messages
from scheduler.core.config import Rules
from scheduler.core.domain import AppointmentFact, AppointmentStatus, Phase, Reason
from tests.unit.clinic_time import BERLIN, clinic_rules, local, send_times
from tests.unit.facts import JST, appointment, jst, patient

NUDGE, FOLLOW_UP = Reason.CADENCE_NUDGE, Reason.CADENCE_FOLLOW_UP
BOOKED = AppointmentStatus.BOOKED
TOKYO_RULES = Rules()
BERLIN_RULES = clinic_rules(clinic={"timezone": "Europe/Berlin"})

# An acute patient seen on Monday 2 November: nudge due Thursday the 5th at 10:00,
# follow-up Saturday the 7th at 10:00.
VISIT = jst(11, 2, 15, 0)


def planned_at(
    now: datetime, *later: AppointmentFact, rules: Rules = TOKYO_RULES
) -> dict[Reason, datetime]:
    """When each cadence message for the patient seen at VISIT would go."""
    facts = patient(appointment(VISIT), *later)
    return send_times(cadence_messages(facts, now, rules), rules.timezone)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        pytest.param(
            jst(11, 5, 8, 59),
            {NUDGE: jst(11, 5, 10, 0), FOLLOW_UP: jst(11, 7, 10, 0)},
            id="nudge-day-08:59-waits-for-ten",
        ),
        pytest.param(
            jst(11, 5, 10, 0),
            {NUDGE: jst(11, 5, 10, 0), FOLLOW_UP: jst(11, 7, 10, 0)},
            id="nudge-day-10:00-on-time",
        ),
        pytest.param(
            jst(11, 5, 19, 59),
            {NUDGE: jst(11, 5, 19, 59), FOLLOW_UP: jst(11, 7, 10, 0)},
            id="nudge-day-19:59-goes-at-once",
        ),
        pytest.param(
            jst(11, 5, 20, 0),
            {NUDGE: jst(11, 6, 9, 0), FOLLOW_UP: jst(11, 7, 10, 0)},
            id="nudge-day-20:00-waits-for-next-opening",
        ),
        pytest.param(
            jst(11, 6, 19, 59),
            {NUDGE: jst(11, 6, 19, 59), FOLLOW_UP: jst(11, 7, 10, 0)},
            id="eve-of-follow-up-19:59-both",
        ),
        pytest.param(
            jst(11, 6, 20, 0),
            {FOLLOW_UP: jst(11, 7, 10, 0)},
            id="eve-of-follow-up-20:00-nudge-would-share-its-day",
        ),
        pytest.param(jst(11, 7, 8, 59), {FOLLOW_UP: jst(11, 7, 10, 0)}, id="follow-up-day-08:59"),
        pytest.param(jst(11, 7, 10, 30), {FOLLOW_UP: jst(11, 7, 10, 30)}, id="follow-up-day-10:30"),
        pytest.param(jst(11, 7, 20, 0), {FOLLOW_UP: jst(11, 8, 9, 0)}, id="follow-up-day-20:00"),
    ],
)
def test_late_nudge_goes_at_the_next_opening_unless_it_would_meet_the_follow_up(
    now: datetime, expected: dict[Reason, datetime]
) -> None:
    assert planned_at(now) == expected


@pytest.mark.parametrize(
    "visit",
    [
        pytest.param(jst(11, 2, 0, 30), id="00:30-jst-is-the-previous-utc-day"),
        pytest.param(jst(11, 2, 23, 30), id="23:30-jst"),
    ],
)
def test_nudge_day_counts_from_the_clinic_day_of_the_visit(visit: datetime) -> None:
    messages = cadence_messages(patient(appointment(visit)), visit, TOKYO_RULES)
    assert {m.occurrence for m in messages} == {"2026-11-02"}
    assert send_times(messages, JST)[NUDGE] == jst(11, 5, 10, 0)


@pytest.mark.parametrize(
    ("visit", "now", "expected"),
    [
        pytest.param(
            jst(9, 1, 15, 0),
            jst(10, 31, 12, 0),
            {FOLLOW_UP: jst(10, 31, 12, 0)},
            id="60-days-still-followed-up",
        ),
        pytest.param(jst(9, 1, 15, 0), jst(11, 1, 9, 0), {}, id="61-days-lapsed"),
        pytest.param(
            jst(9, 1, 23, 30),
            jst(10, 31, 19, 59),
            {FOLLOW_UP: jst(10, 31, 19, 59)},
            id="60-clinic-days-late-evening-visit",
        ),
        pytest.param(
            jst(9, 1, 23, 30),
            jst(11, 1, 0, 0),
            {},
            id="61-clinic-days-though-60-days-30-minutes",
        ),
    ],
)
def test_patient_lapses_once_the_last_visit_is_more_than_sixty_clinic_days_ago(
    visit: datetime, now: datetime, expected: dict[Reason, datetime]
) -> None:
    facts = patient(appointment(visit), phase=Phase.MAINTENANCE)
    assert send_times(cadence_messages(facts, now, TOKYO_RULES), JST) == expected


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        pytest.param(jst(11, 22, 12, 0), {FOLLOW_UP: jst(11, 22, 12, 0)}, id="day-20"),
        pytest.param(jst(11, 23, 12, 0), {}, id="day-21"),
    ],
)
def test_lapse_follows_the_configured_number_of_days(
    now: datetime, expected: dict[Reason, datetime]
) -> None:
    rules = clinic_rules(cadence={"lapsed_after_days": 20})
    facts = patient(appointment(VISIT), phase=Phase.MAINTENANCE)
    assert send_times(cadence_messages(facts, now, rules), JST) == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(BOOKED, {}, id="booked-pauses"),
        pytest.param(
            AppointmentStatus.CANCELLED,
            {NUDGE: jst(11, 6, 12, 0), FOLLOW_UP: jst(11, 7, 10, 0)},
            id="cancelled-does-not-pause",
        ),
    ],
)
def test_only_a_booking_still_ahead_pauses_the_cadence(
    status: AppointmentStatus, expected: dict[Reason, datetime]
) -> None:
    ahead = appointment(jst(11, 10, 10, 0), status)
    assert planned_at(jst(11, 6, 12, 0), ahead) == expected


@pytest.mark.parametrize(
    ("later", "expected"),
    [
        pytest.param(
            appointment(jst(11, 4, 10, 0), BOOKED),
            {NUDGE: jst(11, 7, 10, 0), FOLLOW_UP: jst(11, 9, 10, 0)},
            id="past-booked-counts-as-a-visit",
        ),
        pytest.param(
            appointment(jst(11, 6, 12, 0), BOOKED),
            {NUDGE: jst(11, 9, 10, 0), FOLLOW_UP: jst(11, 11, 10, 0)},
            id="booked-starting-now-counts-as-a-visit",
        ),
        pytest.param(
            appointment(jst(11, 4, 10, 0), AppointmentStatus.NO_SHOW),
            {NUDGE: jst(11, 6, 12, 0), FOLLOW_UP: jst(11, 7, 10, 0)},
            id="no-show-is-not-a-visit",
        ),
        pytest.param(
            appointment(jst(11, 4, 10, 0), AppointmentStatus.CANCELLED),
            {NUDGE: jst(11, 6, 12, 0), FOLLOW_UP: jst(11, 7, 10, 0)},
            id="cancelled-is-not-a-visit",
        ),
    ],
)
def test_an_appointment_since_the_visit_starts_a_new_episode_only_if_it_was_kept(
    later: AppointmentFact, expected: dict[Reason, datetime]
) -> None:
    assert planned_at(jst(11, 6, 12, 0), later) == expected


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        pytest.param(
            Phase.REHAB,
            {NUDGE: jst(11, 12, 11, 30), FOLLOW_UP: jst(11, 13, 11, 30)},
            id="rehab-configured-10-then-1",
        ),
        pytest.param(
            Phase.ACUTE,
            {NUDGE: jst(11, 5, 11, 30), FOLLOW_UP: jst(11, 7, 11, 30)},
            id="acute-keeps-its-defaults",
        ),
    ],
)
def test_cadence_days_and_hour_come_from_the_settings_file(
    phase: Phase, expected: dict[Reason, datetime]
) -> None:
    rules = clinic_rules(
        cadence={
            "send_at": "11:30",
            "nudge_after_days": {"rehab": 10},
            "follow_up_days": {"rehab": 1},
        }
    )
    facts = patient(appointment(VISIT), phase=phase)
    assert send_times(cadence_messages(facts, VISIT, rules), JST) == expected


@pytest.mark.parametrize(
    ("send_at", "expected"),
    [
        pytest.param(
            "07:00",
            {NUDGE: jst(11, 5, 9, 0), FOLLOW_UP: jst(11, 7, 9, 0)},
            id="before-opening-waits-for-it",
        ),
        pytest.param(
            "20:30",
            {NUDGE: jst(11, 6, 9, 0), FOLLOW_UP: jst(11, 8, 9, 0)},
            id="after-closing-goes-next-morning",
        ),
    ],
)
def test_a_cadence_hour_outside_the_window_moves_to_the_next_opening(
    send_at: str, expected: dict[Reason, datetime]
) -> None:
    rules = clinic_rules(cadence={"send_at": send_at})
    assert planned_at(VISIT, rules=rules) == expected


@pytest.mark.parametrize(
    ("rules", "occurrence", "nudge_utc"),
    [
        pytest.param(
            TOKYO_RULES, "2026-10-24", datetime(2026, 10, 27, 1, 0, tzinfo=UTC), id="tokyo"
        ),
        pytest.param(
            BERLIN_RULES, "2026-10-23", datetime(2026, 10, 26, 9, 0, tzinfo=UTC), id="berlin"
        ),
    ],
)
def test_the_same_visit_falls_on_the_clinic_day_of_the_configured_time_zone(
    rules: Rules, occurrence: str, nudge_utc: datetime
) -> None:
    # 21:30 UTC on 23 October is 23:30 that day in Berlin, 06:30 the next day in Tokyo.
    visit = datetime(2026, 10, 23, 21, 30, tzinfo=UTC)
    [nudge, _] = cadence_messages(patient(appointment(visit)), visit, rules)
    assert (nudge.occurrence, nudge.send_at) == (occurrence, nudge_utc)


@pytest.mark.parametrize(
    ("visit", "nudge_utc", "follow_up_utc"),
    [
        pytest.param(
            local(BERLIN, 3, 26, 11, 0),
            datetime(2026, 3, 29, 8, 0, tzinfo=UTC),
            datetime(2026, 3, 31, 8, 0, tzinfo=UTC),
            id="clocks-go-forward-on-29-march",
        ),
        pytest.param(
            local(BERLIN, 10, 23, 11, 0),
            datetime(2026, 10, 26, 9, 0, tzinfo=UTC),
            datetime(2026, 10, 28, 9, 0, tzinfo=UTC),
            id="clocks-go-back-on-25-october",
        ),
    ],
)
def test_cadence_messages_keep_ten_oclock_local_across_daylight_saving(
    visit: datetime, nudge_utc: datetime, follow_up_utc: datetime
) -> None:
    messages = cadence_messages(patient(appointment(visit)), visit, BERLIN_RULES)
    assert {m.reason: m.send_at for m in messages} == {NUDGE: nudge_utc, FOLLOW_UP: follow_up_utc}
    assert {m.send_at.astimezone(BERLIN).hour for m in messages} == {10}


def test_a_missed_appointment_neither_restarts_nor_stops_the_episode() -> None:
    missed = appointment(jst(11, 3, 10, 0), AppointmentStatus.NO_SHOW)
    facts = patient(appointment(VISIT), missed)
    messages = cadence_messages(facts, jst(11, 3, 12, 0), TOKYO_RULES)
    assert [(m.reason, m.occurrence) for m in messages] == [
        (NUDGE, "2026-11-02"),
        (FOLLOW_UP, "2026-11-02"),
    ]


def test_cadence_send_moments_are_stored_in_utc() -> None:
    messages = cadence_messages(patient(appointment(VISIT)), VISIT, TOKYO_RULES)
    assert {m.send_at.tzinfo for m in messages} == {UTC}

"""The visit-cadence rules: nudge, follow-up, late discovery, lapsed patients."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from scheduler.core.cadence import cadence_messages, last_visit
from scheduler.core.config import Rules
from scheduler.core.domain import AppointmentStatus, Phase, Reason
from tests.unit.facts import JST, appointment, jst, patient

RULES = Rules()
VISIT = jst(11, 2, 15, 0)  # a Monday afternoon


def schedule(facts_now: datetime, **patient_args: object) -> dict[Reason, datetime]:
    facts = patient(appointment(VISIT), **patient_args)  # type: ignore[arg-type]
    return {m.reason: m.send_at.astimezone(JST) for m in cadence_messages(facts, facts_now, RULES)}


@pytest.mark.parametrize(
    ("phase", "nudge_day", "follow_up_day"),
    [
        pytest.param(Phase.ACUTE, 5, 7, id="acute-3-then-2"),
        pytest.param(Phase.REHAB, 8, 12, id="rehab-6-then-4"),
        pytest.param(Phase.MAINTENANCE, 14, 21, id="maintenance-12-then-7"),
    ],
)
def test_nudge_and_follow_up_fall_at_ten_on_the_phase_days(
    phase: Phase, nudge_day: int, follow_up_day: int
) -> None:
    assert schedule(VISIT + timedelta(hours=1), phase=phase) == {
        Reason.CADENCE_NUDGE: jst(11, nudge_day, 10, 0),
        Reason.CADENCE_FOLLOW_UP: jst(11, follow_up_day, 10, 0),
    }


def test_nudge_discovered_late_goes_at_the_next_opening() -> None:
    # Acute: nudge due on the 5th; first planned on the 6th at 07:00.
    assert schedule(jst(11, 6, 7, 0)) == {
        Reason.CADENCE_NUDGE: jst(11, 6, 9, 0),
        Reason.CADENCE_FOLLOW_UP: jst(11, 7, 10, 0),
    }


def test_nudge_discovered_after_its_follow_up_day_leaves_only_the_follow_up() -> None:
    assert schedule(jst(11, 8, 12, 0)) == {Reason.CADENCE_FOLLOW_UP: jst(11, 8, 12, 0)}


def test_late_nudge_never_shares_a_day_with_the_follow_up() -> None:
    # The evening before the follow-up: the nudge's next opening is the follow-up's day.
    assert schedule(jst(11, 6, 21, 0)) == {Reason.CADENCE_FOLLOW_UP: jst(11, 7, 10, 0)}


@pytest.mark.parametrize(
    ("days_after_visit", "lapsed"),
    [pytest.param(60, False, id="60-days"), pytest.param(61, True, id="61-days")],
)
def test_patient_lapses_after_sixty_days(days_after_visit: int, lapsed: bool) -> None:
    now = jst(11, 2, 12, 0) + timedelta(days=days_after_visit)
    messages = schedule(now, phase=Phase.MAINTENANCE)
    assert (messages == {}) is lapsed


def test_a_booking_ahead_pauses_cadence_messages() -> None:
    facts = patient(appointment(VISIT), appointment(jst(11, 20, 10, 0), AppointmentStatus.BOOKED))
    assert cadence_messages(facts, jst(11, 6, 12, 0), RULES) == []


def test_the_next_visit_starts_a_new_episode() -> None:
    facts = patient(appointment(VISIT), appointment(jst(11, 6, 11, 0)))
    messages = cadence_messages(facts, jst(11, 6, 12, 0), RULES)
    assert {m.occurrence for m in messages} == {"2026-11-06"}
    assert messages[0].send_at.astimezone(JST) == jst(11, 9, 10, 0)


def test_a_past_booking_counts_as_a_visit_until_marked_otherwise() -> None:
    facts = patient(appointment(jst(11, 4, 10, 0), AppointmentStatus.BOOKED))
    assert last_visit(facts, jst(11, 5, 0, 0)) == jst(11, 4, 10, 0)


@pytest.mark.parametrize(
    "status", [AppointmentStatus.CANCELLED, AppointmentStatus.NO_SHOW], ids=lambda s: s.value
)
def test_cancelled_and_missed_appointments_are_not_visits(status: AppointmentStatus) -> None:
    facts = patient(appointment(VISIT), appointment(jst(11, 4, 10, 0), status))
    assert last_visit(facts, jst(11, 5, 0, 0)) == VISIT


@pytest.mark.parametrize(
    "patient_args",
    [
        pytest.param({"reminders": False}, id="no-reminder-consent"),
        pytest.param({"phase": None}, id="no-phase"),
    ],
)
def test_no_cadence_messages_without_consent_or_phase(patient_args: dict[str, object]) -> None:
    assert schedule(VISIT + timedelta(hours=1), **patient_args) == {}


def test_no_cadence_messages_before_a_first_visit() -> None:
    assert cadence_messages(patient(), jst(11, 6, 12, 0), RULES) == []


def test_idempotency_keys_name_reason_episode_and_patient() -> None:
    facts = patient(appointment(VISIT))
    keys = [m.key for m in cadence_messages(facts, VISIT, RULES)]
    assert keys == ["cadence_nudge:2026-11-02:7", "cadence_follow_up:2026-11-02:7"]


def test_a_visit_late_in_the_evening_counts_on_its_local_day() -> None:
    # 23:30 JST on the 2nd is the 2nd in Tokyo although it is 14:30 UTC.
    facts = patient(appointment(jst(11, 2, 23, 30)))
    [nudge, _] = cadence_messages(facts, jst(11, 3, 0, 0), RULES)
    assert nudge.send_at.astimezone(JST) == jst(11, 5, 10, 0)

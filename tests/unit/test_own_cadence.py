"""A patient's own cadence and phase changes, in the pure rules."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from scheduler.core.cadence import cadence_messages, effective_cadence
from scheduler.core.config import Rules
from scheduler.core.domain import CadenceChangeFact, PatientFacts, Phase, Reason
from tests.unit import facts

JST = ZoneInfo("Asia/Tokyo")
RULES = Rules()
VISIT = datetime(2026, 11, 2, 11, 0, tzinfo=JST)
NOW = datetime(2026, 11, 2, 12, 0, tzinfo=JST)


def patient(
    phase: Phase | None = Phase.MAINTENANCE,
    nudge: int | None = None,
    follow_up: int | None = None,
    change: CadenceChangeFact | None = None,
) -> PatientFacts:
    return facts.patient(
        facts.appointment(VISIT), phase=phase, nudge=nudge, follow_up=follow_up, change=change
    )


def send_days(facts: PatientFacts, now: datetime = NOW) -> dict[Reason, str]:
    return {
        m.reason: m.send_at.astimezone(JST).strftime("%m-%d %H:%M")
        for m in cadence_messages(facts, now, RULES)
    }


@pytest.mark.parametrize(
    ("nudge", "follow_up", "expected"),
    [
        pytest.param(None, None, {"nudge": "11-14 10:00", "follow": "11-21 10:00"}, id="defaults"),
        pytest.param(1, 1, {"nudge": "11-03 10:00", "follow": "11-04 10:00"}, id="shortest-1-1"),
        pytest.param(20, None, {"nudge": "11-22 10:00", "follow": "11-29 10:00"}, id="own-nudge"),
        pytest.param(None, 3, {"nudge": "11-14 10:00", "follow": "11-17 10:00"}, id="own-follow"),
    ],
)
def test_patient_cadence_overrides_the_phase_default(
    nudge: int | None, follow_up: int | None, expected: dict[str, str]
) -> None:
    days = send_days(patient(nudge=nudge, follow_up=follow_up))
    assert days == {
        Reason.CADENCE_NUDGE: expected["nudge"],
        Reason.CADENCE_FOLLOW_UP: expected["follow"],
    }


def test_longest_cadence_of_90_days_is_beyond_the_lapse_and_sends_nothing() -> None:
    # 90 days exceeds the default 60-day lapse: the patient lapses before the nudge.
    at_nudge_day = datetime(2027, 1, 31, 10, 0, tzinfo=JST)
    assert cadence_messages(patient(nudge=90), at_nudge_day, RULES) == []


def test_effective_cadence_names_where_each_value_comes_from() -> None:
    cadence = effective_cadence(patient(Phase.ACUTE, follow_up=5), RULES)
    assert cadence is not None
    assert (cadence.nudge_after_days, cadence.nudge_source) == (3, "acute default")
    assert (cadence.follow_up_days, cadence.follow_up_source) == (5, "patient")


def test_patient_without_phase_has_no_cadence() -> None:
    assert effective_cadence(patient(phase=None), RULES) is None


def test_change_after_the_last_visit_starts_a_new_episode_on_its_day() -> None:
    change = CadenceChangeFact(id=4, changed_at=datetime(2026, 11, 5, 9, 0, tzinfo=JST))
    now = datetime(2026, 11, 5, 9, 5, tzinfo=JST)
    messages = cadence_messages(patient(Phase.REHAB, change=change), now, RULES)
    assert [(m.reason, m.occurrence) for m in messages] == [
        (Reason.CADENCE_NUDGE, "2026-11-05~c4"),
        (Reason.CADENCE_FOLLOW_UP, "2026-11-05~c4"),
    ]
    assert messages[0].send_at == datetime(2026, 11, 11, 10, 0, tzinfo=JST)


def test_change_before_the_last_visit_leaves_the_visit_as_the_episode_start() -> None:
    change = CadenceChangeFact(id=4, changed_at=datetime(2026, 11, 1, 9, 0, tzinfo=JST))
    messages = cadence_messages(patient(Phase.REHAB, change=change), NOW, RULES)
    assert {m.occurrence for m in messages} == {"2026-11-02"}

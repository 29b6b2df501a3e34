"""When a patient's due messages can next change with time alone: the planner skips
them until then, so it must never be later than the rules' own change."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from scheduler.core.config import Rules
from scheduler.core.domain import AppointmentStatus, PatientFacts, Phase
from scheduler.core.replan import next_change, settings_fingerprint
from scheduler.core.rules import messages_due
from tests.unit.facts import appointment, jst, patient

RULES = Rules()
VISIT = jst(11, 2, 15, 0)  # a Monday afternoon; acute: nudge on the 5th, follow-up on the 7th


def _due(facts: PatientFacts, now: datetime) -> set[tuple[str, bool]]:
    return {(m.key, m.may_create) for m in messages_due(facts, now, RULES)}


def test_a_booking_ahead_is_planned_again_at_its_reminders_moment() -> None:
    facts = patient(appointment(VISIT), appointment(jst(11, 10, 11), AppointmentStatus.BOOKED))
    moment = next_change(facts, jst(11, 3, 12), RULES)
    assert moment is not None and moment - jst(11, 9, 18) == timedelta(microseconds=1)


def test_a_booking_is_planned_again_when_it_starts() -> None:
    facts = patient(appointment(VISIT), appointment(jst(11, 10, 11), AppointmentStatus.BOOKED))
    assert next_change(facts, jst(11, 9, 19), RULES) == jst(11, 10, 11)


def test_a_patient_nearing_the_lapse_is_planned_again_the_day_it_lapses() -> None:
    facts = patient(appointment(jst(9, 1, 15)))
    assert next_change(facts, jst(10, 30, 12), RULES) == jst(11, 1)


def test_an_overdue_nudge_is_planned_again_when_the_follow_up_takes_its_place() -> None:
    facts = patient(appointment(VISIT))
    now = jst(11, 6, 12)  # the nudge is overdue (the 5th), the follow-up is tomorrow
    moment = next_change(facts, now, RULES)
    # The window closes at 20:00: from then on the next opening is the follow-up's day.
    assert moment == jst(11, 6, 20)
    assert len(_due(facts, moment)) == 1
    assert len(_due(facts, moment - timedelta(seconds=1))) == 2


def test_a_patient_with_nothing_ahead_waits_for_new_facts() -> None:
    facts = patient(appointment(VISIT), phase=None, reminders=False)
    assert next_change(facts, jst(11, 3), RULES) is not None  # the lapse, at most
    assert next_change(patient(reminders=False), jst(11, 3), RULES) is None


def test_no_due_message_changes_before_the_moment_for_random_patients() -> None:
    rng = random.Random(2026)
    for _ in range(150):
        start = jst(10, 1) + timedelta(hours=rng.randrange(24 * 60))
        appointments = [
            appointment(
                start + timedelta(hours=rng.randrange(-24 * 40, 24 * 20)),
                rng.choice(list(AppointmentStatus)),
            )
            for _ in range(rng.randint(0, 4))
        ]
        facts = patient(*appointments, phase=rng.choice(list(Phase)))
        now = start + timedelta(minutes=rng.randrange(60 * 24 * 30))
        moment = next_change(facts, now, RULES)
        horizon = moment if moment is not None else now + timedelta(days=120)
        before = _due(facts, now)
        for minutes in range(17, int((horizon - now).total_seconds() // 60), 131):
            assert _due(facts, now + timedelta(minutes=minutes)) == before


def test_the_settings_fingerprint_changes_with_the_rules_only() -> None:
    assert settings_fingerprint(Rules()) == settings_fingerprint(Rules())
    changed = Rules(timezone=RULES.timezone, window=RULES.window)
    assert settings_fingerprint(changed) == settings_fingerprint(RULES)
    later = RULES.cadence.__class__(lapsed_after_days=RULES.cadence.lapsed_after_days + 1)
    assert settings_fingerprint(Rules(cadence=later)) != settings_fingerprint(RULES)

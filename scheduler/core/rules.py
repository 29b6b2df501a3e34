"""Everything a patient is due, from all rules (pure)."""

from __future__ import annotations

from datetime import datetime

from scheduler.core.appointments import appointment_reminders, no_show_follow_ups
from scheduler.core.cadence import cadence_messages
from scheduler.core.config import Rules
from scheduler.core.domain import Due, PatientFacts


def messages_due(facts: PatientFacts, now: datetime, rules: Rules) -> list[Due]:
    return [
        *cadence_messages(facts, now, rules),
        *appointment_reminders(facts, now, rules),
        *no_show_follow_ups(facts, now, rules),
    ]

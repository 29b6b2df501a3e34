"""Builders of the plain facts the rules read, for tests of the pure core."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count
from zoneinfo import ZoneInfo

from scheduler.core.domain import (
    AppointmentFact,
    AppointmentStatus,
    CadenceChangeFact,
    ChannelName,
    Contacts,
    PatientFacts,
    Phase,
)

JST = ZoneInfo("Asia/Tokyo")
_ids = count(1)


def jst(month: int, day: int, hour: int = 0, minute: int = 0, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=JST)


def appointment(
    starts_at: datetime, status: AppointmentStatus = AppointmentStatus.VISITED
) -> AppointmentFact:
    return AppointmentFact(next(_ids), starts_at.astimezone(UTC), status)


def patient(
    *appointments: AppointmentFact,
    phase: Phase | None = Phase.ACUTE,
    reminders: bool = True,
    preferred: ChannelName = ChannelName.LINE,
    line: bool = True,
    email: bool = False,
    nudge: int | None = None,
    follow_up: int | None = None,
    change: CadenceChangeFact | None = None,
) -> PatientFacts:
    return PatientFacts(
        id=7,
        phase=phase,
        reminders_opt_in=reminders,
        newsletter_opt_in=False,
        preferred_channel=preferred,
        contacts=Contacts(line=line, email=email),
        appointments=appointments,
        nudge_after_days=nudge,
        follow_up_days=follow_up,
        cadence_change=change,
    )

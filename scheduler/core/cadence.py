"""The visit-cadence rules (pure): when to nudge a patient to book, and when to
follow up once.

An episode starts at the patient's last visit. The nudge falls `nudge_after_days`
after it, the follow-up `follow_up_days` after the nudge; a booking in the future
pauses the episode and the next visit starts a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from scheduler.core.config import Rules
from scheduler.core.domain import AppointmentStatus, Due, PatientFacts, Reason
from scheduler.core.window import at_local, local_date, next_opening

# A booked appointment whose time has passed counts as a visit until the clinic marks
# it otherwise: the conservative reading, since it only delays a nudge. (Named once
# here: on Python 3.11 reading a member off an Enum class costs more than the test.)
_COUNTS_AS_VISIT = (AppointmentStatus.VISITED, AppointmentStatus.BOOKED)


def last_visit(facts: PatientFacts, now: datetime) -> datetime | None:
    """The latest visit up to `now` (see `_COUNTS_AS_VISIT`)."""
    visits = [
        a.starts_at
        for a in facts.appointments
        if a.starts_at <= now and a.status in _COUNTS_AS_VISIT
    ]
    return max(visits, default=None)


def has_future_booking(facts: PatientFacts, now: datetime) -> bool:
    return any(
        a.status is AppointmentStatus.BOOKED and a.starts_at > now for a in facts.appointments
    )


def is_lapsed(facts: PatientFacts, now: datetime, rules: Rules) -> bool:
    visit = last_visit(facts, now)
    return visit is not None and _lapsed_since(visit, now, rules)


def _lapsed_since(visit: datetime, now: datetime, rules: Rules) -> bool:
    days_since = (local_date(now, rules.timezone) - local_date(visit, rules.timezone)).days
    return days_since > rules.cadence.lapsed_after_days


@dataclass(frozen=True)
class EffectiveCadence:
    nudge_after_days: int
    follow_up_days: int
    nudge_source: str  # "patient" or "<phase> default"
    follow_up_source: str


def effective_cadence(facts: PatientFacts, rules: Rules) -> EffectiveCadence | None:
    """The patient's own cadence where set, else the default for their phase, and
    where each comes from."""
    days = cadence_days(facts, rules)
    if facts.phase is None or days is None:
        return None
    default = f"{facts.phase.value} default"
    return EffectiveCadence(
        nudge_after_days=days[0],
        follow_up_days=days[1],
        nudge_source="patient" if facts.nudge_after_days else default,
        follow_up_source="patient" if facts.follow_up_days else default,
    )


def cadence_days(facts: PatientFacts, rules: Rules) -> tuple[int, int] | None:
    """The days from the episode's start to the nudge, and from the nudge to the
    follow-up: the patient's own where set, else the default for their phase."""
    if facts.phase is None:
        return None
    return (
        facts.nudge_after_days or rules.cadence.nudge_after_days[facts.phase],
        facts.follow_up_days or rules.cadence.follow_up_days[facts.phase],
    )


def episode_start(facts: PatientFacts, visit: datetime, tz: ZoneInfo) -> tuple[date, str]:
    """The day the current episode started, and its name for idempotency keys.

    An episode starts at the last visit, or at a later phase or cadence change: a
    nudge planned under the old cadence then gives way to one under the new.
    """
    change = facts.cadence_change
    if change is not None and change.changed_at > visit:
        day = local_date(change.changed_at, tz)
        return day, f"{day.isoformat()}~c{change.id}"
    day = local_date(visit, tz)
    return day, day.isoformat()


def cadence_messages(facts: PatientFacts, now: datetime, rules: Rules) -> list[Due]:
    """The nudge and follow-up this patient should get in the current episode."""
    if not facts.reminders_opt_in:
        return []
    days = cadence_days(facts, rules)
    if days is None:
        return []
    visit = last_visit(facts, now)
    if visit is None or has_future_booking(facts, now) or _lapsed_since(visit, now, rules):
        return []

    tz = rules.timezone
    start, episode = episode_start(facts, visit, tz)
    nudge_after_days, follow_up_days = days
    nudge_day = start + timedelta(days=nudge_after_days)
    follow_up_day = nudge_day + timedelta(days=follow_up_days)
    nudge_at = _not_before(at_local(nudge_day, rules.cadence.send_at, tz), now, rules)
    follow_up_at = _not_before(at_local(follow_up_day, rules.cadence.send_at, tz), now, rules)

    messages = [Due(facts.id, Reason.CADENCE_FOLLOW_UP, episode, follow_up_at)]
    # A nudge discovered late goes at the next opening, but never on the follow-up's
    # day or after it: then the follow-up alone speaks for both (one cadence message
    # a day at most).
    if local_date(nudge_at, tz) < local_date(follow_up_at, tz):
        messages.insert(0, Due(facts.id, Reason.CADENCE_NUDGE, episode, nudge_at))
    return messages


def _not_before(moment: datetime, now: datetime, rules: Rules) -> datetime:
    return next_opening(max(moment, now), rules.window, rules.timezone)

"""When a patient's due messages can next change with time alone (pure).

The worker plans a patient again only when their facts change or this moment
comes, so it must never be later than the first moment at which `messages_due`
would give another set of messages (another key, or a message that may no longer
be created). Earlier is always safe: planning finds nothing new and asks again.

What time alone changes, rule by rule:
- an appointment's start: it becomes a visit or a no-show, a booking stops being
  ahead, its reminder is no longer due;
- the reminder's own moment: after it, a reminder is not created late;
- the day after a no-show's follow-up day: the follow-up is no longer created late;
- the lapse: a patient not seen for `lapsed_after_days` gets no cadence messages;
- a nudge that could not go by its day: it gives way to the follow-up once the next
  opening of the send window falls on the follow-up's day.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from enum import Enum
from functools import lru_cache
from zoneinfo import ZoneInfo

from scheduler.core.cadence import cadence_messages, last_visit
from scheduler.core.config import Rules, SendWindow
from scheduler.core.domain import AppointmentStatus, Due, PatientFacts, Reason
from scheduler.core.window import at_local, local_date, next_opening

_MIDNIGHT = time(0, 0)
_PRECISION = timedelta(microseconds=1)
_MINUTE = timedelta(minutes=1)


def next_change(
    facts: PatientFacts, now: datetime, rules: Rules, due: Sequence[Due] | None = None
) -> datetime | None:
    """The first moment after `now` at which this patient's due messages (`due`, if
    the caller has them: `messages_due` at `now`) may differ, or None if only new
    facts can change them."""
    cadence = (
        cadence_messages(facts, now, rules)
        if due is None
        else [m for m in due if m.reason.is_cadence]
    )
    moments = [
        *([facts.next_change_at] if facts.next_change_at else []),
        *_appointment_moments(facts, now, rules),
        *_lapse(facts, now, rules),
        *_nudge_gives_way(cadence, now, rules),
    ]
    return min((m for m in moments if m > now), default=None)


def _appointment_moments(facts: PatientFacts, now: datetime, rules: Rules) -> list[datetime]:
    tz = rules.timezone
    moments = []
    for appointment in facts.appointments:
        if appointment.starts_at > now:
            moments.append(appointment.starts_at)
            if appointment.status is AppointmentStatus.BOOKED:
                day = local_date(appointment.starts_at, tz) - timedelta(
                    days=rules.reminder.days_before
                )
                # Just after its moment, a reminder may no longer be created.
                moments.append(at_local(day, rules.reminder.send_at, tz) + _PRECISION)
        elif appointment.status is AppointmentStatus.NO_SHOW:
            follow_up_day = local_date(appointment.starts_at, tz) + timedelta(
                days=rules.no_show.days_after
            )
            moments.append(at_local(follow_up_day + timedelta(days=1), _MIDNIGHT, tz))
    return moments


def _lapse(facts: PatientFacts, now: datetime, rules: Rules) -> list[datetime]:
    visit = last_visit(facts, now)
    if visit is None:
        return []
    lapsed_on = local_date(visit, rules.timezone) + timedelta(
        days=rules.cadence.lapsed_after_days + 1
    )
    return [at_local(lapsed_on, _MIDNIGHT, rules.timezone)]


def _nudge_gives_way(cadence: Sequence[Due], now: datetime, rules: Rules) -> list[datetime]:
    """When the nudge due now drops out in favour of the follow-up (see
    `_first_minute_on_the_day_of`)."""
    follow_ups = [m for m in cadence if m.reason is Reason.CADENCE_FOLLOW_UP]
    if len(cadence) < 2 or not follow_ups:
        return []  # no nudge due now
    moment = _first_minute_on_the_day_of(
        now.replace(second=0, microsecond=0), follow_ups[0].send_at, rules.window, rules.timezone
    )
    return [] if moment is None else [moment]


@lru_cache(maxsize=1 << 12)
def _first_minute_on_the_day_of(
    start: datetime, follow_up_at: datetime, window: SendWindow, tz: ZoneInfo
) -> datetime | None:
    """The first whole minute from `start` up to `follow_up_at` whose next opening of
    the window falls on the follow-up's day or later; None if `start` itself does, or
    no such minute comes. The next opening only moves forward with time, and its day
    changes only at a whole minute (the window's edges, midnight), so the minute is
    found by bisection. Cached: a clinic's follow-ups share a few hundred moments."""
    day = local_date(follow_up_at, tz)

    def gave_way(minutes: int) -> bool:
        moment = start + timedelta(minutes=minutes)
        return local_date(next_opening(moment, window, tz), tz) >= day

    early = 0  # `start` itself: the nudge is still due then
    late = -(-(follow_up_at - start) // _MINUTE)
    if gave_way(early) or not gave_way(late):
        return None
    while late - early > 1:
        middle = (early + late) // 2
        if gave_way(middle):
            late = middle
        else:
            early = middle
    return start + timedelta(minutes=late)


# Raised with every change of the rules' code that changes what they decide: patients
# planned by older code (whose `replan_at` it computed) are then planned again.
RULES_VERSION = 1


def settings_fingerprint(*parts: object) -> str:
    """A digest of the settings the planner reads (rules, campaigns, closures) and
    of the rules' version: when it differs from the last plan's, every patient is
    planned again."""
    text = json.dumps(
        _canonical((RULES_VERSION, *parts)), ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: object) -> object:
    """`value` as JSON-able data that is the same in every process (sets sorted)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return [type(value).__name__, {f.name: _canonical(getattr(value, f.name)) for f in fields}]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return sorted([str(key), _canonical(item)] for key, item in value.items())
    if isinstance(value, set | frozenset):
        return sorted(json.dumps(_canonical(item), sort_keys=True) for item in value)
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, ZoneInfo):
        return value.key
    if isinstance(value, date | time | timedelta):
        return str(value)
    return repr(value)

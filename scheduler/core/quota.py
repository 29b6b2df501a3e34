"""Sharing LINE's monthly quota between messages (pure).

When what waits for LINE this month would not fit in what is left, the more important
messages get LINE first; the rest go by email where the patient allows it, or wait.
The month's budget itself is a row every worker reserves from (scheduler.outbox.budget);
this module only says how many of the messages asking may have one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, time
from zoneinfo import ZoneInfo

from scheduler.core.domain import Reason

# Most important first; the practitioner's own digest is last, since the clinic
# can read it by email.
PRIORITY: tuple[Reason, ...] = (
    Reason.APPOINTMENT_REMINDER,
    Reason.NO_SHOW_FOLLOW_UP,
    Reason.CADENCE_NUDGE,
    Reason.CADENCE_FOLLOW_UP,
    Reason.NEWSLETTER,
    Reason.DAILY_DIGEST,
)
QUOTA_HELD = "LINE quota"


def month_bounds(now: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The start of this month and of the next, in the clinic's time zone."""
    local = now.astimezone(tz)
    start = datetime.combine(local.date().replace(day=1), time(), tz)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return start, datetime.combine(start.date().replace(year=year, month=month), time(), tz)


def month_of(now: datetime, tz: ZoneInfo) -> str:
    """The clinic-local month of `now`, as the budget names it: "2026-11"."""
    return f"{now.astimezone(tz):%Y-%m}"


def remaining(limit: int | None, used: int) -> int | None:
    """Messages left this month; None when the plan has no limit."""
    return None if limit is None else max(limit - used, 0)


def grant(
    left: int | None, waiting: Mapping[Reason, int], wanted: Mapping[Reason, int]
) -> dict[Reason, int]:
    """How many of the `wanted` LINE messages (by reason) may have a place now.

    `left` is what the month still has (None: no limit); `waiting` counts every LINE
    message of the month that has no place yet, the wanted ones included. Most
    important first, a reason gets what is left once every more important message
    still waiting has had its turn, so a busy month keeps its reminders' places even
    when the newsletters ask first.
    """
    if left is None:
        return {reason: count for reason, count in wanted.items() if count}
    granted: dict[Reason, int] = {}
    for position, reason in enumerate(PRIORITY):
        want = wanted.get(reason, 0)
        if not want:
            continue
        ahead = sum(waiting.get(other, 0) - granted.get(other, 0) for other in PRIORITY[:position])
        granted[reason] = min(want, max(left - ahead, 0))
        left -= granted[reason]
    return granted

"""Clinic-local time and the send window (pure).

The functions are cached: planning a clinic asks them the same questions (its
appointments fall on a few thousand slots, its messages on a few hundred days) a
hundred thousand times, and a time zone conversion is not cheap.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from scheduler.core.config import SendWindow


@lru_cache(maxsize=1 << 16)
def local_date(moment: datetime, tz: ZoneInfo) -> date:
    return moment.astimezone(tz).date()


@lru_cache(maxsize=1 << 16)
def at_local(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The UTC moment of a clinic-local wall-clock time on a given day."""
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


def _minute_of_day(moment: datetime, tz: ZoneInfo) -> int:
    local = moment.astimezone(tz)
    return local.hour * 60 + local.minute


def is_open(moment: datetime, window: SendWindow, tz: ZoneInfo) -> bool:
    return window.opens_minute <= _minute_of_day(moment, tz) < window.closes_minute


@lru_cache(maxsize=1 << 16)
def next_opening(moment: datetime, window: SendWindow, tz: ZoneInfo) -> datetime:
    """`moment` itself if the window is open then, else the window's next opening."""
    if is_open(moment, window, tz):
        return moment.astimezone(UTC)
    day = local_date(moment, tz)
    if _minute_of_day(moment, tz) >= window.closes_minute:
        day += timedelta(days=1)
    opens = time(window.opens_minute // 60, window.opens_minute % 60)
    return at_local(day, opens, tz)

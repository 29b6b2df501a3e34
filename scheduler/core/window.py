"""Clinic-local time and the send window (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from scheduler.core.config import SendWindow


def local_date(moment: datetime, tz: ZoneInfo) -> date:
    return moment.astimezone(tz).date()


def at_local(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The UTC moment of a clinic-local wall-clock time on a given day."""
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


def _minute_of_day(moment: datetime, tz: ZoneInfo) -> int:
    local = moment.astimezone(tz)
    return local.hour * 60 + local.minute


def is_open(moment: datetime, window: SendWindow, tz: ZoneInfo) -> bool:
    return window.opens_minute <= _minute_of_day(moment, tz) < window.closes_minute


def next_opening(moment: datetime, window: SendWindow, tz: ZoneInfo) -> datetime:
    """`moment` itself if the window is open then, else the window's next opening."""
    if is_open(moment, window, tz):
        return moment.astimezone(UTC)
    day = local_date(moment, tz)
    if _minute_of_day(moment, tz) >= window.closes_minute:
        day += timedelta(days=1)
    opens = time(window.opens_minute // 60, window.opens_minute % 60)
    return at_local(day, opens, tz)

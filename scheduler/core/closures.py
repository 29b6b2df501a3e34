"""The days the clinic is closed, so that no message offers a slot on one and a booking
link can say when the clinic reopens.

A day is closed for one of three reasons, named by `closure_reason` in this order:
- a closure period of the clinic's own that comes back every year (年末年始, a summer
  break): "年末年始";
- one of Japan's public holidays, if the clinic closes on them — 国民の祝日, 振替休日 and
  国民の休日, as `jpholiday` computes them from the 祝日法: "祝日（勤労感謝の日）";
- a weekly closing day (定休日): "定休日".

`closure_spans` lists the periods and public holidays of a year as date ranges. Weekly
closing days are not in it (they would be 52 lines): show `Closures.weekly` beside
the list, as "定休日: 日曜".

A period's `start` and `end` are (month, day), both days included; a period whose end comes
before its start in the calendar runs into the next year (12-29 → 01-03). 02-29 means
"the last day of February": in common years it is 02-28, whether it starts or ends a
period, so a period never turns inside out and one "to 02-29" still ends with February.

Pure: a function of the date and the settings; jpholiday's tables are the only data.
春分の日 and 秋分の日 are officially fixed each February for the following year; for later
years jpholiday's dates are the astronomical prediction.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import jpholiday

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = date.weekday()

# Our own instance, so a `jpholiday.register(...)` elsewhere cannot add closed days.
_HOLIDAYS = jpholiday.JPHoliday()

# How far `reopens_on` looks. Weekdays and leap years repeat every 28 years (1901–2099);
# a configuration with no open day in that span has none at all.
_SEARCH_DAYS = 28 * 366


@dataclass(frozen=True)
class ClosureSpan:
    """One closure as concrete dates, both days included."""

    name: str
    first: date
    last: date

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.first <= day <= self.last


@dataclass(frozen=True)
class ClosurePeriod:
    """A closure that comes back every year; (month, day) pairs, both days included."""

    name: str
    start: tuple[int, int]
    end: tuple[int, int]

    @property
    def wraps(self) -> bool:
        """True when the period runs into the next year (12-29 → 01-03)."""
        return self.end < self.start

    def span(self, start_year: int) -> ClosureSpan:
        """The period that starts in `start_year`, as dates."""
        end_year = start_year + 1 if self.wraps else start_year
        return ClosureSpan(self.name, _on(self.start, start_year), _on(self.end, end_year))


@dataclass(frozen=True)
class Closures:
    public_holidays: bool = True  # closed on Japan's public holidays
    weekly: frozenset[int] = frozenset()  # closed weekdays (定休日), Monday = 0
    periods: tuple[ClosurePeriod, ...] = (ClosurePeriod("年末年始", (12, 29), (1, 3)),)


def closure_reason(day: date, closures: Closures) -> str | None:
    """Why the clinic is closed on `day`, or None when it is open."""
    period = period_at(day, closures.periods)
    if period is not None:
        return period.name
    if closures.public_holidays:
        holiday = holiday_name(day)
        if holiday is not None:
            return f"祝日（{holiday}）"
    if day.weekday() in closures.weekly:
        return "定休日"
    return None


def is_closed(day: date, closures: Closures) -> bool:
    return closure_reason(day, closures) is not None


def reopens_on(day: date, closures: Closures) -> date:
    """The first open day on or after `day` (`day` itself when it is open)."""
    for offset in range(_SEARCH_DAYS):
        candidate = day + timedelta(days=offset)
        if not is_closed(candidate, closures):
            return candidate
    raise ValueError(f"the clinic is closed on every day for 28 years from {day}")


def closure_spans(year: int, closures: Closures) -> list[ClosureSpan]:
    """The closure periods that overlap `year` — a period running into the next year
    appears twice: the one that began the previous December and the one that starts in
    `year` — and, when the clinic closes on them, the public holidays that no period
    already covers, named as `closure_reason` names them. Sorted by date."""
    spans = [
        span
        for period in closures.periods
        for start_year in (year - 1, year)
        if (span := period.span(start_year)).first.year <= year <= span.last.year
    ]
    if closures.public_holidays:
        spans += [
            ClosureSpan(f"祝日（{holiday.name}）", holiday.date, holiday.date)
            for holiday in _HOLIDAYS.iter_year_holidays(year)
            if period_at(holiday.date, closures.periods) is None
        ]
    return sorted(spans, key=lambda span: (span.first, span.last, span.name))


def period_start(name: str, year: int, closures: Closures) -> date | None:
    """The day the period called `name` starts in `year`; None if there is no such period."""
    for period in closures.periods:
        if period.name == name:
            return _on(period.start, year)
    return None


def holiday_name(day: date) -> str | None:
    """Japan's public holiday on `day` ("勤労感謝の日", "憲法記念日 振替休日"), or None."""
    holidays = _HOLIDAYS.holidays(day)
    return holidays[0].name if holidays else None


def _on(month_day: tuple[int, int], year: int) -> date:
    month, day = month_day
    if (month, day) == (2, 29) and not calendar.isleap(year):
        day = 28
    return date(year, month, day)


def period_at(day: date, periods: Sequence[ClosurePeriod]) -> ClosurePeriod | None:
    """The period that covers `day`, if any."""
    for period in periods:
        if any(day in period.span(start_year) for start_year in (day.year - 1, day.year)):
            return period
    return None

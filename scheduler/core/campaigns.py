"""Seasonal campaigns (pure): when a campaign occurs, who receives it, and when each
recipient's message leaves.

A campaign is one newsletter the clinic sends on a recurring occasion: the change of
season (each 土用の入り), a fixed day of the year (12-01, before the year-end rush), or
a number of days before or after one of the clinic's closures. Each time its trigger
fires is an *occurrence*, named by the campaign and the clinic-local day
(`season_change:2026-01-17`); a patient gets one message per occurrence, which the
planner guarantees with the idempotency key `reason:occurrence:patient`.

Sending is paced, because one practitioner answers every booking: messages never
exceed `per_hour` in any clock hour, are spaced evenly on a fixed grid inside the send
window, are spread over `spread_days` open days, and are never sent on a day the clinic
is closed (a patient who reads a newsletter calls or books at once; a closed clinic
cannot answer).

Nothing here reads the database or the clock: facts, `now` and the clinic's closures
are passed in (`closure_start`, `is_closed`), so this module does not depend on how
closures are configured.
"""

from __future__ import annotations

import calendar
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import chain, takewhile
from typing import overload
from zoneinfo import ZoneInfo

from scheduler.core.config import SendWindow
from scheduler.core.domain import AppointmentStatus, PatientFacts, Phase
from scheduler.core.seasons import FIRST_YEAR, LAST_YEAR, SeasonalMoment, date_of
from scheduler.core.window import at_local, local_date

# Names a campaign template may use besides scheduler.messages.context.MESSAGE_VARIABLES; the
# planner provides them (messages/README.md documents them).
CAMPAIGN_VARIABLES = frozenset({"campaign", "moment", "moment_date", "closure"})

# An id names the campaign in idempotency keys (`reason:campaign:day:patient`, so no
# colon) and, by default, its folder in messages/ (so no slash or dot).
CAMPAIGN_ID = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# Offsets stay within a year, so an occurrence of year Y always comes from an anchor
# (seasonal moment, closure) in Y-1, Y or Y+1.
MAX_OFFSET_DAYS = 365
MAX_SPREAD_DAYS = 30
MAX_PER_HOUR = 3600  # one a second: the grid below is exact to the microsecond
# A clinic closed for longer than this without a break has no open day to send on.
_MAX_CLOSED_RUN = 400
_MICROSECOND = timedelta(microseconds=1)
_MINUTE_US = 60_000_000
_HOUR_US = 60 * _MINUTE_US


@dataclass(frozen=True)
class SeasonTrigger:
    """Each of `moments` (clinic-local date), moved by `offset_days`."""

    moments: tuple[SeasonalMoment, ...]
    offset_days: int = 0
    at: time = time(10, 0)


@dataclass(frozen=True)
class DateTrigger:
    """The same month-day every year; 02-29 only in leap years."""

    month: int
    day: int
    at: time = time(10, 0)


@dataclass(frozen=True)
class ClosureTrigger:
    """`offset_days` from the first day of the clinic's closure period `closure`
    (negative: before it)."""

    closure: str
    offset_days: int = 0
    at: time = time(10, 0)


Trigger = SeasonTrigger | DateTrigger | ClosureTrigger


@dataclass(frozen=True)
class Audience:
    """Who receives a campaign, besides the consent and contact every newsletter needs.

    `phases`: None means every patient, with or without a phase.
    `visited_within_days`: a `visited` appointment at most this many days before the
    occurrence day (or after it); None means no visit is needed.
    `exclude_booked_within_days`: 0 keeps patients with bookings; N leaves out a patient
    with a booked appointment from the occurrence day up to N days after it.
    """

    phases: frozenset[Phase] | None = None
    visited_within_days: int | None = 180
    exclude_booked_within_days: int = 0


@dataclass(frozen=True)
class Pacing:
    spread_days: int = 1  # open days the messages are spread over
    per_hour: int = 30  # never more messages than this in one clock hour

    def __post_init__(self) -> None:
        if self.spread_days < 1 or self.per_hour < 1:
            raise ValueError(f"pacing needs at least one day and one message an hour: {self}")


@dataclass(frozen=True)
class Campaign:
    id: str
    template: str  # the folder in messages/
    trigger: Trigger
    audience: Audience
    pacing: Pacing
    enabled: bool = True


@dataclass(frozen=True)
class Occurrence:
    """One firing of a campaign's trigger.

    `day` is clinic-local and names the occurrence; `starts_at` (aware, UTC) is the
    trigger's time on that day. `anchor` is the day the offset counts from (the
    seasonal moment's or the closure's first day), with `moment` or `closure` saying
    which; all three are None for a month-day trigger. Templates show them.
    """

    campaign_id: str
    day: date
    starts_at: datetime
    moment: SeasonalMoment | None = None
    closure: str | None = None
    anchor: date | None = None

    @property
    def key(self) -> str:
        """The occurrence part of each delivery's idempotency key."""
        return f"{self.campaign_id}:{self.day.isoformat()}"


ClosureStart = Callable[[str, int], date | None]
IsClosed = Callable[[date], bool]


def _never_closed(day: date) -> bool:
    return False


# --- When a campaign occurs ----------------------------------------------------------


def occurrences(
    campaign: Campaign, year: int, tz: ZoneInfo, closure_start: ClosureStart
) -> list[Occurrence]:
    """Every occurrence of `campaign` whose clinic-local day falls in `year`, by day.

    An occurrence belongs to the year of its own day: 20 days before 冬の土用の入り
    (about 17 January) is in December of the year before. `closure_start(name, year)`
    gives a closure period's first day in `year`, or None if it has none.
    Seasonal moments are known for 1900–2100 (scheduler.core.seasons).
    """
    trigger = campaign.trigger
    found: list[Occurrence] = []

    def add(
        day: date,
        moment: SeasonalMoment | None = None,
        closure: str | None = None,
        anchor: date | None = None,
    ) -> None:
        if day.year == year:
            starts_at = at_local(day, trigger.at, tz)
            found.append(Occurrence(campaign.id, day, starts_at, moment, closure, anchor))

    anchor_years = [y for y in (year - 1, year, year + 1) if FIRST_YEAR <= y <= LAST_YEAR]
    if isinstance(trigger, SeasonTrigger):
        for y in anchor_years:
            for moment in trigger.moments:
                anchor = date_of(moment, y, tz)
                add(anchor + timedelta(days=trigger.offset_days), moment=moment, anchor=anchor)
    elif isinstance(trigger, DateTrigger):
        # 02-29 occurs in leap years only.
        if (trigger.month, trigger.day) != (2, 29) or calendar.isleap(year):
            add(date(year, trigger.month, trigger.day))
    else:
        for y in (year - 1, year, year + 1):
            first = closure_start(trigger.closure, y)
            if first is not None:
                day = first + timedelta(days=trigger.offset_days)
                add(day, closure=trigger.closure, anchor=first)
    unique = {o.day: o for o in found}  # the same day twice is one occurrence
    return [unique[day] for day in sorted(unique)]


def occurrences_between(
    campaigns: Iterable[Campaign],
    first: date,
    last: date,
    tz: ZoneInfo,
    closure_start: ClosureStart,
) -> list[Occurrence]:
    """Occurrences of the enabled campaigns whose day is from `first` to `last`
    (both included), by start and id: for the dry run and the coming month's view."""
    found = [
        occurrence
        for campaign in campaigns
        if campaign.enabled
        for year in range(first.year, last.year + 1)
        for occurrence in occurrences(campaign, year, tz, closure_start)
        if first <= occurrence.day <= last
    ]
    return sorted(found, key=lambda o: (o.starts_at, o.campaign_id))


def sending_days(occurrence: Occurrence, pacing: Pacing, is_closed: IsClosed) -> list[date]:
    """The `spread_days` open days an occurrence's messages are spread over: its own
    day and the next ones, skipping days the clinic is closed."""
    return list(_open_days(occurrence.day, is_closed, pacing.spread_days))


def live_occurrences(
    campaigns: Iterable[Campaign],
    now: datetime,
    tz: ZoneInfo,
    closure_start: ClosureStart,
    is_closed: IsClosed = _never_closed,
) -> list[tuple[Campaign, Occurrence]]:
    """The occurrences being sent at `now`: started (`starts_at <= now`) and with a
    sending day still to come or under way (today is on or before its last sending day,
    closed days skipped). The planner plans each of these; one that no tick saw while
    live is not sent — a seasonal greeting weeks late is worse than none."""
    today = local_date(now, tz)
    live: list[tuple[Campaign, Occurrence]] = []
    for campaign in campaigns:
        if not campaign.enabled:
            continue
        # The previous year's late-December occurrences may still be sending.
        for year in (today.year - 1, today.year):
            for occurrence in occurrences(campaign, year, tz, closure_start):
                if occurrence.starts_at > now:
                    continue
                if today <= sending_days(occurrence, campaign.pacing, is_closed)[-1]:
                    live.append((campaign, occurrence))
    return sorted(live, key=lambda pair: (pair[1].starts_at, pair[1].campaign_id))


# --- Who receives it -----------------------------------------------------------------


def audience(
    campaign: Campaign, occurrence: Occurrence, patients: Iterable[PatientFacts], tz: ZoneInfo
) -> list[int]:
    """The ids (sorted) of the patients who receive this occurrence.

    Each has agreed to newsletters and has a usable contact (LINE or email, not blocked,
    bounced or unsubscribed), is in one of the campaign's phases, visited within
    `visited_within_days` before the occurrence day, and — if the campaign says so — has
    no booking from the occurrence day up to `exclude_booked_within_days` after it (they
    already have their slot).
    """
    rules = campaign.audience
    day = occurrence.day
    chosen = []
    for facts in patients:
        if not facts.newsletter_opt_in or not (facts.contacts.line or facts.contacts.email):
            continue
        if rules.phases is not None and facts.phase not in rules.phases:
            continue
        if rules.visited_within_days is not None:
            earliest = day - timedelta(days=rules.visited_within_days)
            if not any(
                a.status is AppointmentStatus.VISITED and local_date(a.starts_at, tz) >= earliest
                for a in facts.appointments
            ):
                continue
        if rules.exclude_booked_within_days:
            latest = day + timedelta(days=rules.exclude_booked_within_days)
            if any(
                a.status is AppointmentStatus.BOOKED
                and day <= local_date(a.starts_at, tz) <= latest
                for a in facts.appointments
            ):
                continue
        chosen.append(facts.id)
    return sorted(set(chosen))


# --- When each message leaves --------------------------------------------------------


def pace(
    recipients: Sequence[int],
    occurrence: Occurrence,
    pacing: Pacing,
    window: SendWindow,
    tz: ZoneInfo,
    is_closed: IsClosed = _never_closed,
    *,
    not_before: datetime | None = None,
    until: datetime | None = None,
) -> dict[int, datetime]:
    """A send moment (aware, UTC) for each recipient (with `until`, for each whose
    moment is not after it).

    Moments sit on a grid of evenly spaced slots, `per_hour` of them in every hour from
    the window's opening (30 an hour and opening at 09:00: every 2 minutes, on the even
    minutes), inside the send window, from the occurrence's `starts_at` (or
    `not_before`, if later) on its sending days (`sending_days`: `spread_days` open
    days, closed days skipped). So no clock hour ever holds more than `per_hour`
    messages and no two leave at once.

    When the slots outnumber the recipients, the recipients are spread evenly over all
    of them — across every sending day, not bunched into the first hours — so the
    bookings they prompt spread out too. When the cap leaves too few slots, every slot
    is used and the rest go on the following open days, filling them hour by hour:
    the cap is a promise, the spread a target (`tayori campaigns` shows the audience
    to size them by).

    The order is a stable hash of (campaign, day, patient), not the id, so the same
    patients are not always first or last; the result depends only on the arguments.
    `not_before` is for the planner that finds an occurrence late (the worker was
    down): it paces from then instead of sending every missed slot at once. `until`
    is for the dry run, which looks a week ahead at an audience that may take months.
    """
    rank = _ranking(occurrence)
    ordered = sorted(set(recipients), key=lambda p: (rank(p), p))
    if not ordered:
        return {}
    start = occurrence.starts_at
    if not_before is not None and not_before > start:
        start = not_before.astimezone(UTC)
    grid = _Grid(window, tz, pacing.per_hour)
    days = sending_days(occurrence, pacing, is_closed)
    # The first sending day begins at the trigger's time of day even when the
    # occurrence's own day was closed; later days at the window's opening.
    at = occurrence.starts_at.astimezone(tz).time()
    first_start = max(start, at_local(days[0], at, tz))
    spans = [grid.span(day, first_start if n == 0 else start) for n, day in enumerate(days)]
    capacity = sum(len(span) for span in spans)
    moments: Iterator[datetime]
    if len(ordered) <= capacity:
        # Recipient i takes slot ⌊i·capacity/n⌋: distinct, evenly spread, the first
        # at the very start.
        moments = (_nth(spans, i * capacity // len(ordered)) for i in range(len(ordered)))
    else:
        later = _open_days(days[-1] + timedelta(days=1), is_closed, None)
        overflow = (grid.span(day, start) for day in later)
        moments = (moment for span in chain(spans, overflow) for moment in span)
    if until is not None:
        # In the recipients' order, each moment is later than the one before.
        moments = takewhile(lambda moment: moment <= until, moments)
    return dict(zip(ordered, moments, strict=False))


@dataclass(frozen=True)
class Displaced:
    """A newsletter that cannot stay at `moment`: the patient has another message on
    that day (one of `busy`), or another newsletter of its occurrence holds the slot."""

    patient_id: int
    moment: datetime  # aware
    busy: frozenset[date] = frozenset()


def free_slots(
    displaced: Iterable[Displaced],
    occupied: Iterable[datetime],
    pacing: Pacing,
    window: SendWindow,
    tz: ZoneInfo,
    is_closed: IsClosed = _never_closed,
) -> dict[int, datetime]:
    """A free slot (aware, UTC) of the occurrence's pacing grid for each displaced
    newsletter: on its first open day from its moment's day on that is not one of its
    busy days, the first free slot at or after its moment's time of day; if that day
    has none left, the first free slot of a later such day, from the window's opening.
    A slot is free when no moment of `occupied` (the occurrence's other newsletters) is
    on it and no newsletter took it here before.

    Only slots of the grid `pace` uses, one newsletter each, so `pace`'s promise holds
    for the moved ones too: no clock hour holds more than `per_hour` newsletters of the
    occurrence, and no two leave at once.

    Keeping the time of day on the first day keeps the spread: `pace` spread the
    moments evenly over the day, so the free slots are spread too, and each moved
    newsletter takes one near where it was, not all of them the morning's. On later
    days it is late already, and the earliest free slot matters more: searching from
    the same time of day again could pass over free mornings day after day.

    The newsletters take their slots in the order of (moment, patient), whatever the
    order given, so every worker and every cycle makes the same choice.
    """
    grid = _Grid(window, tz, pacing.per_hour)
    held = set(occupied)
    # Where a search that lands on a held slot goes on: every search passing a run of
    # held slots shortens it to one step (path compression), so a big occurrence's
    # full days are walked once, not once per moved newsletter.
    onward: dict[tuple[date, int], int] = {}

    def first_free(day: date, slots: range) -> int | None:
        k, passed = slots.start, []
        while k < slots.stop and grid.at(day, k) in held:
            passed.append(k)
            k = onward.get((day, k), k + 1)
        for j in passed:
            onward[(day, j)] = k
        return k if k < slots.stop else None

    chosen: dict[int, datetime] = {}
    for newsletter in sorted(displaced, key=lambda d: (d.moment, d.patient_id)):
        local = newsletter.moment.astimezone(tz)
        days = _open_days(local.date(), _closed_or_busy(is_closed, newsletter.busy), None)
        for n, day in enumerate(days):
            earliest = at_local(day, local.time() if n == 0 else time(), tz)
            k = first_free(day, grid.slots(day, earliest))
            if k is not None:
                slot = grid.at(day, k)
                held.add(slot)
                chosen[newsletter.patient_id] = slot
                break
    return chosen


def _closed_or_busy(is_closed: IsClosed, busy: frozenset[date]) -> IsClosed:
    return lambda day: day in busy or is_closed(day)


def _nth(spans: Sequence[_Span], index: int) -> datetime:
    for span in spans:
        if index < len(span):
            return span[index]
        index -= len(span)
    raise IndexError(index)


def _ranking(occurrence: Occurrence) -> Callable[[int], bytes]:
    """A patient's rank in the occurrence's order."""
    # hashlib, not hash(): Python salts str hashes per process, and every worker and
    # every tick must agree on the order.
    prefix = f"{occurrence.campaign_id}:{occurrence.day.isoformat()}:"
    return lambda patient_id: hashlib.sha256(f"{prefix}{patient_id}".encode()).digest()


def _open_days(first: date, is_closed: IsClosed, count: int | None) -> Iterator[date]:
    """Open days from `first` on (`count` of them, or without end)."""
    day, found, closed_run = first, 0, 0
    while count is None or found < count:
        if is_closed(day):
            closed_run += 1
            if closed_run > _MAX_CLOSED_RUN:
                raise ValueError(f"the clinic is closed every day from {first} on")
        else:
            closed_run = 0
            found += 1
            yield day
        day += timedelta(days=1)


class _Span(Sequence[datetime]):
    """A run of one day's slots, computed on demand: a big campaign's thousands of
    slots are never all built when only a few recipients need them."""

    def __init__(self, grid: _Grid, day: date, first: int, count: int) -> None:
        self._grid, self._day, self._first, self._count = grid, day, first, count

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> datetime: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[datetime]: ...
    def __getitem__(self, index: int | slice) -> datetime | Sequence[datetime]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if not 0 <= index < self._count:
            raise IndexError(index)
        return self._grid.at(self._day, self._first + index)

    def __iter__(self) -> Iterator[datetime]:
        # Sequence's own goes through __getitem__, checks and all, for every slot.
        at, day = self._grid.at, self._day
        for k in range(self._first, self._first + self._count):
            yield at(day, k)


class _Grid:
    """The send slots of a clinic-local day: slot k is the window's opening plus
    k·(1 h / per_hour), kept while the window is open. In integer microseconds, so the
    grid is exact: any 60 minutes hold `per_hour` slots at most, and a window of any
    length holds at least one."""

    def __init__(self, window: SendWindow, tz: ZoneInfo, per_hour: int) -> None:
        self._tz = tz
        self._per_hour = per_hour
        self._opens_us = window.opens_minute * _MINUTE_US
        self._closes_us = window.closes_minute * _MINUTE_US

    def _first_k(self, us: int) -> int:
        """The first slot at or after `us` microseconds past midnight."""
        return max(0, -(-(us - self._opens_us) * self._per_hour // _HOUR_US))

    def span(self, day: date, earliest: datetime) -> _Span:
        """`day`'s slots at or after `earliest`."""
        slots = self.slots(day, earliest)
        return _Span(self, day, slots.start, len(slots))

    def slots(self, day: date, earliest: datetime) -> range:
        """The numbers k of `day`'s slots at or after `earliest`."""
        local = earliest.astimezone(self._tz)
        if local.date() > day:
            return range(0)
        lower = 0
        if local.date() == day:
            lower = (local.replace(tzinfo=None) - datetime.combine(day, time())) // _MICROSECOND
        first, end = self._first_k(lower), self._first_k(self._closes_us)
        return range(first, max(first, end))

    def at(self, day: date, k: int) -> datetime:
        us = self._opens_us + k * _HOUR_US // self._per_hour
        wall = (datetime.combine(day, time()) + timedelta(microseconds=us)).time()
        return at_local(day, wall, self._tz)

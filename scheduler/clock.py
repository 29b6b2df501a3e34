"""The one clock. Every rule takes `now` from here; tests and `--now` pin it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current moment, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """Always the same moment: for one CLI command with `--now`, and for tests."""

    def __init__(self, moment: datetime) -> None:
        self._moment = moment.astimezone(UTC)

    def now(self) -> datetime:
        return self._moment

    def set(self, moment: datetime) -> None:
        self._moment = moment.astimezone(UTC)


class ShiftedClock:
    """Starts at a chosen moment and then runs at real speed: `tayori run --now`."""

    def __init__(self, start: datetime) -> None:
        self._start = start.astimezone(UTC)
        self._started = time.monotonic()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=time.monotonic() - self._started)


def parse_moment(text: str, tz: tzinfo, *, require_time: bool = False) -> datetime:
    """Read an ISO 8601 moment; a naive one is taken as clinic-local time. With
    `require_time`, a bare date (which would silently mean midnight) is refused."""
    problem = f"expected an ISO 8601 date-time such as 2026-11-25T10:00+09:00, got {text!r}"
    if require_time and len(text.strip()) <= len("2026-11-25"):
        raise ValueError(problem)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(problem) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.astimezone(UTC)

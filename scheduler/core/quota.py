"""Sharing LINE's monthly quota between messages (pure).

When what is planned for the rest of the month would not fit in what is left,
the more important messages get LINE first; the rest go by email where the patient
allows it, or wait.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
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


def remaining(limit: int | None, used: int) -> int | None:
    """Messages left this month; None when the plan has no limit."""
    return None if limit is None else max(limit - used, 0)


def share(left: int, planned: Mapping[Reason, int], reason: Reason) -> int:
    """How many LINE messages `reason` may still send this month: what is left once
    every more important message planned for the rest of the month has had its turn."""
    ahead = PRIORITY[: PRIORITY.index(reason)]
    return max(left - sum(planned.get(other, 0) for other in ahead), 0)


@dataclass
class LineBudget:
    """What one dispatch cycle may send by LINE; shared by the dispatch lanes.

    `left` is None when the plan has no monthly limit. `planned` counts the LINE
    messages still planned for the rest of the month, by reason.
    """

    left: int | None
    planned: dict[Reason, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self, reason: Reason) -> bool:
        """Reserve one message for `reason`; False when it does not fit."""
        with self._lock:
            if self.left is None:
                return True
            if share(self.left, self.planned, reason) <= 0:
                return False
            self.left -= 1
            self.planned[reason] = max(self.planned.get(reason, 0) - 1, 0)
            return True

    def give_back(self, reason: Reason) -> None:
        """Return a reservation whose message did not go by LINE after all."""
        with self._lock:
            if self.left is not None:
                self.left += 1
                self.planned[reason] = self.planned.get(reason, 0) + 1

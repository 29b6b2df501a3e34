"""When to try a delivery again after a transient failure (pure)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from scheduler.core.config import Dispatch

MAX_DELAY = timedelta(hours=1)


def retry_at(delivery_id: str, attempts: int, now: datetime, policy: Dispatch) -> datetime | None:
    """The moment of the next attempt, or None when the attempts are used up.

    Exponential backoff with jitter taken from the delivery id, so the same inputs
    give the same answer and many failed deliveries do not retry in one burst.
    """
    if attempts >= policy.max_attempts:
        return None
    base = timedelta(seconds=policy.retry_after_seconds * 2 ** max(attempts - 1, 0))
    jitter = int(hashlib.sha256(delivery_id.encode()).hexdigest()[:4], 16) / 0xFFFF
    return now + min(base * (1 + jitter / 2), MAX_DELAY)

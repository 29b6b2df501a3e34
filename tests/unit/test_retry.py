"""When a delivery that failed for a passing reason is tried again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scheduler.core.config import Dispatch
from scheduler.core.retry import MAX_DELAY, retry_at

NOW = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
POLICY = Dispatch(max_attempts=5, retry_after_seconds=60)


def delay(attempts: int, delivery_id: str = "d-1") -> timedelta:
    moment = retry_at(delivery_id, attempts, NOW, POLICY)
    assert moment is not None
    return moment - NOW


def test_each_retry_waits_longer_than_the_one_before() -> None:
    delays = [delay(n) for n in range(1, 5)]
    assert delays == sorted(delays)
    assert delays[0] >= timedelta(seconds=60)


def test_the_wait_never_exceeds_an_hour() -> None:
    assert delay(4, "x") <= MAX_DELAY
    assert retry_at("x", 4, NOW, Dispatch(max_attempts=50, retry_after_seconds=3600)) == (
        NOW + MAX_DELAY
    )


def test_no_retry_once_the_attempts_are_used_up() -> None:
    assert retry_at("d-1", 5, NOW, POLICY) is None


def test_same_delivery_and_attempt_give_the_same_moment() -> None:
    assert delay(2, "same") == delay(2, "same")


def test_jitter_spreads_different_deliveries() -> None:
    assert len({delay(1, f"d-{n}") for n in range(20)}) > 1

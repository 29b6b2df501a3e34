"""Reading moments given on the command line and in CSV files."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scheduler.clock import FixedClock, parse_moment
from tests.unit.facts import JST


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "2026-11-25T10:00", datetime(2026, 11, 25, 1, 0, tzinfo=UTC), id="naive-is-clinic-time"
        ),
        pytest.param(
            "2026-11-25 10:00", datetime(2026, 11, 25, 1, 0, tzinfo=UTC), id="space-separator"
        ),
        pytest.param(
            "2026-11-25T10:00+09:00", datetime(2026, 11, 25, 1, 0, tzinfo=UTC), id="offset"
        ),
        pytest.param("2026-11-25T01:00Z", datetime(2026, 11, 25, 1, 0, tzinfo=UTC), id="utc-z"),
    ],
)
def test_moments_are_read_as_utc(text: str, expected: datetime) -> None:
    assert parse_moment(text, JST) == expected


@pytest.mark.parametrize("text", ["tomorrow", "2026-13-01T10:00", ""])
def test_unreadable_moment_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match="such as 2026-11-25T10:00"):
        parse_moment(text, JST)


def test_a_date_alone_is_refused_where_a_time_is_required() -> None:
    with pytest.raises(ValueError):
        parse_moment("2026-11-25", JST, require_time=True)


def test_fixed_clock_stays_where_it_was_set() -> None:
    clock = FixedClock(datetime(2026, 11, 25, 10, 0, tzinfo=JST))
    assert clock.now() == clock.now() == datetime(2026, 11, 25, 1, 0, tzinfo=UTC)

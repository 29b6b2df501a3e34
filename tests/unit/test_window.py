"""The send window and clinic-local time."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from scheduler.core.config import SendWindow
from scheduler.core.window import at_local, is_open, local_date, next_opening
from tests.unit.facts import JST, jst

WINDOW = SendWindow()  # 09:00–20:00


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        pytest.param(jst(11, 25, 8, 59), False, id="08:59-closed"),
        pytest.param(jst(11, 25, 9, 0), True, id="09:00-open"),
        pytest.param(jst(11, 25, 19, 59), True, id="19:59-open"),
        pytest.param(jst(11, 25, 20, 0), False, id="20:00-closed"),
        pytest.param(jst(11, 25, 0, 0), False, id="midnight-closed"),
    ],
)
def test_window_is_open_from_nine_until_just_before_eight_pm(
    moment: datetime, expected: bool
) -> None:
    assert is_open(moment, WINDOW, JST) is expected


@pytest.mark.parametrize(
    ("moment", "opening"),
    [
        pytest.param(jst(11, 25, 7, 0), jst(11, 25, 9, 0), id="early-morning-waits-for-nine"),
        pytest.param(jst(11, 25, 13, 0), jst(11, 25, 13, 0), id="inside-goes-now"),
        pytest.param(jst(11, 25, 20, 0), jst(11, 26, 9, 0), id="at-closing-waits-for-tomorrow"),
        pytest.param(jst(11, 25, 23, 30), jst(11, 26, 9, 0), id="late-evening-tomorrow"),
        pytest.param(jst(12, 31, 21, 0), jst(1, 1, 9, 0, year=2027), id="across-the-year"),
    ],
)
def test_next_opening_moves_closed_moments_to_the_window(
    moment: datetime, opening: datetime
) -> None:
    assert next_opening(moment, WINDOW, JST) == opening


def test_local_date_is_the_clinic_date_not_the_utc_date() -> None:
    # 08:00 JST on the 25th is still the 24th in UTC.
    assert local_date(jst(11, 25, 8, 0), JST).day == 25


def test_window_follows_the_clinic_time_zone_across_daylight_saving() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # Clocks go back early on 2026-10-25: 09:00 local is 07:00 UTC on the 24th and
    # 08:00 UTC on the 25th.
    before = next_opening(datetime(2026, 10, 23, 22, 0, tzinfo=berlin), WINDOW, berlin)
    after = next_opening(datetime(2026, 10, 24, 22, 0, tzinfo=berlin), WINDOW, berlin)
    assert (before.hour, after.hour) == (7, 8)


def test_at_local_gives_the_utc_moment_of_a_wall_clock_time() -> None:
    assert at_local(date(2026, 11, 25), time(10, 0), JST).hour == 1


def test_window_may_close_at_midnight() -> None:
    all_evening = SendWindow(opens_minute=9 * 60, closes_minute=24 * 60)
    assert is_open(jst(11, 25, 23, 59), all_evening, JST)

"""The clinic's closed days: its own yearly periods, Japan's public holidays, weekly
closing days, and the [closures] settings that describe them."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from scheduler.core.closures import (
    ClosurePeriod,
    Closures,
    ClosureSpan,
    closure_reason,
    closure_spans,
    is_closed,
    period_start,
    reopens_on,
)
from scheduler.core.config import ConfigError
from scheduler.settings.closures import parse_closures

YEAR_END = Closures()  # the default: 年末年始 12-29 → 01-03 and public holidays
SUNDAYS = Closures(weekly=frozenset({6}))


def test_year_end_period_wraps_into_the_new_year() -> None:
    assert not is_closed(date(2026, 12, 28), YEAR_END)
    assert is_closed(date(2026, 12, 29), YEAR_END)
    assert is_closed(date(2026, 12, 31), YEAR_END)
    assert is_closed(date(2027, 1, 3), YEAR_END)
    assert not is_closed(date(2027, 1, 4), YEAR_END)


def test_period_names_the_closure_even_on_a_public_holiday() -> None:
    assert closure_reason(date(2027, 1, 1), YEAR_END) == "年末年始"  # also 元日


def test_reopens_after_the_new_year_holidays() -> None:
    assert reopens_on(date(2026, 12, 30), YEAR_END) == date(2027, 1, 4)


def test_reopens_after_a_weekly_closing_day_that_follows_the_holidays() -> None:
    # 2026-01-04 is a Sunday.
    assert reopens_on(date(2025, 12, 30), SUNDAYS) == date(2026, 1, 5)


def test_reopens_on_the_same_day_when_open() -> None:
    assert reopens_on(date(2026, 6, 10), YEAR_END) == date(2026, 6, 10)


def test_public_holiday_closed_when_enabled() -> None:
    assert is_closed(date(2026, 11, 23), YEAR_END)  # 勤労感謝の日, a Monday


def test_public_holiday_open_when_disabled() -> None:
    assert not is_closed(date(2026, 11, 23), Closures(public_holidays=False))


def test_substitute_holiday_is_closed() -> None:
    # 憲法記念日 2026-05-03 is a Sunday: 振替休日 on Wednesday 05-06.
    assert is_closed(date(2026, 5, 6), YEAR_END)
    assert closure_reason(date(2026, 5, 6), YEAR_END) == "祝日（憲法記念日 振替休日）"


def test_citizens_holiday_between_two_holidays_is_closed() -> None:
    assert closure_reason(date(2026, 9, 22), YEAR_END) == "祝日（国民の休日）"


def test_closure_reason_names_the_holiday() -> None:
    assert closure_reason(date(2026, 11, 23), YEAR_END) == "祝日（勤労感謝の日）"


def test_open_day_has_no_reason() -> None:
    assert closure_reason(date(2026, 11, 24), YEAR_END) is None


def test_weekly_closing_day() -> None:
    assert closure_reason(date(2026, 6, 14), SUNDAYS) == "定休日"  # a Sunday
    assert not is_closed(date(2026, 6, 15), SUNDAYS)


def test_summer_break_does_not_wrap() -> None:
    closures = Closures(periods=(ClosurePeriod("夏季休業", (8, 13), (8, 16)),))
    assert [is_closed(date(2026, 8, d), closures) for d in range(12, 18)] == [
        False,
        True,
        True,
        True,
        True,
        False,
    ]
    assert not is_closed(date(2026, 12, 30), closures)


def test_closure_spans_include_both_year_end_closures() -> None:
    spans = closure_spans(2026, YEAR_END)
    assert spans[0] == ClosureSpan("年末年始", date(2025, 12, 29), date(2026, 1, 3))
    assert spans[-1] == ClosureSpan("年末年始", date(2026, 12, 29), date(2027, 1, 3))


def test_closure_spans_list_holidays_not_covered_by_a_period() -> None:
    spans = closure_spans(2026, YEAR_END)
    assert ClosureSpan("祝日（勤労感謝の日）", date(2026, 11, 23), date(2026, 11, 23)) in spans
    assert ClosureSpan("祝日（成人の日）", date(2026, 1, 12), date(2026, 1, 12)) in spans
    assert all(span.name != "祝日（元日）" for span in spans)  # inside 年末年始
    assert spans == sorted(spans, key=lambda span: span.first)


def test_closure_spans_without_public_holidays_are_the_periods_only() -> None:
    closures = Closures(public_holidays=False, weekly=frozenset({6}))
    assert [span.name for span in closure_spans(2026, closures)] == ["年末年始", "年末年始"]


LEAP_DAY_BREAK = Closures(
    public_holidays=False,
    periods=(
        ClosurePeriod("決算休み", (2, 20), (2, 29)),
        ClosurePeriod("研修", (2, 29), (3, 2)),
    ),
)


def test_feb_29_is_used_in_leap_years() -> None:
    assert closure_reason(date(2028, 2, 29), LEAP_DAY_BREAK) == "決算休み"
    assert closure_spans(2028, LEAP_DAY_BREAK) == [
        ClosureSpan("決算休み", date(2028, 2, 20), date(2028, 2, 29)),
        ClosureSpan("研修", date(2028, 2, 29), date(2028, 3, 2)),
    ]


def test_feb_29_means_the_last_day_of_february_in_common_years() -> None:
    assert closure_spans(2027, LEAP_DAY_BREAK) == [
        ClosureSpan("決算休み", date(2027, 2, 20), date(2027, 2, 28)),
        ClosureSpan("研修", date(2027, 2, 28), date(2027, 3, 2)),
    ]
    assert period_start("研修", 2027, LEAP_DAY_BREAK) == date(2027, 2, 28)


def test_period_start_is_the_start_in_that_year() -> None:
    assert period_start("年末年始", 2026, YEAR_END) == date(2026, 12, 29)


def test_period_start_of_an_unknown_period_is_none() -> None:
    assert period_start("夏季休業", 2026, YEAR_END) is None


# --- parsing [closures] ------------------------------------------------------------------


def test_empty_table_means_the_defaults() -> None:
    assert parse_closures({}, "t.toml") == Closures()


def test_full_table_is_read() -> None:
    table = {
        "public_holidays": False,
        "weekly": ["wed", "sun"],
        "periods": [
            {"name": "年末年始", "from": "12-29", "to": "01-03"},
            {"name": "夏季休業", "from": "08-13", "to": "08-16"},
        ],
    }
    assert parse_closures(table, "t.toml") == Closures(
        public_holidays=False,
        weekly=frozenset({2, 6}),
        periods=(
            ClosurePeriod("年末年始", (12, 29), (1, 3)),
            ClosurePeriod("夏季休業", (8, 13), (8, 16)),
        ),
    )


def test_empty_periods_list_means_no_periods() -> None:
    assert parse_closures({"periods": []}, "t.toml").periods == ()


def test_feb_29_is_accepted() -> None:
    table = {"periods": [{"name": "閏日", "from": "02-29", "to": "02-29"}]}
    assert parse_closures(table, "t.toml").periods == (ClosurePeriod("閏日", (2, 29), (2, 29)),)


SUMMER = {"name": "夏季休業", "from": "08-13", "to": "08-16"}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        pytest.param(
            {"periods": [SUMMER, {"name": "x", "from": "13-01", "to": "01-03"}]},
            "t.toml: closures.periods[1].from: expected MM-DD, got '13-01'",
            id="bad-month",
        ),
        pytest.param(
            {"periods": [{"name": "x", "from": "02-30", "to": "03-01"}]},
            "t.toml: closures.periods[0].from: expected MM-DD, got '02-30'",
            id="no-such-day",
        ),
        pytest.param(
            {"periods": [{"name": "x", "from": "12-29", "to": "1/3"}]},
            "t.toml: closures.periods[0].to: expected MM-DD, got '1/3'",
            id="bad-format",
        ),
        pytest.param(
            {"periods": [{"name": "x", "to": "01-03"}]},
            "t.toml: closures.periods[0].from: missing; expected MM-DD",
            id="from-missing",
        ),
        pytest.param(
            {"periods": [{"name": "x", "from": "12-29"}]},
            "t.toml: closures.periods[0].to: missing; expected MM-DD",
            id="to-missing",
        ),
        pytest.param(
            {"periods": [{"from": "12-29", "to": "01-03"}]},
            "t.toml: closures.periods[0].name: missing; expected a name",
            id="name-missing",
        ),
        pytest.param(
            {"periods": [SUMMER, SUMMER]},
            "t.toml: closures.periods[1].name: expected a name no other period has, got '夏季休業'",
            id="duplicate-name",
        ),
        pytest.param(
            {"periods": [{**SUMMER, "until": "08-20"}]},
            "t.toml: closures.periods[0]: unknown key 'until'",
            id="unknown-period-key",
        ),
        pytest.param(
            {"periods": {"name": "x", "from": "12-29", "to": "01-03"}},
            "t.toml: closures.periods: expected an array of tables",
            id="periods-not-a-list",
        ),
        pytest.param(
            {"periods": [{"name": "休業", "from": "01-01", "to": "12-31"}]},
            "t.toml: closures.periods: together they cover every day of 2023",
            id="closed-all-year",
        ),
        pytest.param(
            {"weekly": ["sun", "sunday"]},
            "t.toml: closures.weekly[1]: expected one of mon, tue, wed, thu, fri, sat, sun, "
            "got 'sunday'",
            id="unknown-weekday",
        ),
        pytest.param(
            {"weekly": "sun"},
            "t.toml: closures.weekly: expected a list of weekdays",
            id="weekly-not-a-list",
        ),
        pytest.param(
            {"weekly": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
            "t.toml: closures.weekly: expected at most six weekdays",
            id="closed-every-weekday",
        ),
        pytest.param(
            {"public_holidays": "yes"},
            "t.toml: closures.public_holidays: expected true or false, got 'yes'",
            id="public-holidays-not-bool",
        ),
        pytest.param(
            {"holidays": True},
            "t.toml: closures: unknown key 'holidays'",
            id="unknown-key",
        ),
    ],
)
def test_parse_errors_name_the_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_closures(table, "t.toml")
    assert str(caught.value).startswith(message)

"""The [closures] table of `config/tayori.toml`, read strictly into the values of
`scheduler.core.closures`."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import date, timedelta
from typing import Any

from scheduler.core.closures import WEEKDAYS, ClosurePeriod, Closures, period_at
from scheduler.core.config import ConfigError

_MM_DD = re.compile(r"^(\d\d)-(\d\d)$")
_MISSING = object()


def parse_closures(table: Mapping[str, Any], source: str) -> Closures:
    """Read the [closures] table strictly; an empty table means every default."""
    _refuse_unknown(table, {"public_holidays", "weekly", "periods"}, "closures", source)

    public_holidays = table.get("public_holidays", Closures.public_holidays)
    if not isinstance(public_holidays, bool):
        raise _error(source, "closures.public_holidays", "true or false", public_holidays)

    weekly_value = table.get("weekly", [])
    if not isinstance(weekly_value, list):
        raise _error(source, "closures.weekly", 'a list of weekdays such as ["sun"]', weekly_value)
    weekly = frozenset(
        _weekday(value, f"closures.weekly[{i}]", source) for i, value in enumerate(weekly_value)
    )
    if len(weekly) == len(WEEKDAYS):
        raise _error(source, "closures.weekly", "at most six weekdays", weekly_value)

    periods_value = table.get("periods", _MISSING)
    if periods_value is _MISSING:
        periods = Closures.periods
    elif isinstance(periods_value, list):
        periods = tuple(
            _period(value, f"closures.periods[{i}]", source)
            for i, value in enumerate(periods_value)
        )
    else:
        raise _error(
            source, "closures.periods", "an array of tables [[closures.periods]]", periods_value
        )
    for i, period in enumerate(periods):
        if any(other.name == period.name for other in periods[:i]):
            raise _error(
                source, f"closures.periods[{i}].name", "a name no other period has", period.name
            )
    for year in (2023, 2024):  # a common and a leap year
        if all(period_at(day, periods) for day in _days_of(year)):
            raise ConfigError(
                f"{source}: closures.periods: together they cover every day of {year}; "
                "the clinic would never open"
            )
    return Closures(public_holidays, weekly, periods)


def _weekday(value: object, key: str, source: str) -> int:
    if not isinstance(value, str) or value not in WEEKDAYS:
        raise _error(source, key, "one of " + ", ".join(WEEKDAYS), value)
    return WEEKDAYS.index(value)


def _period(value: object, key: str, source: str) -> ClosurePeriod:
    if not isinstance(value, dict):
        raise _error(source, key, "a table with name, from and to", value)
    _refuse_unknown(value, {"name", "from", "to"}, key, source)
    name = value.get("name", _MISSING)
    if not isinstance(name, str) or not name.strip():
        raise _error(source, f"{key}.name", 'a name such as "夏季休業"', name)
    start = _month_day(value.get("from", _MISSING), f"{key}.from", source)
    end = _month_day(value.get("to", _MISSING), f"{key}.to", source)
    return ClosurePeriod(name.strip(), start, end)


def _month_day(value: object, key: str, source: str) -> tuple[int, int]:
    match = _MM_DD.match(value) if isinstance(value, str) else None
    if match:
        month, day = int(match.group(1)), int(match.group(2))
        try:
            date(2000, month, day)  # a leap year: 02-29 is a day of the year
        except ValueError:
            pass
        else:
            return month, day
    raise _error(source, key, "MM-DD", value)


def _days_of(year: int) -> Iterator[date]:
    day = date(year, 1, 1)
    while day.year == year:
        yield day
        day += timedelta(days=1)


def _refuse_unknown(table: Mapping[str, Any], known: set[str], where: str, source: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(
            f"{source}: {where}: unknown key {unknown[0]!r} "
            "(check the spelling against config/tayori.toml's comments)"
        )


def _error(source: str, key: str, expected: str, got: object) -> ConfigError:
    if got is _MISSING:
        return ConfigError(f"{source}: {key}: missing; expected {expected}")
    return ConfigError(f"{source}: {key}: expected {expected}, got {got!r}")

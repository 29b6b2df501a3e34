"""Reading one TOML table strictly: every value checked, every unknown key refused,
and every error naming the file and the key."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from scheduler.core.config import ConfigError
from scheduler.core.domain import Phase

_HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")


class TableReader:
    """One TOML table being read; remembers which keys were used to refuse the rest."""

    def __init__(self, values: Mapping[str, Any], source: str, prefix: str) -> None:
        self._values = values
        self._source = source
        self._prefix = prefix
        self._used: set[str] = set()

    def _name(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def _error(self, key: str, expected: str, got: object) -> ConfigError:
        return ConfigError(f"{self._source}: {self._name(key)}: expected {expected}, got {got!r}")

    def _get(self, key: str) -> Any:
        self._used.add(key)
        return self._values.get(key)

    def table(self, key: str) -> TableReader:
        value = self._get(key)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self._error(key, "a table", value)
        return TableReader(value, self._source, f"{self._name(key)}.")

    def raw_table(self, key: str) -> Mapping[str, Any]:
        """A sub-table for a parser of its own (it checks its keys itself)."""
        value = self._get(key)
        if value is not None and not isinstance(value, dict):
            raise self._error(key, "a table", value)
        return value or {}

    def text(self, key: str, default: str) -> str:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._error(key, "a string", value)
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._error(key, "true or false", value)
        return value

    def matching(self, key: str, pattern: re.Pattern[str], expected: str) -> str:
        value = self.text(key, "")
        if value and not pattern.match(value):
            raise self._error(key, expected, value)
        return value

    def integer(self, key: str, default: int, minimum: int, maximum: int = 3650) -> int:
        value = self._get(key)
        if value is None:
            return default
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not (minimum <= value <= maximum)
        ):
            raise self._error(key, f"a whole number from {minimum} to {maximum}", value)
        return value

    def minute_of_day(self, key: str, default: int) -> int:
        value = self._get(key)
        if value is None:
            return default
        match = _HHMM.match(value) if isinstance(value, str) else None
        minute = int(match.group(1)) * 60 + int(match.group(2)) if match else -1
        if not 0 <= minute <= 24 * 60:
            raise self._error(key, 'a time of day such as "09:00" (up to "24:00")', value)
        return minute

    def clock_time(self, key: str, default: time) -> time:
        value = self._get(key)
        if value is None:
            return default
        match = _HHMM.match(value) if isinstance(value, str) else None
        if not match or int(match.group(1)) > 23:
            raise self._error(key, 'a time of day such as "10:00"', value)
        return time(int(match.group(1)), int(match.group(2)))

    def zone(self, key: str, default: str) -> ZoneInfo:
        name = self.text(key, default)
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # "Asia": a directory
            raise self._error(key, 'an IANA time zone such as "Asia/Tokyo"', name) from None

    def per_phase(self, key: str, defaults: Mapping[Phase, int]) -> Mapping[Phase, int]:
        table = self.table(key)
        result = {phase: table.integer(phase.value, defaults[phase], 1, 90) for phase in Phase}
        table.done()
        return result

    def done(self) -> None:
        unknown = sorted(set(self._values) - self._used)
        if unknown:
            where = self._prefix.rstrip(".") or "top level"
            raise ConfigError(
                f"{self._source}: {where}: unknown key {unknown[0]!r} "
                "(check the spelling against config/tayori.toml's comments)"
            )

"""`config/campaigns.toml`: the seasonal campaigns, read strictly into the values of
`scheduler.core.campaigns`."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date, time
from typing import Any

from scheduler.core.campaigns import (
    CAMPAIGN_ID,
    MAX_OFFSET_DAYS,
    MAX_PER_HOUR,
    MAX_SPREAD_DAYS,
    Audience,
    Campaign,
    ClosureTrigger,
    DateTrigger,
    Pacing,
    SeasonTrigger,
    Trigger,
)
from scheduler.core.config import ConfigError
from scheduler.core.domain import Phase
from scheduler.core.seasons import SeasonalMoment
from scheduler.settings.tables import TableReader

_MONTH_DAY = re.compile(r"^(\d\d)-(\d\d)$")


class _Reader(TableReader):
    """The strict table reader, plus the value kinds only campaigns use
    (lists of names, an array of tables, month-days)."""

    def table(self, key: str) -> _Reader:
        value = self._get(key)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self._error(key, "a table", value)
        return _Reader(value, self._source, f"{self._name(key)}.")

    def tables(self, key: str) -> list[_Reader]:
        """An array of tables (`[[key]]`), each named `key[n]` counting from 1, as the
        practitioner counts the blocks in the file."""
        value = self._get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self._error(key, f"tables written as [[{key}]]", value)
        return [
            _Reader(v, self._source, f"{self._name(key)}[{n}].") for n, v in enumerate(value, 1)
        ]

    def has(self, key: str) -> bool:
        return key in self._values

    def required_name(self, key: str, pattern: re.Pattern[str], expected: str) -> str:
        value = self._get(key)
        if not isinstance(value, str) or not pattern.match(value):
            raise self._error(key, expected, value)
        return value

    def names(self, key: str, allowed: Sequence[str]) -> tuple[str, ...]:
        """A non-empty list of distinct names, each one of `allowed`."""
        value = self._get(key)
        expected = "a list of one or more of " + ", ".join(allowed)
        if not isinstance(value, list) or not value:
            raise self._error(key, expected, value)
        for item in value:
            if item not in allowed:
                raise self._error(key, expected, item)
        if len(set(value)) != len(value):
            raise self._error(key, "each name once", value)
        return tuple(value)

    def month_day(self, key: str) -> tuple[int, int]:
        value = self._get(key)
        match = _MONTH_DAY.match(value) if isinstance(value, str) else None
        if match:
            month, day = int(match.group(1)), int(match.group(2))
            try:
                date(2000, month, day)  # a leap year, so 02-29 passes (see occurrences)
            except ValueError:
                pass
            else:
                return month, day
        raise self._error(key, "MM-DD", value)

    def error(self, key: str, expected: str, got: object) -> ConfigError:
        """An error naming `key`, or this table itself when `key` is empty."""
        if not key:
            name = self._prefix.rstrip(".") or "top level"
            return ConfigError(f"{self._source}: {name}: expected {expected}, got {got!r}")
        return self._error(key, expected, got)


def parse_campaigns(document: Mapping[str, Any], source: str) -> tuple[Campaign, ...]:
    """The campaigns of `config/campaigns.toml`, refusing unknown or malformed keys.

    Errors name the file and the key, campaigns counted from 1 in file order:
    "config/campaigns.toml: campaign[2].trigger.month_day: expected MM-DD, got '12-32'".
    """
    top = _Reader(document, source, "")
    campaigns: list[Campaign] = []
    for table in top.tables("campaign"):
        campaign = _campaign(table)
        if any(c.id == campaign.id for c in campaigns):
            raise table.error("id", "an id no other campaign uses", campaign.id)
        campaigns.append(campaign)
    top.done()
    return tuple(campaigns)


def _campaign(table: _Reader) -> Campaign:
    id_ = table.required_name("id", CAMPAIGN_ID, "an id of lower-case letters, digits and _")
    template = id_
    if table.has("template"):
        template = table.required_name(
            "template", CAMPAIGN_ID, "a folder name in messages/ (lower-case letters, digits and _)"
        )
    enabled = table.boolean("enabled", True)
    trigger = _trigger(table.table("trigger"))
    audience = _audience(table.table("audience"))
    pacing_t = table.table("pacing")
    pacing = Pacing(
        spread_days=pacing_t.integer("spread_days", Pacing.spread_days, 1, MAX_SPREAD_DAYS),
        per_hour=pacing_t.integer("per_hour", Pacing.per_hour, 1, MAX_PER_HOUR),
    )
    pacing_t.done()
    table.done()
    return Campaign(id_, template, trigger, audience, pacing, enabled)


_TRIGGER_KINDS = ("season", "month_day", "closure")


def _trigger(table: _Reader) -> Trigger:
    kinds = [kind for kind in _TRIGGER_KINDS if table.has(kind)]
    if len(kinds) != 1:
        raise table.error(
            "", "exactly one of 'season', 'month_day' or 'closure'", " and ".join(kinds) or None
        )
    at = table.clock_time("at", time(10, 0))
    offset = table.integer("offset_days", 0, -MAX_OFFSET_DAYS, MAX_OFFSET_DAYS)
    trigger: Trigger
    if kinds == ["season"]:
        moments = table.names("season", [m.value for m in SeasonalMoment])
        trigger = SeasonTrigger(tuple(SeasonalMoment(m) for m in moments), offset, at)
    elif kinds == ["month_day"]:
        if offset:
            # The month-day is the day itself; an offset would only hide it.
            raise table.error("offset_days", "no offset with month_day (write the day)", offset)
        month, day = table.month_day("month_day")
        trigger = DateTrigger(month, day, at)
    else:
        name = table.text("closure", "").strip()
        if not name:
            raise table.error("closure", "the name of a closure period", name)
        trigger = ClosureTrigger(name, offset, at)
    table.done()
    return trigger


def _audience(table: _Reader) -> Audience:
    phases: frozenset[Phase] | None = None
    if table.has("phases"):
        phases = frozenset(Phase(p) for p in table.names("phases", [p.value for p in Phase]))
    # TOML has no null: 0 switches a day filter off, as "within 0 days" would mean
    # only patients seen on the very day.
    visited = table.integer("visited_within_days", 180, 0)
    audience = Audience(
        phases=phases,
        visited_within_days=visited or None,
        exclude_booked_within_days=table.integer("exclude_booked_within_days", 0, 0),
    )
    table.done()
    return audience

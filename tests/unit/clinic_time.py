"""Clinic settings and clinic-local moments, for tests of the pure core.

Patients and appointments are built with `tests.unit.facts`; this module adds the
other half of a rule's input: the clinic's rules as its `tayori.toml` would give
them, and moments on the wall clock of any time zone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from scheduler.core.config import Rules
from scheduler.core.domain import Due, Reason
from scheduler.settings import parse_config

BERLIN = ZoneInfo("Europe/Berlin")
SOURCE = "clinic.toml"
# What every settings file must name: the sender of the clinic's mails.
SENDER = {"name": "たより整体院", "phone": "03-0000-0000"}


def clinic_rules(**tables: Mapping[str, Any]) -> Rules:
    """The rules of a clinic whose settings file holds just these tables (and the
    sender every file must name)."""
    clinic = {**SENDER, **tables.pop("clinic", {})}
    return parse_config({"clinic": clinic, **tables}, SOURCE).rules


def local(
    tz: ZoneInfo, month: int, day: int, hour: int = 0, minute: int = 0, year: int = 2026
) -> datetime:
    """A wall-clock moment in `tz`."""
    return datetime(year, month, day, hour, minute, tzinfo=tz)


def send_times(messages: Iterable[Due], tz: ZoneInfo) -> dict[Reason, datetime]:
    """Each message's send moment on the clinic's wall clock, by reason."""
    return {m.reason: m.send_at.astimezone(tz) for m in messages}

"""`config/tayori.toml`: the clinic's rules, read strictly into plain values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scheduler.core.closures import Closures
from scheduler.core.config import (
    CadenceRules,
    Clinic,
    ConfigError,
    Digest,
    Dispatch,
    Line,
    NoShowRules,
    ReminderRules,
    Rules,
    SendWindow,
)
from scheduler.core.domain import EMAIL_ADDRESS, LINE_ACCOUNT_ID, LINE_USER_ID
from scheduler.settings.closures import parse_closures
from scheduler.settings.tables import TableReader


@dataclass(frozen=True)
class ConfigFile:
    """Everything `config/tayori.toml` holds."""

    clinic: Clinic = field(default_factory=Clinic)
    rules: Rules = field(default_factory=Rules)
    dispatch: Dispatch = field(default_factory=Dispatch)
    digest: Digest = field(default_factory=Digest)
    line: Line = field(default_factory=Line)
    closures: Closures = field(default_factory=Closures)


def parse_config(values: Mapping[str, Any], source: str) -> ConfigFile:
    """Turn the TOML document into typed settings, refusing unknown or malformed keys."""
    top = TableReader(values, source, "")
    clinic_t = top.table("clinic")
    clinic = Clinic(
        name=clinic_t.text("name", ""),  # required: see _check_sender
        phone=clinic_t.text("phone", ""),
        address=clinic_t.text("address", ""),
        email=clinic_t.text("email", ""),
        booking_url_line=clinic_t.text("booking_url_line", ""),
        booking_url_web=clinic_t.text("booking_url_web", ""),
    )
    timezone = clinic_t.zone("timezone", "Asia/Tokyo")
    clinic_t.done()

    window_t = top.table("send_window")
    window = SendWindow(
        opens_minute=window_t.minute_of_day("opens", SendWindow.opens_minute),
        closes_minute=window_t.minute_of_day("closes", SendWindow.closes_minute),
    )
    if window.opens_minute >= window.closes_minute:
        raise ConfigError(
            f"{source}: send_window: 'opens' must be earlier than 'closes', got {window.describe()}"
        )
    window_t.done()

    defaults = CadenceRules()
    cadence_t = top.table("cadence")
    cadence = CadenceRules(
        send_at=cadence_t.clock_time("send_at", defaults.send_at),
        lapsed_after_days=cadence_t.integer("lapsed_after_days", defaults.lapsed_after_days, 1),
        nudge_after_days=cadence_t.per_phase("nudge_after_days", defaults.nudge_after_days),
        follow_up_days=cadence_t.per_phase("follow_up_days", defaults.follow_up_days),
    )
    cadence_t.done()

    reminder_t = top.table("appointment_reminder")
    reminder = ReminderRules(
        days_before=reminder_t.integer("days_before", ReminderRules.days_before, 0),
        send_at=reminder_t.clock_time("send_at", ReminderRules.send_at),
    )
    reminder_t.done()

    no_show_t = top.table("no_show_follow_up")
    no_show = NoShowRules(
        days_after=no_show_t.integer("days_after", NoShowRules.days_after, 0),
        send_at=no_show_t.clock_time("send_at", NoShowRules.send_at),
    )
    no_show_t.done()

    dispatch_t = top.table("dispatch")
    dispatch = Dispatch(
        max_attempts=dispatch_t.integer("max_attempts", Dispatch.max_attempts, 1),
        retry_after_seconds=dispatch_t.integer(
            "retry_after_seconds", Dispatch.retry_after_seconds, 1
        ),
        lease_seconds=dispatch_t.integer("lease_seconds", Dispatch.lease_seconds, 2),
        concurrency=dispatch_t.integer("concurrency", Dispatch.concurrency, 1, 64),
        cycle_seconds=dispatch_t.integer("cycle_seconds", Dispatch.cycle_seconds, 1, 3600),
    )
    dispatch_t.done()

    digest_t = top.table("digest")
    digest = Digest(
        enabled=digest_t.boolean("enabled", Digest.enabled),
        send_at=digest_t.clock_time("send_at", Digest.send_at),
        email=digest_t.matching("email", EMAIL_ADDRESS, "an email address or empty"),
        line_user_id=digest_t.matching(
            "line_user_id", LINE_USER_ID, "a LINE user id (U and 32 hex digits) or empty"
        ),
        review_after_days=digest_t.integer("review_after_days", Digest.review_after_days, 1),
    )
    digest_t.done()

    line_t = top.table("line")
    line = Line(
        monthly_quota=line_t.integer("monthly_quota", Line.monthly_quota, 0, 10**7),
        basic_id=line_t.matching(
            "basic_id",
            LINE_ACCOUNT_ID,
            'the official account\'s ID: "@" and letters or digits, such as "@123abcde", or empty',
        ),
    )
    line_t.done()
    closures = parse_closures(top.raw_table("closures"), source)
    top.done()

    # Checked last, so that a misspelt key is named as such rather than as missing.
    _check_sender(clinic, source)

    rules = Rules(
        timezone=timezone, window=window, cadence=cadence, reminder=reminder, no_show=no_show
    )
    return ConfigFile(clinic, rules, dispatch, digest, line, closures)


def _check_sender(clinic: Clinic, source: str) -> None:
    """Japan's Act on Specified Electronic Mail: every mail names its sender and a way
    to reach them. A clinic that has not written its own name would send as the
    example's, so the name is required, not defaulted."""
    if not clinic.name.strip():
        raise ConfigError(
            f"{source}: clinic.name: required: the clinic's name, shown as the sender "
            "of every message (the law requires it in every mail)"
        )
    if not (clinic.phone.strip() or clinic.email.strip()):
        raise ConfigError(
            f"{source}: clinic.phone or clinic.email: required: a contact for patients, "
            "shown in every message (the law requires it in every mail)"
        )

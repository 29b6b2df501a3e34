"""The clinic's settings as plain values, and the error a bad setting raises.

The rules read these; `scheduler.settings` fills them in from `config/tayori.toml`
and the environment. Nothing here reads a file, so a rule that needs a setting never
depends on how settings are loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from zoneinfo import ZoneInfo

from scheduler.core.domain import ChannelName, Phase


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class SendWindow:
    """Messages leave only between `opens` (inclusive) and `closes` (exclusive),
    both in minutes after local midnight; `closes` may be 1440 ("24:00")."""

    opens_minute: int = 9 * 60
    closes_minute: int = 20 * 60

    def describe(self) -> str:
        return f"{hhmm(self.opens_minute)}–{hhmm(self.closes_minute)}"


def hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@dataclass(frozen=True)
class CadenceRules:
    send_at: time = time(10, 0)
    lapsed_after_days: int = 60
    nudge_after_days: Mapping[Phase, int] = field(
        default_factory=lambda: {Phase.ACUTE: 3, Phase.REHAB: 6, Phase.MAINTENANCE: 12}
    )
    follow_up_days: Mapping[Phase, int] = field(
        default_factory=lambda: {Phase.ACUTE: 2, Phase.REHAB: 4, Phase.MAINTENANCE: 7}
    )


@dataclass(frozen=True)
class ReminderRules:
    days_before: int = 1
    send_at: time = time(18, 0)


@dataclass(frozen=True)
class NoShowRules:
    days_after: int = 1
    send_at: time = time(10, 0)


@dataclass(frozen=True)
class Rules:
    """Everything the pure rules need besides the patient's facts and `now`."""

    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Tokyo"))
    window: SendWindow = field(default_factory=SendWindow)
    cadence: CadenceRules = field(default_factory=CadenceRules)
    reminder: ReminderRules = field(default_factory=ReminderRules)
    no_show: NoShowRules = field(default_factory=NoShowRules)


@dataclass(frozen=True)
class Clinic:
    name: str = "たより整体院"
    phone: str = ""
    address: str = ""
    email: str = ""
    booking_url_line: str = ""
    booking_url_web: str = ""


@dataclass(frozen=True)
class Dispatch:
    max_attempts: int = 5
    retry_after_seconds: int = 60
    # A claim's lease: renewed while its worker is still sending it, so only a
    # worker that died (or lost its database) lets it run out; then another worker
    # takes the delivery again.
    lease_seconds: int = 300
    # How many messages one worker sends at once (network waits overlap).
    concurrency: int = 8
    # How often the worker runs a cycle (plan, then send what is due).
    cycle_seconds: int = 60


@dataclass(frozen=True)
class Digest:
    """The practitioner's daily summary; it goes to the clinic, never to patients."""

    enabled: bool = True
    send_at: time = time(8, 30)
    email: str = ""  # the clinic's own address
    line_user_id: str = ""  # the practitioner's LINE user id
    review_after_days: int = 42  # acute longer than this: "consider moving to rehab"

    def address(self, channel: ChannelName) -> str:
        """The clinic's own address on `channel` ("" when none is set)."""
        return self.line_user_id if channel is ChannelName.LINE else self.email

    @property
    def channels(self) -> list[ChannelName]:
        """The channels the digest goes by: each with an address (email first)."""
        return [c for c in (ChannelName.EMAIL, ChannelName.LINE) if self.address(c)]


@dataclass(frozen=True)
class Line:
    # LINE's free plan in Japan; the real figure is read from the API once the LINE
    # channel is configured.
    monthly_quota: int = 200
    # The official account's ID ("@123abcde"): the link codes' URL and QR code open
    # the chat with it (`tayori link-code`, `tayori link-codes`). Empty: not set.
    basic_id: str = ""

"""All settings in one place: environment (`.env`) for secrets and paths, and the
clinic's own rules in `config/tayori.toml`.

Parsing is strict: a wrong value stops start-up with a message that names the key
and what was expected, rather than being guessed at.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from email.utils import parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from scheduler.closures import Closures, parse_closures
from scheduler.domain import Phase

if TYPE_CHECKING:
    from scheduler.campaigns import Campaign

DEFAULT_DATABASE_URL = "sqlite:///var/tayori.db"
DEFAULT_CONFIG_PATH = "config/tayori.toml"


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class SendWindow:
    """Messages leave only between `opens` (inclusive) and `closes` (exclusive),
    both in minutes after local midnight; `closes` may be 1440 ("24:00")."""

    opens_minute: int = 9 * 60
    closes_minute: int = 20 * 60

    def describe(self) -> str:
        return f"{_hhmm(self.opens_minute)}–{_hhmm(self.closes_minute)}"


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
    # A delivery left in `sending` longer than this (a worker died) is picked up again.
    lease_seconds: int = 300
    # How many messages one worker sends at once (network waits overlap).
    concurrency: int = 8


@dataclass(frozen=True)
class Digest:
    """The practitioner's daily summary; it goes to the clinic, never to patients."""

    enabled: bool = True
    send_at: time = time(8, 30)
    email: str = ""  # the clinic's own address
    line_user_id: str = ""  # the practitioner's LINE user id
    review_after_days: int = 42  # acute longer than this: "consider moving to rehab"


@dataclass(frozen=True)
class Line:
    # LINE's free plan in Japan; the real figure is read from the API once the LINE
    # channel is configured.
    monthly_quota: int = 200


@dataclass(frozen=True)
class ConfigFile:
    """Everything `config/tayori.toml` holds."""

    clinic: Clinic = field(default_factory=Clinic)
    rules: Rules = field(default_factory=Rules)
    dispatch: Dispatch = field(default_factory=Dispatch)
    digest: Digest = field(default_factory=Digest)
    line: Line = field(default_factory=Line)
    closures: Closures = field(default_factory=Closures)


@dataclass(frozen=True)
class Smtp:
    """An SMTP server to send email through (SMTP_* and MAIL_FROM)."""

    host: str
    port: int
    security: str  # "starttls", "ssl" or "none"
    mail_from: str
    username: str = ""
    password: str = field(default="", repr=False)


@dataclass(frozen=True)
class LineApi:
    """The LINE Messaging API (LINE_* variables)."""

    access_token: str = field(repr=False)
    channel_secret: str = field(default="", repr=False)
    base_url: str = "https://api.line.me"


SMTP_PORTS = {"starttls": 587, "ssl": 465, "none": 25}


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    config_path: Path = Path(DEFAULT_CONFIG_PATH)
    messages_dir: Path = Path("messages")
    outbox_dir: Path = Path("var/outbox")
    log_level: str = "INFO"
    config: ConfigFile = field(default_factory=ConfigFile)
    # Real channels; None means that channel's messages go to the preview outbox.
    smtp: Smtp | None = None
    line_api: LineApi | None = None
    # Where patients reach Tayori (one-click unsubscribe links), and the key that
    # signs those links.
    public_url: str = ""
    secret_key: str = field(default="", repr=False)
    # Seasonal newsletters (config/campaigns.toml).
    campaigns: tuple[Campaign, ...] = ()

    @property
    def timezone(self) -> ZoneInfo:
        return self.rules.timezone

    @property
    def clinic(self) -> Clinic:
        return self.config.clinic

    @property
    def rules(self) -> Rules:
        return self.config.rules

    @property
    def dispatch(self) -> Dispatch:
        return self.config.dispatch

    @property
    def digest(self) -> Digest:
        return self.config.digest


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from the environment and the TOML file it points to."""
    env = os.environ if env is None else env
    config_path = Path(env.get("TAYORI_CONFIG") or DEFAULT_CONFIG_PATH)
    config = parse_config(_read_toml(config_path), source=str(config_path))
    log_level = (env.get("TAYORI_LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(
            f"TAYORI_LOG_LEVEL: expected DEBUG, INFO, WARNING or ERROR, got {log_level!r}"
        )
    return Settings(
        database_url=normalise_database_url(env.get("DATABASE_URL") or DEFAULT_DATABASE_URL),
        config_path=config_path,
        messages_dir=Path(env.get("TAYORI_MESSAGES_DIR") or "messages"),
        outbox_dir=Path(env.get("TAYORI_OUTBOX_DIR") or "var/outbox"),
        log_level=log_level,
        config=config,
        smtp=_smtp(env),
        line_api=_line_api(env),
        public_url=_url(env, "TAYORI_PUBLIC_URL", "").rstrip("/"),
        secret_key=env.get("TAYORI_SECRET_KEY", ""),
        campaigns=_campaigns(env, config_path),
    )


def _campaigns(env: Mapping[str, str], config_path: Path) -> tuple[Campaign, ...]:
    """The campaigns file: TAYORI_CAMPAIGNS, else campaigns.toml beside the settings
    file; without either there are no newsletters."""
    # Imported here: the campaigns parser builds on this module's table reader.
    from scheduler.campaigns import parse_campaigns

    named = env.get("TAYORI_CAMPAIGNS")
    path = Path(named) if named else config_path.parent / "campaigns.toml"
    if not named and not path.exists():
        return ()
    return parse_campaigns(_read_toml(path, "TAYORI_CAMPAIGNS"), str(path))


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name) or default
    if value and not re.match(r"^https?://[^\s/]+", value):
        raise ConfigError(
            f"{name}: expected an http(s) URL such as https://example.jp, got {value!r}"
        )
    return value


def _smtp(env: Mapping[str, str]) -> Smtp | None:
    host = env.get("SMTP_HOST")
    if not host:
        return None
    security = (env.get("SMTP_SECURITY") or "starttls").lower()
    if security not in SMTP_PORTS:
        raise ConfigError(f"SMTP_SECURITY: expected starttls, ssl or none, got {security!r}")
    port_text = env.get("SMTP_PORT") or str(SMTP_PORTS[security])
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"SMTP_PORT: expected a port number, got {port_text!r}")
    mail_from = env.get("MAIL_FROM", "")
    name, address = parseaddr(mail_from)
    written_name = mail_from.rpartition("<")[0].strip().strip('"')
    if not (EMAIL_ADDRESS.search(address) and address.isascii()) or name != written_name:
        # parseaddr is how the mail is built: what it cannot read back as written
        # (a name with , : or ; unquoted) would go out mangled or not at all.
        raise ConfigError(
            "MAIL_FROM: expected the sender's address, such as "
            "'たより整体院 <info@clinic.example>' (a name with , : ; or @ in double "
            f"quotes), got {mail_from!r}"
        )
    return Smtp(
        host=host,
        port=int(port_text),
        security=security,
        mail_from=mail_from,
        username=env.get("SMTP_USERNAME", ""),
        password=env.get("SMTP_PASSWORD", ""),
    )


def _line_api(env: Mapping[str, str]) -> LineApi | None:
    token = env.get("LINE_CHANNEL_ACCESS_TOKEN")
    if not token:
        return None
    return LineApi(
        access_token=token,
        channel_secret=env.get("LINE_CHANNEL_SECRET", ""),
        base_url=_url(env, "LINE_API_BASE_URL", "https://api.line.me").rstrip("/"),
    )


def normalise_database_url(url: str) -> str:
    """Accept SQLite and PostgreSQL URLs; PostgreSQL always goes through psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"DATABASE_URL: expected a URL such as {DEFAULT_DATABASE_URL} or "
            "postgresql+psycopg://user@host/db, got a value that is not a URL"
        ) from None
    backend = parsed.get_backend_name()
    if backend in ("postgres", "postgresql"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if backend == "sqlite":
        return url
    raise ConfigError(
        f"DATABASE_URL: expected a sqlite:/// or postgresql+psycopg:// URL, got a {backend} URL"
    )


def _read_toml(path: Path, variable: str = "TAYORI_CONFIG") -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (check {variable})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def parse_config(values: Mapping[str, Any], source: str) -> ConfigFile:
    """Turn the TOML document into typed settings, refusing unknown or malformed keys."""
    top = _Table(values, source, "")
    clinic_t = top.table("clinic")
    clinic = Clinic(
        name=clinic_t.text("name", Clinic.name),
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
        lease_seconds=dispatch_t.integer("lease_seconds", Dispatch.lease_seconds, 30),
        concurrency=dispatch_t.integer("concurrency", Dispatch.concurrency, 1, 64),
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
    line = Line(monthly_quota=line_t.integer("monthly_quota", Line.monthly_quota, 0, 10**7))
    line_t.done()
    closures = parse_closures(top.raw_table("closures"), source)
    top.done()

    rules = Rules(
        timezone=timezone, window=window, cadence=cadence, reminder=reminder, no_show=no_show
    )
    return ConfigFile(clinic, rules, dispatch, digest, line, closures)


_HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
LINE_USER_ID = re.compile(r"^U[0-9a-f]{32}$")
EMAIL_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


class _Table:
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

    def table(self, key: str) -> _Table:
        value = self._get(key)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self._error(key, "a table", value)
        return _Table(value, self._source, f"{self._name(key)}.")

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

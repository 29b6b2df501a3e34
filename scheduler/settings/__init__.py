"""All settings in one place: environment (`.env`) for secrets and paths, and the
clinic's own rules in `config/tayori.toml`.

Parsing is strict: a wrong value stops start-up with a message that names the key
and what was expected, rather than being guessed at.
"""

from __future__ import annotations

import io
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from scheduler.core.campaigns import Campaign
from scheduler.core.config import Clinic, ConfigError, Digest, Dispatch, Rules
from scheduler.core.domain import EMAIL_ADDRESS
from scheduler.planning_processes import planning_processes
from scheduler.settings.campaigns import parse_campaigns
from scheduler.settings.config_file import ConfigFile, parse_config

__all__ = [
    "ConfigError",
    "ConfigFile",
    "LineApi",
    "Settings",
    "Smtp",
    "load_env_file",
    "load_settings",
    "log_format",
    "log_level",
]

DEFAULT_DATABASE_URL = "sqlite:///var/tayori.db"
# The clinic of the installation's own settings (made by migration 0009).
DEFAULT_CLINIC_ID = 1
DEFAULT_CLINIC_SLUG = "default"
DEFAULT_CONFIG_PATH = "config/tayori.toml"
LOG_FORMATS = ("text", "json")


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
    base_url: str = "https://api.line.me"


SMTP_PORTS = {"starttls": 587, "ssl": 465, "none": 25}


@dataclass(frozen=True)
class Spreading:
    """How a plan of many patients is spread over processes (outbox/spread.py)."""

    # TAYORI_PLANNING_PROCESSES; 1 plans in the worker's own process.
    processes: int = 1
    # A plan of fewer patients stays in one process: starting children would cost
    # more than they save.
    from_patients: int = 20_000


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    config_path: Path = Path(DEFAULT_CONFIG_PATH)
    messages_dir: Path = Path("messages")
    outbox_dir: Path = Path("var/outbox")
    log_level: str = "INFO"
    log_format: str = "text"
    config: ConfigFile = field(default_factory=ConfigFile)
    # Real channels; None means that channel's messages go to the preview outbox.
    smtp: Smtp | None = None
    line_api: LineApi | None = None
    # Signs LINE's webhook requests (LINE_CHANNEL_SECRET); read apart from the access
    # token: the webhook works without it (its replies are then written as previews).
    line_channel_secret: str = field(default="", repr=False)
    # Where patients reach Tayori (one-click unsubscribe links), and the key that
    # signs those links: both set, or neither (then a mailto: to the clinic).
    public_url: str = ""
    secret_key: str = field(default="", repr=False)
    # Seasonal newsletters (config/campaigns.toml).
    campaigns: tuple[Campaign, ...] = ()
    # When set, GET /metrics answers only requests bearing it (TAYORI_METRICS_TOKEN).
    metrics_token: str = field(default="", repr=False)
    # The clinic these settings are for (store/clinics.py): the installation's own
    # unless they were read from a clinic's folder (`clinic_settings`).
    clinic_id: int = DEFAULT_CLINIC_ID
    clinic_slug: str = DEFAULT_CLINIC_SLUG
    spreading: Spreading = field(default_factory=Spreading)

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
    public_url, secret_key = _unsubscribe_links(env)
    return Settings(
        database_url=normalise_database_url(env.get("DATABASE_URL") or DEFAULT_DATABASE_URL),
        config_path=config_path,
        messages_dir=Path(env.get("TAYORI_MESSAGES_DIR") or "messages"),
        outbox_dir=Path(env.get("TAYORI_OUTBOX_DIR") or "var/outbox"),
        log_level=log_level(env),
        log_format=log_format(env),
        config=config,
        smtp=_smtp(env),
        line_api=_line_api(env),
        line_channel_secret=env.get("LINE_CHANNEL_SECRET", ""),
        public_url=public_url,
        secret_key=secret_key,
        campaigns=_campaigns(env, config_path),
        metrics_token=env.get("TAYORI_METRICS_TOKEN", ""),
        spreading=Spreading(processes=planning_processes(env)),
    )


# What a clinic's own `.env` may set: its channels and their credentials. They are
# read for that clinic only; the installation's values never stand in for them.
CLINIC_VARIABLES = (
    "LINE_CHANNEL_ACCESS_TOKEN",
    "LINE_CHANNEL_SECRET",
    "LINE_API_BASE_URL",
    "SMTP_HOST",
    "SMTP_PORT",
    "SMTP_SECURITY",
    "SMTP_USERNAME",
    "SMTP_PASSWORD",
    "MAIL_FROM",
)
# Where a clinic's files are read from, set for each clinic from its folder.
_CLINIC_PATHS = ("TAYORI_CONFIG", "TAYORI_MESSAGES_DIR", "TAYORI_CAMPAIGNS")


def clinic_settings(
    installation: Settings,
    env: Mapping[str, str],
    config_dir: Path | None,
    clinic_id: int,
    slug: str,
) -> Settings:
    """The settings of one clinic. Without a folder: the installation's own. With
    one: the installation's database, outbox and links, and from the folder
    everything of the clinic's own: `tayori.toml`, `campaigns.toml` if present,
    `messages/`, and the credentials in its `.env` (CLINIC_VARIABLES)."""
    if config_dir is None:
        return replace(installation, clinic_id=clinic_id, clinic_slug=slug)
    shared = {
        name: value
        for name, value in env.items()
        if name not in CLINIC_VARIABLES and name not in _CLINIC_PATHS
    }
    own = {
        "DATABASE_URL": installation.database_url,
        "TAYORI_CONFIG": str(config_dir / "tayori.toml"),
        "TAYORI_MESSAGES_DIR": str(config_dir / "messages"),
        # Each clinic's previews (and preview pages, beside them) apart, so that no
        # one reads another's messages: var/clinics/<slug>/outbox.
        "TAYORI_OUTBOX_DIR": str(installation.outbox_dir.parent / "clinics" / slug / "outbox"),
    }
    return replace(
        load_settings(shared | own | clinic_secrets(config_dir / ".env")),
        clinic_id=clinic_id,
        clinic_slug=slug,
    )


def clinic_secrets(path: Path) -> dict[str, str]:
    """A clinic's `.env`: only CLINIC_VARIABLES, each named in the error if wrong."""
    from dotenv import dotenv_values

    if not path.is_file():
        return {}
    # Not interpolated: `${SMTP_PASSWORD}` must not bring in the installation's.
    values = dotenv_values(
        stream=io.StringIO(_read_text(path, "its permissions")), interpolate=False
    )
    unknown = sorted(name for name in values if name not in CLINIC_VARIABLES)
    if unknown:
        raise ConfigError(
            f"{path}: {', '.join(unknown)}: a clinic's .env holds only its channels' "
            f"settings ({', '.join(CLINIC_VARIABLES)})"
        )
    return {name: value or "" for name, value in values.items()}


def log_level(env: Mapping[str, str]) -> str:
    """TAYORI_LOG_LEVEL, read on its own too: the command line sets up logging
    before the rest of the settings, so that a failure to read them can be logged."""
    level = (env.get("TAYORI_LOG_LEVEL") or "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(
            f"TAYORI_LOG_LEVEL: expected DEBUG, INFO, WARNING or ERROR, got {level!r}"
        )
    return level


def log_format(env: Mapping[str, str]) -> str:
    """LOG_FORMAT: `text` for people, `json` (one object a line) for a log collector;
    read on its own, like TAYORI_LOG_LEVEL."""
    text = env.get("LOG_FORMAT") or "text"
    if text.lower() not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT: expected text or json, got {text!r}")
    return text.lower()


def _campaigns(env: Mapping[str, str], config_path: Path) -> tuple[Campaign, ...]:
    """The campaigns file: TAYORI_CAMPAIGNS, else campaigns.toml beside the settings
    file; without either there are no newsletters."""
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


SECRET_KEY_MIN_LENGTH = 32
_MAKE_A_KEY = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def _unsubscribe_links(env: Mapping[str, str]) -> tuple[str, str]:
    """TAYORI_PUBLIC_URL and TAYORI_SECRET_KEY: both or neither. One without the other
    is a mistake in the settings, not a wish for mailto: links, so it stops start-up.
    The key is never shown, only its length."""
    public_url = _url(env, "TAYORI_PUBLIC_URL", "").rstrip("/")
    secret_key = env.get("TAYORI_SECRET_KEY", "")
    if public_url and not secret_key:
        raise ConfigError(
            "TAYORI_SECRET_KEY: required with TAYORI_PUBLIC_URL: a random key of at least "
            f"{SECRET_KEY_MIN_LENGTH} characters that signs the unsubscribe links "
            f"(make one with {_MAKE_A_KEY})"
        )
    if secret_key and not public_url:
        raise ConfigError(
            "TAYORI_PUBLIC_URL: required with TAYORI_SECRET_KEY: the address where patients "
            "reach Tayori's web process (`tayori serve`), such as https://tayori.clinic.example"
        )
    if secret_key and len(secret_key) < SECRET_KEY_MIN_LENGTH:
        raise ConfigError(
            f"TAYORI_SECRET_KEY: expected at least {SECRET_KEY_MIN_LENGTH} characters, got "
            f"{len(secret_key)} (make one with {_MAKE_A_KEY})"
        )
    return public_url, secret_key


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
        if parsed.drivername not in ("sqlite", "sqlite+pysqlite"):
            raise ConfigError(
                f"DATABASE_URL: expected sqlite:/// (the sqlite3 module), got {parsed.drivername}://"
            )
        timeout = parsed.query.get("timeout")
        if timeout is not None and not (
            isinstance(timeout, str) and re.fullmatch(r"\d+(\.\d+)?", timeout)
        ):
            raise ConfigError(
                "DATABASE_URL: timeout: expected how many seconds to wait for a locked "
                f"database, such as ?timeout=30, got {timeout!r}"
            )
        return url
    raise ConfigError(
        f"DATABASE_URL: expected a sqlite:/// or postgresql+psycopg:// URL, got a {backend} URL"
    )


def load_env_file(path: Path) -> None:
    """Put the variables of a `.env` file, if there is one, into the environment;
    a variable already set keeps its value."""
    from dotenv import load_dotenv

    if path.is_file():
        load_dotenv(stream=io.StringIO(_read_text(path, "its permissions")))


def _read_toml(path: Path, variable: str = "TAYORI_CONFIG") -> dict[str, Any]:
    try:
        return tomllib.loads(_read_text(path, variable))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def _read_text(path: Path, check: str) -> str:
    """A settings file's text; a file that cannot be read or is not UTF-8 is a
    ConfigError naming the file, and `check` says where its name came from."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (check {check})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror} (check {check})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        # Editors in Japan may still save as Shift_JIS: name the line to look at.
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (save the file as UTF-8)") from None

"""Settings are parsed strictly: a wrong value names its key and what was expected."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from scheduler.core.config import ConfigError
from scheduler.core.domain import Phase
from scheduler.settings import ConfigFile, load_settings, normalise_database_url, parse_config

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "tayori.toml"


def test_empty_file_means_every_default() -> None:
    assert parse_config({}, "t.toml") == ConfigFile()


def test_shipped_settings_file_is_valid_and_matches_the_documented_rules() -> None:
    settings = load_settings({"TAYORI_CONFIG": str(SHIPPED)})
    cadence = settings.rules.cadence
    assert dict(cadence.nudge_after_days) == {
        Phase.ACUTE: 3,
        Phase.REHAB: 6,
        Phase.MAINTENANCE: 12,
    }
    assert dict(cadence.follow_up_days) == {
        Phase.ACUTE: 2,
        Phase.REHAB: 4,
        Phase.MAINTENANCE: 7,
    }
    assert settings.rules.window.describe() == "09:00–20:00"
    assert settings.timezone.key == "Asia/Tokyo"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param(
            {"send_window": {"opens": "9am"}},
            "t.toml: send_window.opens: expected a time of day",
            id="time-of-day",
        ),
        pytest.param(
            {"send_window": {"opens": "20:00", "closes": "09:00"}},
            "'opens' must be earlier than 'closes'",
            id="window-backwards",
        ),
        pytest.param(
            {"cadence": {"nudge_after_days": {"acute": 0}}},
            "t.toml: cadence.nudge_after_days.acute: expected a whole number from 1 to 90",
            id="cadence-days",
        ),
        pytest.param(
            {"cadence": {"nudge_after_days": {"acut": 3}}},
            "unknown key 'acut'",
            id="misspelt-phase",
        ),
        pytest.param(
            {"clinic": {"timezone": "Tokyo"}},
            "t.toml: clinic.timezone: expected an IANA time zone",
            id="time-zone",
        ),
        pytest.param({"sendwindow": {}}, "top level: unknown key 'sendwindow'", id="unknown-table"),
        pytest.param(
            {"digest": {"enabled": "yes"}}, "digest.enabled: expected true or false", id="boolean"
        ),
        pytest.param(
            {"digest": {"line_user_id": "someone"}},
            "digest.line_user_id: expected a LINE user id",
            id="line-user-id",
        ),
        pytest.param(
            {"line": {"basic_id": "123abcde"}},
            "line.basic_id: expected the official account's ID",
            id="basic-id-without-at",
        ),
        pytest.param(
            {"line": {"basic_id": "https://line.me/R/ti/p/@123abcde"}},
            "line.basic_id: expected the official account's ID",
            id="basic-id-as-a-url",
        ),
        pytest.param(
            {"line": {"basic_id": "@tayori seitai"}},
            "line.basic_id: expected the official account's ID",
            id="basic-id-with-a-space",
        ),
        pytest.param(
            {"dispatch": {"max_attempts": True}},
            "dispatch.max_attempts: expected a whole number",
            id="bool-is-not-a-number",
        ),
    ],
)
def test_wrong_value_names_the_key_and_what_was_expected(
    document: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(document, "t.toml")


@pytest.mark.parametrize("basic_id", ["", "@123abcde", "@tayori-seitai", "@clinic.tokyo_1"])
def test_line_basic_id_takes_a_basic_or_premium_id_or_nothing(basic_id: str) -> None:
    assert parse_config({"line": {"basic_id": basic_id}}, "t.toml").line.basic_id == basic_id


def test_missing_settings_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("nowhere.toml: file not found")):
        load_settings({"TAYORI_CONFIG": str(tmp_path / "nowhere.toml")})


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[clinic\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape("broken.toml: not valid TOML")):
        load_settings({"TAYORI_CONFIG": str(path)})


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("sqlite:///var/tayori.db", "sqlite:///var/tayori.db", id="sqlite"),
        pytest.param(
            "sqlite:///var/tayori.db?timeout=0.5",
            "sqlite:///var/tayori.db?timeout=0.5",
            id="sqlite-busy-timeout",
        ),
        pytest.param(
            "postgresql://u:p@db/tayori", "postgresql+psycopg://u:p@db/tayori", id="postgresql"
        ),
        pytest.param("postgres://u@db/t", "postgresql+psycopg://u@db/t", id="heroku-style"),
    ],
)
def test_database_urls_use_sqlite_or_psycopg(url: str, expected: str) -> None:
    assert normalise_database_url(url) == expected


def test_unsupported_database_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=re.escape("DATABASE_URL: expected a sqlite:///")):
        normalise_database_url("mysql://root@localhost/test")


def test_a_sqlite_driver_other_than_sqlite3_is_refused() -> None:
    with pytest.raises(ConfigError, match=re.escape("DATABASE_URL: expected sqlite:///")):
        normalise_database_url("sqlite+aiosqlite:///var/tayori.db")


@pytest.mark.parametrize(
    "timeout",
    [
        pytest.param("abc", id="not-a-number"),
        pytest.param("-1", id="negative"),
        pytest.param("30s", id="with-a-unit"),
        pytest.param("1&timeout=2", id="twice"),
    ],
)
def test_a_sqlite_busy_timeout_that_is_not_seconds_is_refused(timeout: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("DATABASE_URL: timeout: expected")):
        normalise_database_url(f"sqlite:///var/tayori.db?timeout={timeout}")


def test_log_level_is_checked() -> None:
    with pytest.raises(ConfigError, match="TAYORI_LOG_LEVEL"):
        load_settings({"TAYORI_CONFIG": str(SHIPPED), "TAYORI_LOG_LEVEL": "LOUD"})


@pytest.mark.parametrize(
    "mail_from",
    [
        pytest.param("たより整体院 <info@clinic.example>", id="name-and-address"),
        pytest.param("info@clinic.example", id="address-only"),
        pytest.param('"佐藤整体院, 本院" <info@clinic.example>', id="quoted-name-with-comma"),
    ],
)
def test_a_sender_the_mail_can_carry_is_accepted(mail_from: str) -> None:
    settings = load_settings(
        {"TAYORI_CONFIG": str(SHIPPED), "SMTP_HOST": "mail.example", "MAIL_FROM": mail_from}
    )
    assert settings.smtp is not None
    assert settings.smtp.mail_from == mail_from


@pytest.mark.parametrize(
    "mail_from",
    [
        pytest.param("佐藤整体院, 本院 <info@clinic.example>", id="unquoted-comma"),
        pytest.param("Sato: Clinic <info@clinic.example>", id="unquoted-colon"),
        pytest.param("たより整体院 <受付@clinic.example>", id="non-ascii-address"),
        pytest.param("", id="missing"),
    ],
)
def test_a_sender_the_mail_would_mangle_is_refused_naming_the_variable(mail_from: str) -> None:
    with pytest.raises(ConfigError, match="MAIL_FROM: expected the sender's address"):
        load_settings(
            {"TAYORI_CONFIG": str(SHIPPED), "SMTP_HOST": "mail.example", "MAIL_FROM": mail_from}
        )

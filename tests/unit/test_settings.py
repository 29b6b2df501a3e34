"""Settings are parsed strictly: a wrong value names its key and what was expected."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from scheduler.core.config import Clinic, ConfigError
from scheduler.core.domain import Phase
from scheduler.settings import ConfigFile, load_settings, normalise_database_url, parse_config

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "tayori.toml"


# What every settings file must hold: the sender every mail names.
SENDER = {"clinic": {"name": "たより整体院", "phone": "03-0000-0000"}}


def test_a_file_with_only_the_sender_means_every_other_default() -> None:
    expected = ConfigFile(clinic=Clinic(name="たより整体院", phone="03-0000-0000"))
    assert parse_config(SENDER, "t.toml") == expected


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
        parse_config(SENDER | document, "t.toml")


@pytest.mark.parametrize(
    ("clinic", "key"),
    [
        pytest.param({"phone": "03-0000-0000"}, "clinic.name: required", id="no-name"),
        pytest.param({"name": "", "phone": "03-0000-0000"}, "clinic.name: required", id="empty"),
        pytest.param(
            {"name": "  ", "email": "info@clinic.example"}, "clinic.name: required", id="blank"
        ),
        pytest.param(
            {"name": "たより整体院"}, "clinic.phone or clinic.email: required", id="no-contact"
        ),
        pytest.param(
            {"name": "たより整体院", "phone": "", "email": " "},
            "clinic.phone or clinic.email: required",
            id="empty-contacts",
        ),
    ],
)
def test_the_sender_every_mail_names_is_required(clinic: dict[str, str], key: str) -> None:
    """Japan's Act on Specified Electronic Mail: the sender's name and a contact."""
    with pytest.raises(ConfigError, match=re.escape(f"t.toml: {key}")):
        parse_config({"clinic": clinic}, "t.toml")


@pytest.mark.parametrize(
    "contact",
    [
        pytest.param({"phone": "03-0000-0000"}, id="phone"),
        pytest.param({"email": "info@clinic.example"}, id="email"),
    ],
)
def test_a_phone_or_an_email_is_contact_enough(contact: dict[str, str]) -> None:
    config = parse_config({"clinic": {"name": "たより整体院", **contact}}, "t.toml")
    assert config.clinic.name == "たより整体院"


def test_a_misspelt_clinic_key_is_named_before_the_missing_sender() -> None:
    with pytest.raises(ConfigError, match=re.escape("clinic: unknown key 'phon'")):
        parse_config({"clinic": {"name": "たより整体院", "phon": "03"}}, "t.toml")


@pytest.mark.parametrize("basic_id", ["", "@123abcde", "@tayori-seitai", "@clinic.tokyo_1"])
def test_line_basic_id_takes_a_basic_or_premium_id_or_nothing(basic_id: str) -> None:
    config = parse_config({**SENDER, "line": {"basic_id": basic_id}}, "t.toml")
    assert config.line.basic_id == basic_id


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


def _planning_processes(value: str | None) -> int:
    variables = {"TAYORI_CONFIG": str(SHIPPED)}
    if value is not None:
        variables["TAYORI_PLANNING_PROCESSES"] = value
    return load_settings(variables).spreading.processes


@pytest.mark.parametrize("value", [None, "", "auto", "AUTO"])
def test_planning_is_spread_over_every_core_unless_told_otherwise(value: str | None) -> None:
    assert _planning_processes(value) == len(os.sched_getaffinity(0))


def test_planning_processes_take_a_number() -> None:
    assert _planning_processes("1") == 1
    assert _planning_processes(" 3 ") == 3


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_planning_processes_other_than_a_number_from_one_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="TAYORI_PLANNING_PROCESSES: expected auto or a whole"):
        _planning_processes(value)


def test_log_format_is_checked() -> None:
    with pytest.raises(ConfigError, match="LOG_FORMAT: expected text or json, got 'xml'"):
        load_settings({"TAYORI_CONFIG": str(SHIPPED), "LOG_FORMAT": "xml"})


@pytest.mark.parametrize(("value", "expected"), [("", "text"), ("json", "json"), ("JSON", "json")])
def test_log_format_is_text_unless_json_is_asked_for(value: str, expected: str) -> None:
    settings = load_settings({"TAYORI_CONFIG": str(SHIPPED), "LOG_FORMAT": value})
    assert settings.log_format == expected


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


KEY_32 = "k" * 32


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        pytest.param(
            {"TAYORI_PUBLIC_URL": "https://tayori.clinic.example"},
            "TAYORI_SECRET_KEY: required with TAYORI_PUBLIC_URL",
            id="url-without-key",
        ),
        pytest.param(
            {"TAYORI_SECRET_KEY": KEY_32},
            "TAYORI_PUBLIC_URL: required with TAYORI_SECRET_KEY",
            id="key-without-url",
        ),
        pytest.param(
            {"TAYORI_PUBLIC_URL": "https://tayori.clinic.example", "TAYORI_SECRET_KEY": "k" * 31},
            "TAYORI_SECRET_KEY: expected at least 32 characters, got 31",
            id="key-too-short",
        ),
        pytest.param(
            {"TAYORI_PUBLIC_URL": "tayori.clinic.example", "TAYORI_SECRET_KEY": KEY_32},
            "TAYORI_PUBLIC_URL: expected an http(s) URL",
            id="url-not-a-url",
        ),
    ],
)
def test_unsubscribe_link_settings_go_together(variables: dict[str, str], message: str) -> None:
    """One without the other is a mistake, not a wish for mailto: links."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings({"TAYORI_CONFIG": str(SHIPPED), **variables})


def test_a_short_key_is_named_by_its_length_never_shown() -> None:
    secret = "my-secret-password"
    with pytest.raises(ConfigError) as error:
        load_settings(
            {
                "TAYORI_CONFIG": str(SHIPPED),
                "TAYORI_PUBLIC_URL": "https://t.example",
                "TAYORI_SECRET_KEY": secret,
            }
        )
    assert secret not in str(error.value)


@pytest.mark.parametrize(
    "variables",
    [
        pytest.param({}, id="neither"),
        pytest.param(
            {"TAYORI_PUBLIC_URL": "https://tayori.clinic.example/", "TAYORI_SECRET_KEY": KEY_32},
            id="both",
        ),
    ],
)
def test_unsubscribe_link_settings_both_or_neither(variables: dict[str, str]) -> None:
    settings = load_settings({"TAYORI_CONFIG": str(SHIPPED), **variables})
    assert settings.public_url == variables.get("TAYORI_PUBLIC_URL", "").rstrip("/")
    assert settings.secret_key == variables.get("TAYORI_SECRET_KEY", "")
    assert KEY_32 not in repr(settings)


def test_the_metrics_token_is_read_and_never_shown() -> None:
    token = "a-token-for-prometheus"
    settings = load_settings({"TAYORI_CONFIG": str(SHIPPED), "TAYORI_METRICS_TOKEN": token})
    assert settings.metrics_token == token
    assert token not in repr(settings)

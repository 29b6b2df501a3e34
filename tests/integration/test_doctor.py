"""`tayori doctor`: every check against the real thing (databases, the loopback LINE
API and SMTP servers), one line each, in words a clinic can act on."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
import sqlalchemy as sa

from scheduler.commands import main
from scheduler.commands.operations import PROBLEMS_SHOWN
from scheduler.store import db
from tests.integration.test_cli import break_template, own_messages, refused_port
from tests.servers.line_api import LineApiServer
from tests.servers.smtp import Certificate, SmtpServer, make_certificate

CHECKS = ["settings", "database", "templates", "LINE", "email"]
MAIL_FROM = "たより整体院 <info@clinic.example>"
PASSWORD = "smtp-password-never-shown"


def doctor(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, tuple[str, str]]]:
    """The exit status, and each check's (outcome, text) by name."""
    status = main(["doctor"])
    findings: dict[str, tuple[str, str]] = {}
    for line in capsys.readouterr().out.splitlines():
        outcome, _, rest = line.partition(" ")
        name, _, text = rest.strip().partition(": ")
        if name in CHECKS:
            findings[name] = (outcome, text)
    assert list(findings) == CHECKS
    return status, findings


def set_smtp(monkeypatch: pytest.MonkeyPatch, server: SmtpServer, **more: str) -> None:
    settings = server.settings()
    env = {
        "SMTP_HOST": settings.host,
        "SMTP_PORT": str(settings.port),
        "SMTP_SECURITY": settings.security,
        "SMTP_USERNAME": settings.username,
        "SMTP_PASSWORD": settings.password,
        "MAIL_FROM": MAIL_FROM,
        **more,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def set_line(monkeypatch: pytest.MonkeyPatch, token: str, base_url: str) -> None:
    monkeypatch.setenv("LINE_CHANNEL_ACCESS_TOKEN", token)
    monkeypatch.setenv("LINE_API_BASE_URL", base_url)


# --- all well ---------------------------------------------------------------------


def test_a_migrated_clinic_without_channels_passes_and_says_messages_go_to_previews(
    clinic_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, findings = doctor(capsys)

    assert status == 0
    assert {outcome for outcome, _ in findings.values()} == {"ok"}
    outbox = clinic_env["TAYORI_OUTBOX_DIR"]
    assert findings["LINE"][1] == (
        f"not set (LINE_CHANNEL_ACCESS_TOKEN): LINE messages are written to {outbox} as "
        "previews, not sent"
    )
    assert findings["email"][1] == (
        f"not set (SMTP_HOST): emails are written to {outbox} as previews, not sent"
    )


def test_the_last_line_says_all_checks_passed(
    local_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "all checks passed"


# --- settings -----------------------------------------------------------------------


def test_settings_that_do_not_load_name_the_file_and_key_and_the_other_checks_wait(
    local_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "tayori.toml"
    config.write_text('[send_window]\nopens = "9am"\n', encoding="utf-8")
    monkeypatch.setenv("TAYORI_CONFIG", str(config))

    status, findings = doctor(capsys)

    assert status == 1
    outcome, text = findings["settings"]
    assert outcome == "PROBLEM"
    assert text.startswith(f"configuration: {config}: send_window.opens")
    assert all(findings[name] == ("skipped", "fix the settings first") for name in CHECKS[1:])


# --- the database -------------------------------------------------------------------


def test_no_database_file_says_to_run_db_upgrade_and_creates_none(
    local_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = tmp_path / "new" / "tayori.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{missing}")

    status, findings = doctor(capsys)

    assert status == 1
    assert findings["database"] == (
        "PROBLEM",
        f"no database at sqlite:///{missing} yet: run `tayori db upgrade`",
    )
    assert not missing.parent.exists()


def set_revision(database_url: str, revision: str) -> None:
    with sqlite3.connect(sa.engine.make_url(database_url).database or "") as connection:
        connection.execute("UPDATE alembic_version SET version_num = ?", (revision,))


@pytest.mark.parametrize(
    ("revision", "problem"),
    [
        pytest.param("0007", "is not up to date: run `tayori db upgrade`", id="behind"),
        pytest.param(
            "9999", "was migrated by a newer version of Tayori: run that version", id="newer"
        ),
    ],
)
def test_a_database_at_another_revision_says_what_to_run(
    local_env: dict[str, str], capsys: pytest.CaptureFixture[str], revision: str, problem: str
) -> None:
    set_revision(local_env["DATABASE_URL"], revision)

    status, findings = doctor(capsys)

    assert status == 1
    assert findings["database"] == ("PROBLEM", f"{local_env['DATABASE_URL']} {problem}")


@pytest.fixture
def without_temporary_tables(postgres_schema_url: str) -> Iterator[str]:
    """A migrated PostgreSQL database whose role may not create temporary tables
    (revoked from every role, as a cautious hosting engineer may do): its URL. On
    the server of the tests' own database, which `postgres_schema_url` requires."""
    base = os.environ["TEST_POSTGRES_URL"]
    name = f"tayori_no_temp_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        connection.exec_driver_sql(f'REVOKE TEMPORARY ON DATABASE "{name}" FROM PUBLIC')
        connection.exec_driver_sql(f'CREATE ROLE "{name}" LOGIN')
    owner_url = sa.engine.make_url(base).set(database=name)
    owner = db.make_engine(owner_url.render_as_string(hide_password=False))
    db.upgrade(owner)
    with owner.begin() as connection:
        connection.exec_driver_sql(f'GRANT SELECT ON alembic_version TO "{name}"')
    owner.dispose()
    try:
        yield owner_url.set(username=name, password=None).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
            connection.exec_driver_sql(f'DROP ROLE "{name}"')
        admin.dispose()


@pytest.mark.postgres
def test_a_role_without_temporary_tables_is_told_what_to_grant(
    local_env: dict[str, str],
    without_temporary_tables: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", without_temporary_tables)

    status, findings = doctor(capsys)

    assert status == 1
    assert findings["database"] == (
        "PROBLEM",
        f"{without_temporary_tables}: Tayori's role may not create temporary tables, through "
        "which plans write their rows: GRANT TEMPORARY ON DATABASE to it",
    )


def test_an_unreachable_database_says_why_with_the_password_hidden_and_the_rest_still_run(
    local_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = refused_port()
    monkeypatch.setenv("DATABASE_URL", f"postgresql+psycopg://tayori:s3cret@127.0.0.1:{port}/t")

    status, findings = doctor(capsys)

    assert status == 1
    assert findings["database"] == (
        "PROBLEM",
        f"cannot connect to the database at postgresql+psycopg://tayori:***@127.0.0.1:{port}/t: "
        "connection refused — is PostgreSQL running? check DATABASE_URL",
    )
    assert findings["templates"][0] == "ok"


# --- templates ----------------------------------------------------------------------


def test_template_problems_are_counted_and_the_first_ones_shown_as_lint_words_them(
    local_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    messages = own_messages(tmp_path, monkeypatch)
    for reason in ("cadence_nudge", "cadence_follow_up", "no_show_follow_up"):
        break_template(messages, f"{reason}/line.j2")
    assert main(["lint"]) == 1
    problems = capsys.readouterr().out.splitlines()
    assert len(problems) > PROBLEMS_SHOWN

    assert main(["doctor"]) == 1

    lines = capsys.readouterr().out.splitlines()
    at = lines.index(
        f"PROBLEM  templates: {len(problems)} problem(s) in {messages}: fix them, then check "
        "with `tayori lint`, which lists them all"
    )
    shown = [f"           {problem}" for problem in problems[:PROBLEMS_SHOWN]]
    assert lines[at + 1 : at + 1 + PROBLEMS_SHOWN] == shown
    assert lines[at + 1 + PROBLEMS_SHOWN].startswith("ok       LINE: ")


# --- LINE ---------------------------------------------------------------------------


@pytest.fixture
def line_api() -> Iterator[LineApiServer]:
    with LineApiServer(access_token="the-right-token", usage_offset=37) as server:
        yield server


def test_a_working_line_token_reads_the_months_quota_and_sends_nothing(
    local_env: dict[str, str],
    line_api: LineApiServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    set_line(monkeypatch, "the-right-token", line_api.base_url)

    status, findings = doctor(capsys)

    assert status == 0
    assert findings["LINE"] == (
        "ok",
        "the channel access token works (37 of 200 messages used this month)",
    )
    assert (line_api.pushes, line_api.schema_errors) == (0, [])


def test_a_line_token_refused_with_401_says_to_issue_a_new_one(
    local_env: dict[str, str],
    line_api: LineApiServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    set_line(monkeypatch, "an-expired-token", line_api.base_url)

    status, findings = doctor(capsys)

    assert status == 1
    assert findings["LINE"] == (
        "PROBLEM",
        "the channel access token is wrong or expired: issue a new one in the LINE Developers "
        "console and set it as LINE_CHANNEL_ACCESS_TOKEN",
    )


def test_line_that_cannot_be_reached_says_so(
    local_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    set_line(monkeypatch, "a-token", f"http://127.0.0.1:{refused_port()}")

    status, findings = doctor(capsys)

    assert status == 1
    outcome, text = findings["LINE"]
    assert outcome == "PROBLEM"
    assert text.startswith("could not connect to LINE: ")
    assert text.endswith("check LINE_API_BASE_URL and the network)")


# --- SMTP ---------------------------------------------------------------------------


def test_an_smtp_server_without_login_is_reached_and_nothing_is_sent(
    local_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with SmtpServer() as server:
        set_smtp(monkeypatch, server)

        status, findings = doctor(capsys)

        assert status == 0
        assert findings["email"] == (
            "ok",
            f"connected to 127.0.0.1:{server.port} without encryption, no login "
            "(SMTP_USERNAME is not set); no message sent",
        )
        assert server.received == []


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.mark.parametrize(("security", "said"), [("starttls", "with STARTTLS"), ("ssl", "over TLS")])
def test_an_smtp_login_over_tls_succeeds_and_sends_nothing(
    local_env: dict[str, str],
    certificate: Certificate,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    security: Literal["starttls", "ssl"],
    said: str,
) -> None:
    # The system's trust store, as the worker uses it, made to trust the test's server.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))
    login = ("clinic", PASSWORD)
    with SmtpServer(login=login, tls=security, certificate=certificate) as server:
        set_smtp(monkeypatch, server)

        status, findings = doctor(capsys)

        assert status == 0
        assert findings["email"] == (
            "ok",
            f"connected to 127.0.0.1:{server.port} {said}, logged in; no message sent",
        )
        assert server.received == []


def test_an_smtp_certificate_not_trusted_is_a_problem_naming_the_host_setting(
    local_env: dict[str, str],
    certificate: Certificate,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with SmtpServer(tls="starttls", certificate=certificate) as server:
        set_smtp(monkeypatch, server)

        status, findings = doctor(capsys)

        assert status == 1
        outcome, text = findings["email"]
        assert outcome == "PROBLEM"
        assert text.startswith(f"the certificate of the SMTP server 127.0.0.1:{server.port} ")


def test_a_wrong_smtp_password_says_to_check_the_username_and_password(
    local_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with SmtpServer(login=("clinic", "the-right-one")) as server:
        set_smtp(monkeypatch, server, SMTP_USERNAME="clinic", SMTP_PASSWORD=PASSWORD)

        status, findings = doctor(capsys)

        assert status == 1
        outcome, text = findings["email"]
        assert (outcome, text[:24]) == ("PROBLEM", "SMTP login refused: 535 ")
        assert text.endswith(" — check SMTP_USERNAME and SMTP_PASSWORD")


def test_an_smtp_server_that_cannot_be_reached_says_so(
    local_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = refused_port()
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(port))
    monkeypatch.setenv("MAIL_FROM", MAIL_FROM)

    status, findings = doctor(capsys)

    assert status == 1
    outcome, text = findings["email"]
    assert outcome == "PROBLEM"
    assert text.startswith(f"cannot reach the SMTP server 127.0.0.1:{port}: ")


# --- secrets ------------------------------------------------------------------------


def test_no_secret_is_printed_whatever_fails(
    local_env: dict[str, str],
    line_api: LineApiServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    token = "a-wrong-token-never-shown"
    set_line(monkeypatch, token, line_api.base_url)
    database_password = "db-password-never-shown"
    monkeypatch.setenv(
        "DATABASE_URL",
        f"postgresql+psycopg://tayori:{database_password}@127.0.0.1:{refused_port()}/t",
    )
    with SmtpServer(login=("clinic", "the-right-one")) as server:
        set_smtp(monkeypatch, server, SMTP_USERNAME="clinic", SMTP_PASSWORD=PASSWORD)
        assert main(["doctor"]) == 1

    printed = capsys.readouterr()
    for secret in (token, database_password, PASSWORD):
        assert secret not in printed.out + printed.err

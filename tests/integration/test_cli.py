"""The `tayori` command as a clinic uses it, on SQLite and PostgreSQL.

Commands run in-process through `scheduler.cli.main`, the function behind the console
script; two tests start `python -m scheduler` as a real process to prove the entry
point. Every moment is pinned with `--now`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.commands import main
from scheduler.core.domain import ChannelName, DeliveryState, Reason
from scheduler.settings import Settings
from scheduler.store.models import Appointment, Delivery, Patient
from tests.conftest import ROOT, run_tayori
from tests.integration.csv_files import (
    LINE_ID,
    appointments_csv,
    patient_row,
    patients_csv,
    write_csv,
)

# The small clinic of `import_clinic`, seen from Monday 1 March 2027, noon:
# P1 (acute, LINE) visited this morning; P2 (rehab, email) has a booking on Thursday.
MONDAY_NOON = "2027-03-01T12:00"
THURSDAY_10AM = "2027-03-04T10:00+09:00"  # P1's nudge is due (and the clinic's digest)
PLANNED_WEEK = [
    {
        "patient": "P2",
        "reason": "appointment_reminder",
        "channel": "email",
        "send_at": "2027-03-03T18:00:00+09:00",
        "template": "appointment_reminder/email.j2",
    },
    {
        "patient": "P1",
        "reason": "cadence_nudge",
        "channel": "line",
        "send_at": "2027-03-04T10:00:00+09:00",
        "template": "cadence_nudge/line.j2",
    },
    {
        "patient": "P1",
        "reason": "cadence_follow_up",
        "channel": "line",
        "send_at": "2027-03-06T10:00:00+09:00",
        "template": "cadence_follow_up/line.j2",
    },
]
NOW_PROBLEM = "expected an ISO 8601 date-time such as 2026-11-25T10:00+09:00"


def import_clinic(directory: Path) -> None:
    patients = patients_csv(
        directory,
        patient_row("P1", "山田 花子", "acute", "", LINE_ID, "line"),
        patient_row("P2", "佐藤 健", "rehab", "ken.sato@example.jp", "", "email"),
    )
    appointments = appointments_csv(
        directory,
        "P1,2027-03-01T10:00,visited",
        "P2,2027-02-26T10:00,visited",
        "P2,2027-03-04T15:00,booked",
    )
    assert main(["import", "patients", str(patients)]) == 0
    assert main(["import", "appointments", str(appointments)]) == 0


def deliveries(sessions: sessionmaker[Session]) -> list[Delivery]:
    with sessions() as session:
        return list(session.scalars(select(Delivery).order_by(Delivery.send_after)))


def count(sessions: sessionmaker[Session], model: type[object]) -> int:
    with sessions() as session:
        return session.scalar(select(sa.func.count()).select_from(model)) or 0


def output(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out


# --- plan --------------------------------------------------------------------------


def test_plan_json_lists_each_message_with_patient_reason_channel_local_time_and_template(
    clinic_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import_clinic(tmp_path)
    capsys.readouterr()
    assert main(["plan", "--now", MONDAY_NOON, "--json"]) == 0
    assert json.loads(output(capsys)) == PLANNED_WEEK


def test_plan_json_is_indented_as_json_dumps_indents_it(
    clinic_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import_clinic(tmp_path)
    capsys.readouterr()
    assert main(["plan", "--now", MONDAY_NOON, "--json"]) == 0
    assert output(capsys) == json.dumps(PLANNED_WEEK, ensure_ascii=False, indent=2) + "\n"


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        pytest.param("1", [], id="1-day"),
        pytest.param("3", PLANNED_WEEK[:2], id="3-days"),
        pytest.param("7", PLANNED_WEEK, id="7-days"),
    ],
)
def test_plan_days_limits_the_horizon(
    clinic_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    days: str,
    expected: list[dict[str, str]],
) -> None:
    import_clinic(tmp_path)
    capsys.readouterr()
    assert main(["plan", "--now", MONDAY_NOON, "--days", days, "--json"]) == 0
    assert json.loads(output(capsys)) == expected


def test_plan_writes_nothing(
    sessions: sessionmaker[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import_clinic(tmp_path)
    assert count(sessions, Delivery) == 0
    capsys.readouterr()
    assert main(["plan", "--now", MONDAY_NOON, "--json"]) == 0
    assert json.loads(output(capsys)) == PLANNED_WEEK
    assert count(sessions, Delivery) == 0


def test_plan_prints_a_table_without_json(
    clinic_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import_clinic(tmp_path)
    capsys.readouterr()
    assert main(["plan", "--now", MONDAY_NOON]) == 0
    table, quota = output(capsys).split("\n\n")
    header, *rows = table.splitlines()
    assert header.split() == ["send", "at", "patient", "reason", "channel", "template"]
    assert [row.split() for row in rows] == [
        [
            "2027-03-03",
            "18:00",
            "P2",
            "appointment_reminder",
            "email",
            "appointment_reminder/email.j2",
        ],
        ["2027-03-04", "10:00", "P1", "cadence_nudge", "line", "cadence_nudge/line.j2"],
        ["2027-03-06", "10:00", "P1", "cadence_follow_up", "line", "cadence_follow_up/line.j2"],
    ]
    assert quota.startswith("2 of these by LINE. LINE quota this month: 0 used of 200")


def test_plan_says_so_when_nothing_is_due(
    clinic_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "--now", MONDAY_NOON, "--days", "3"]) == 0
    assert output(capsys) == "nothing to send in the next 3 day(s)\n"


# --- tick --------------------------------------------------------------------------


def test_tick_sends_due_messages_to_the_outbox_named_after_their_delivery(
    clinic_env: dict[str, str],
    sessions: sessionmaker[Session],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import_clinic(tmp_path)
    capsys.readouterr()

    assert main(["tick", "--now", THURSDAY_10AM]) == 0

    assert output(capsys).strip().endswith("dispatched: 2 sent")
    sent = [d for d in deliveries(sessions) if d.state is DeliveryState.SENT]
    # P1's nudge by LINE, and the practitioner's digest by email (config/tayori.toml).
    assert sorted((d.reason, d.channel) for d in sent) == [
        (Reason.CADENCE_NUDGE, ChannelName.LINE),
        (Reason.DAILY_DIGEST, ChannelName.EMAIL),
    ]
    suffix = {ChannelName.LINE: "json", ChannelName.EMAIL: "eml"}
    outbox = Path(clinic_env["TAYORI_OUTBOX_DIR"])
    assert sorted(p.name for p in outbox.iterdir()) == sorted(
        f"{d.id}.{suffix[d.channel]}" for d in sent if d.channel
    )


def test_two_ticks_at_the_same_moment_send_nothing_twice(
    clinic_env: dict[str, str],
    sessions: sessionmaker[Session],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import_clinic(tmp_path)
    outbox = Path(clinic_env["TAYORI_OUTBOX_DIR"])
    assert main(["tick", "--now", THURSDAY_10AM]) == 0
    files = sorted(outbox.iterdir())
    sent = [d.id for d in deliveries(sessions) if d.state is DeliveryState.SENT]
    capsys.readouterr()

    assert main(["tick", "--now", THURSDAY_10AM]) == 0

    assert output(capsys).strip() == (
        "planned 0 new, 0 revived, 0 withdrawn; dispatched: nothing due"
    )
    assert sorted(outbox.iterdir()) == files
    assert [d.id for d in deliveries(sessions) if d.state is DeliveryState.SENT] == sent
    assert len(files) == len(sent) == 2


# --- status ------------------------------------------------------------------------


@pytest.fixture
def one_attempt_env(
    clinic_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The shipped settings with one attempt per message, and a copy of the messages
    that a test may break; returns the messages directory."""
    config = tmp_path / "tayori.toml"
    shipped = (ROOT / "config" / "tayori.toml").read_text(encoding="utf-8")
    assert "max_attempts = 5" in shipped
    config.write_text(shipped.replace("max_attempts = 5", "max_attempts = 1"), encoding="utf-8")
    monkeypatch.setenv("TAYORI_CONFIG", str(config))
    return own_messages(tmp_path, monkeypatch)


def own_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped messages, which a test may break, in use."""
    messages = tmp_path / "messages"
    shutil.copytree(ROOT / "messages", messages)
    monkeypatch.setenv("TAYORI_MESSAGES_DIR", str(messages))
    return messages


def break_template(messages: Path, name: str) -> Path:
    """A template that names a variable which does not exist: it cannot render."""
    path = messages / name
    path.write_text("{{ no_such_name }}\n", encoding="utf-8")
    return path


def status_sections(capsys: pytest.CaptureFixture[str]) -> tuple[str, list[str], list[str]]:
    """The counts line, and the rows under "next due:" and "failures:" (split in cells)."""
    summary, next_due, failures = output(capsys).rstrip("\n").split("\n\n")
    counts = summary.splitlines()[0]
    next_due_title, *next_due_rows = next_due.splitlines()
    failures_title, *failure_rows = failures.splitlines()
    assert (next_due_title, failures_title) == ("next due:", "failures:")
    return counts, next_due_rows, failure_rows


def too_long_for_line(messages: Path, name: str) -> None:
    """A LINE template that renders over LINE's 5,000 characters: it can never go."""
    (messages / name).write_text("{{ patient_name }}" + "あ" * 5000 + "\n", encoding="utf-8")


def test_status_prints_counts_by_state_and_next_due_with_why_a_message_waits(
    one_attempt_env: Path,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    too_long_for_line(one_attempt_env, "cadence_nudge/line.j2")
    import_clinic(tmp_path)
    assert main(["tick", "--now", THURSDAY_10AM]) == 0  # the nudge is held, the digest goes
    by_reason = {d.reason: d for d in deliveries(sessions)}
    capsys.readouterr()

    assert main(["status", "--now", THURSDAY_10AM]) == 0

    counts, next_due, failures = status_sections(capsys)
    assert counts == "deliveries: 2 planned, 0 sending, 1 sent, 0 failed, 0 skipped, 0 withdrawn"
    held, follow_up = (row.split(maxsplit=6) for row in next_due[1:])
    nudge = by_reason[Reason.CADENCE_NUDGE]
    # Held until the template is mended: it is tried again every ten minutes.
    assert held[:6] == ["2027-03-04", "10:10", "P1", "cadence_nudge", "line", nudge.id]
    assert held[6].endswith("line.j2: LINE text is 5,006 UTF-16 units; LINE allows 5,000")
    assert follow_up[2:4] == ["P1", "cadence_follow_up"]
    assert failures == ["  (none)"]


def test_status_lists_failures_with_their_reasons(
    clinic_env: dict[str, str],
    sessions: sessionmaker[Session],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A row written by a newer version (a reason this one does not know) is
    quarantined, and listed with why."""
    import_clinic(tmp_path)
    assert main(["tick", "--now", "2027-03-04T09:00+09:00"]) == 0  # plans; nothing due yet
    nudge = next(d for d in deliveries(sessions) if d.reason is Reason.CADENCE_NUDGE)
    with sessions.begin() as session:
        session.execute(
            sa.update(Delivery)
            .where(Delivery.id == nudge.id)
            .values(reason=sa.literal("birthday_greeting"))
        )
    assert main(["tick", "--now", THURSDAY_10AM]) == 0
    capsys.readouterr()

    assert main(["status", "--now", THURSDAY_10AM]) == 0

    _, _, failures = status_sections(capsys)
    header, failure = failures
    assert header.split() == ["when", "patient", "reason", "channel", "delivery", "note"]
    cells = failure.split(maxsplit=6)
    assert cells[2:6] == ["P1", "birthday_greeting", "line", nudge.id]
    assert cells[6] == "unreadable: unknown reason 'birthday_greeting'"


def test_status_of_an_empty_outbox(
    clinic_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status"]) == 0
    assert status_sections(capsys) == (
        "deliveries: 0 planned, 0 sending, 0 sent, 0 failed, 0 skipped, 0 withdrawn",
        ["  (nothing planned)"],
        ["  (none)"],
    )


def test_status_shows_the_line_quota_of_the_month(
    clinic_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--now", THURSDAY_10AM]) == 0
    summary = output(capsys).split("\n\n")[0]
    assert summary.splitlines()[1] == (
        "LINE quota this month: 0 used of 200 (counted by Tayori; the limit is "
        "[line] monthly_quota); 0 more planned, forecast 0"
    )


def test_status_shows_a_message_waiting_for_its_broken_template(
    one_attempt_env: Path,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A broken template never sends a broken message: the message waits, without
    using up its attempts, and status says which file and line to mend."""
    template = break_template(one_attempt_env, "daily_digest/email.j2")
    import_clinic(tmp_path)
    assert main(["tick", "--now", THURSDAY_10AM]) == 0
    [digest] = [d for d in deliveries(sessions) if d.reason is Reason.DAILY_DIGEST]
    assert (digest.state, digest.attempts) == (DeliveryState.PLANNED, 0)
    capsys.readouterr()

    assert main(["status", "--now", THURSDAY_10AM]) == 0

    printed = output(capsys)
    assert f"template problem: {template}: missing" in printed
    waiting = [row for row in printed.splitlines() if digest.id in row]
    assert waiting == [
        f"2027-03-04 10:10  -        daily_digest       email    {digest.id}  "
        f"{template}: missing block(s): subject, body"
    ]


# --- demo --------------------------------------------------------------------------


def test_demo_load_if_empty_loads_the_demo_clinic_once(
    clinic_env: dict[str, str], sessions: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    demo = ROOT / "config" / "demo"
    patients = len((demo / "patients.csv").read_text(encoding="utf-8").splitlines()) - 1
    appointments = len((demo / "appointments.csv").read_text(encoding="utf-8").splitlines()) - 1

    assert main(["demo", "load", "--if-empty", "--now", THURSDAY_10AM]) == 0
    assert output(capsys) == (
        f"demo clinic loaded from {demo}: {patients} patients, {appointments} appointments\n"
    )
    assert main(["demo", "load", "--if-empty", "--now", THURSDAY_10AM]) == 0
    assert output(capsys) == "the database already has patients: demo not loaded\n"

    assert (count(sessions, Patient), count(sessions, Appointment)) == (patients, appointments)


# --- the database ------------------------------------------------------------------


@pytest.fixture
def unmigrated_database(
    local_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    url = f"sqlite:///{tmp_path / 'fresh' / 'tayori.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    return url


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["status"], id="status"),
        pytest.param(["plan", "--now", MONDAY_NOON], id="plan"),
        pytest.param(["tick", "--now", MONDAY_NOON], id="tick"),
        pytest.param(["import", "patients", "patients.csv"], id="import"),
        pytest.param(["demo", "load", "--if-empty", "--now", MONDAY_NOON], id="demo-load"),
    ],
)
def test_a_database_never_migrated_is_refused_with_the_command_that_fixes_it(
    unmigrated_database: str, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    assert main(command) == 1
    assert capsys.readouterr().err == (
        f"tayori: the database {unmigrated_database} is not up to date: run `tayori db upgrade`\n"
    )


def test_db_upgrade_creates_the_database_and_is_safe_to_repeat(
    unmigrated_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "upgrade"]) == 0
    assert main(["db", "upgrade"]) == 0
    assert output(capsys) == "database is up to date\n" * 2
    assert main(["status"]) == 0
    assert output(capsys).startswith("deliveries: 0 planned")


def test_release_checks_the_templates_then_migrates_the_database(
    unmigrated_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["release"]) == 0

    checked, migrated = output(capsys).splitlines()
    assert checked.endswith(" checked: no problems")
    assert migrated == "database is up to date"
    assert main(["status"]) == 0


def test_release_with_a_template_problem_exits_1_listing_it_and_migrates_nothing(
    unmigrated_database: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    messages = own_messages(tmp_path, monkeypatch)
    broken = break_template(messages, "cadence_nudge/line.j2")

    assert main(["release"]) == 1

    assert f"{broken}:1: " in output(capsys)
    assert not Path(sa.engine.make_url(unmigrated_database).database or "").exists()


# --- settings and arguments ---------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        pytest.param(
            '[send_window]\nopens = "9am"\n', ["send_window.opens", "'9am'"], id="bad-time"
        ),
        pytest.param(
            '[send_window]\nopen = "09:00"\n', ["send_window", "'open'"], id="unknown-key"
        ),
        pytest.param(
            "[cadence]\nnudge_after_days = { acute = 0 }\n",
            ["cadence.nudge_after_days.acute", "1 to 90"],
            id="out-of-range",
        ),
        pytest.param(
            '[clinic]\ntimezone = "Tokyo"\n', ["clinic.timezone", "'Tokyo'"], id="bad-zone"
        ),
        pytest.param('colour = "blue"\n', ["top level", "'colour'"], id="unknown-top-level"),
        pytest.param("[clinic\n", ["not valid TOML"], id="not-toml"),
    ],
)
def test_config_error_exits_2_naming_the_file_and_the_key(
    local_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    toml: str,
    names: list[str],
) -> None:
    config = write_csv(tmp_path, "tayori.toml", toml)
    monkeypatch.setenv("TAYORI_CONFIG", str(config))

    assert main(["status"]) == 2

    error = capsys.readouterr().err
    assert error.startswith(f"tayori: configuration: {config}: ")
    assert error.count("\n") == 1  # one line, no traceback
    for name in names:
        assert name in error


@pytest.mark.parametrize(
    ("command", "now"),
    [
        pytest.param("plan", "garbage", id="plan"),
        pytest.param("tick", "next tuesday", id="tick"),
        pytest.param("digest", "2027-02-30T10:00", id="digest-no-such-day"),
        pytest.param("demo load", "2027-03-01T25:00", id="demo-no-such-hour"),
    ],
)
def test_now_that_is_not_a_moment_exits_1_with_a_clear_message(
    local_env: dict[str, str], capsys: pytest.CaptureFixture[str], command: str, now: str
) -> None:
    assert main([*command.split(), "--now", now]) == 1
    assert capsys.readouterr().err == f"tayori: --now: {NOW_PROBLEM}, got {now!r}\n"


# --- the real entry point ------------------------------------------------------------


def test_python_m_scheduler_prints_help(local_env: dict[str, str]) -> None:
    result = run_tayori("--help", env=local_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: tayori")
    for command in (
        "db",
        "import",
        "plan",
        "tick",
        "run",
        "status",
        "demo",
        "serve",
        "release",
        "doctor",
    ):
        assert f"    {command} " in result.stdout


def test_python_m_scheduler_refuses_a_bad_file_with_exit_code_1(
    clinic_env: dict[str, str], sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    path = patients_csv(tmp_path, patient_row("P1"), patient_row("P2", phase="chronic"))
    result = run_tayori("import", "patients", path.name, env=clinic_env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "patients.csv:3: phase: expected one of acute|rehab|maintenance, got 'chronic'",
        "tayori: nothing imported (1 problem(s))",
    ]
    assert result.stdout == ""
    assert count(sessions, Patient) == 0


# --- what a clinic sees when a setting or a service is wrong --------------------------
# One line on stderr that says what is wrong and what to do, an exit status other
# than 0, and no traceback.


def shift_jis_file(directory: Path, name: str) -> Path:
    """A settings file saved as Shift_JIS, as an older Japanese editor may: its
    second line is not UTF-8."""
    path = directory / name
    path.write_bytes('[clinic]\nname = "たより整体院"\n'.encode("shift_jis"))
    return path


def one_line(error: str) -> str:
    assert "Traceback" not in error
    assert error.count("\n") == 1, error
    return error.removesuffix("\n")


@pytest.mark.parametrize("variable", ["TAYORI_CONFIG", "TAYORI_CAMPAIGNS"])
def test_a_settings_file_that_is_not_utf8_exits_2_naming_its_line(
    local_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
) -> None:
    path = shift_jis_file(tmp_path, "settings.toml")
    monkeypatch.setenv(variable, str(path))

    assert main(["status"]) == 2

    assert one_line(capsys.readouterr().err) == (
        f"tayori: configuration: {path}:2: not UTF-8 text (save the file as UTF-8)"
    )


def test_a_dotenv_file_that_is_not_utf8_exits_2_naming_its_line(
    local_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shift_jis_file(tmp_path, ".env")

    assert main(["status"]) == 2

    assert one_line(capsys.readouterr().err) == (
        "tayori: configuration: .env:2: not UTF-8 text (save the file as UTF-8)"
    )


@pytest.mark.parametrize("variable", ["TAYORI_CONFIG", "TAYORI_CAMPAIGNS"])
def test_a_settings_variable_naming_a_folder_exits_2_naming_the_variable(
    local_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
) -> None:
    monkeypatch.setenv(variable, str(tmp_path))

    assert main(["status"]) == 2

    assert one_line(capsys.readouterr().err) == (
        f"tayori: configuration: {tmp_path}: cannot read: Is a directory (check {variable})"
    )


def refused_port() -> int:
    """A loopback port nobody listens on: connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def unreachable(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """What the placeholders of UNREACHABLE_DATABASES stand for in this test."""
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    values = {"port": str(refused_port()), "tmp": str(tmp_path)}
    if "postgres" in request.node.keywords:
        test_database = sa.engine.make_url(request.getfixturevalue("postgres_schema_url"))
        missing = test_database.set(database="tayori_no_such_db", query={})
        values["missing"] = missing.render_as_string(hide_password=False)
        values["missing_shown"] = missing.render_as_string(hide_password=True)
    return values


UNREACHABLE_DATABASES = [
    pytest.param(
        "postgresql+psycopg://tayori:s3cret@127.0.0.1:{port}/tayori",
        "cannot connect to the database at postgresql+psycopg://tayori:***@127.0.0.1:{port}/"
        "tayori: connection refused — is PostgreSQL running? check DATABASE_URL",
        id="refused",
    ),
    pytest.param(
        "{missing}",
        "cannot connect to the database at {missing_shown}: database "
        '"tayori_no_such_db" does not exist — create it, or check the database name in '
        "DATABASE_URL",
        id="no-such-database",
        marks=pytest.mark.postgres,
    ),
    pytest.param(
        "sqlite:////proc/nope/tayori.db",
        "cannot create the folder /proc/nope for the database at sqlite:////proc/nope/"
        "tayori.db: No such file or directory — check DATABASE_URL",
        id="folder-cannot-be-made",
    ),
    pytest.param(
        "sqlite:///{tmp}/a-file/tayori.db",
        "cannot create the folder {tmp}/a-file for the database at sqlite:///{tmp}/a-file/"
        "tayori.db: a file is in the way — check DATABASE_URL",
        id="a-file-in-the-way",
    ),
]


@pytest.mark.parametrize(("url", "expected"), UNREACHABLE_DATABASES)
@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["status"], id="status"),
        pytest.param(["db", "upgrade"], id="db-upgrade"),
        pytest.param(["plan", "--now", MONDAY_NOON], id="plan"),
    ],
)
def test_a_database_tayori_cannot_reach_exits_1_saying_why_with_the_password_hidden(
    local_env: dict[str, str],
    unreachable: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    url: str,
    expected: str,
) -> None:
    monkeypatch.setenv("DATABASE_URL", url.format(**unreachable))

    assert main(command) == 1

    assert one_line(capsys.readouterr().err) == f"tayori: {expected.format(**unreachable)}"


@pytest.fixture
def write_lock(local_env: dict[str, str]) -> Iterator[None]:
    """Another process holds the SQLite database's write lock for the whole test."""
    holder = sqlite3.connect(sa.engine.make_url(local_env["DATABASE_URL"]).database or "")
    holder.isolation_level = None
    holder.execute("BEGIN IMMEDIATE")
    yield
    holder.rollback()
    holder.close()


def test_a_database_locked_past_its_busy_timeout_exits_1_saying_so(
    local_env: dict[str, str],
    write_lock: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"{local_env['DATABASE_URL']}?timeout=0.2"
    monkeypatch.setenv("DATABASE_URL", url)

    assert main(["status"]) == 1

    assert one_line(capsys.readouterr().err) == (
        f"tayori: the database at {url} is locked by another process (waited 0.2 s) — try "
        "again when that process is done, or raise ?timeout= in DATABASE_URL"
    )


def test_database_url_timeout_sets_how_long_sqlite_waits_for_a_lock(
    local_env: dict[str, str], write_lock: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"{local_env['DATABASE_URL']}?timeout=0.2")
    started = time.monotonic()

    assert main(["status"]) == 1

    # Well short of the 30 s a SQLite connection waits without ?timeout=.
    assert 0.2 <= time.monotonic() - started < 10


def test_a_file_a_command_cannot_write_exits_1_naming_it(
    local_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "preview").write_text("", encoding="utf-8")  # where the HTML would go

    assert main(["preview", "cadence_nudge", "--channel", "email"]) == 1

    assert one_line(capsys.readouterr().err) == (
        f"tayori: {tmp_path / 'preview'}: File exists — check the path and its permissions"
    )


@pytest.fixture
def failing_status(monkeypatch: pytest.MonkeyPatch) -> None:
    """`tayori status` fails in a way nobody foresaw."""

    def status(args: object, settings: object) -> int:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("scheduler.commands.outbox.status", status)


def test_an_unexpected_error_exits_1_naming_only_its_type(
    local_env: dict[str, str], failing_status: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status"]) == 1

    assert one_line(capsys.readouterr().err) == (
        "tayori: unexpected error (ZeroDivisionError); run again with TAYORI_LOG_LEVEL=DEBUG "
        "for details"
    )


def test_an_unexpected_error_is_logged_at_debug_with_its_traceback(
    local_env: dict[str, str], failing_status: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="scheduler.commands")

    assert main(["status"]) == 1

    [record] = [r for r in caplog.records if r.name.startswith("scheduler.commands")]
    assert record.levelno == logging.DEBUG
    assert record.exc_info and record.exc_info[0] is ZeroDivisionError


def test_an_interrupted_command_exits_130_without_a_traceback(
    local_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def status(args: object, settings: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("scheduler.commands.outbox.status", status)

    assert main(["status"]) == 130

    assert one_line(capsys.readouterr().err) == "tayori: interrupted"


def test_at_debug_the_traceback_follows_the_line_on_stderr(local_env: dict[str, str]) -> None:
    env = {**local_env, "DATABASE_URL": "sqlite:////proc/nope/tayori.db"}
    result = run_tayori("status", env={**env, "TAYORI_LOG_LEVEL": "DEBUG"})

    assert result.returncode == 1
    first, *rest = result.stderr.splitlines()
    assert first.startswith("tayori: cannot create the folder /proc/nope")
    assert "Traceback (most recent call last):" in rest


def test_status_into_a_reader_that_left_exits_quietly_as_for_sigpipe(
    local_env: dict[str, str],
) -> None:
    """`tayori status | head`: the reader may close the pipe before the output ends."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has left before the first line
    try:
        result = subprocess.run(
            [sys.executable, "-m", "scheduler", "status"],
            env={**os.environ, **local_env, "PYTHONPATH": str(ROOT)},
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)

    assert (result.returncode, result.stderr) == (128 + signal.SIGPIPE, "")


# --- seasons -------------------------------------------------------------------------


def test_seasons_json_gives_the_years_seasonal_dates_and_closures(
    repo_settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAYORI_CONFIG", str(repo_settings.config_path))
    assert main(["seasons", "2026", "--json"]) == 0
    document = json.loads(output(capsys))
    assert {k: document[k] for k in ("risshun", "doyo_summer", "ritto")} == {
        "risshun": "2026-02-04",
        "doyo_summer": "2026-07-20",
        "ritto": "2026-11-07",
    }
    assert {"name": "年末年始", "first": "2026-12-29", "last": "2027-01-03"} in document["closures"]
    assert {"name": "祝日（勤労感謝の日）", "first": "2026-11-23", "last": "2026-11-23"} in (
        document["closures"]
    )


def test_seasons_refuses_a_year_it_cannot_compute(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["seasons", "1850"])
    assert "expected a year 1900-2100" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["--help"], ["seasons", "2027"], ["plan"], ["tick"]])
def test_commands_that_send_nothing_to_line_do_not_load_the_line_sdk(
    local_env: dict[str, str], command: list[str]
) -> None:
    """The LINE SDK takes about a second to import: a command that sends nothing to
    LINE (a worker cycle with an empty database here) starts without it."""
    assert main(["db", "upgrade"]) == 0
    assert not any(name.startswith("linebot") for name in modules_after(command, local_env))


def test_a_dry_run_does_not_load_the_template_engine(local_env: dict[str, str]) -> None:
    """A dry run renders nothing, and Jinja2 makes a process about 9 MB larger."""
    assert main(["db", "upgrade"]) == 0
    assert "jinja2" not in modules_after(["plan"], local_env)


def test_the_planning_processes_do_not_load_the_template_engine(
    local_env: dict[str, str],
) -> None:
    """Their fork server imports the planner (outbox/fork_server.py), and each process
    forked from it keeps what the server imported."""
    assert "jinja2" not in modules_after([], local_env, "import scheduler.outbox.planner")


def modules_after(command: list[str], env: dict[str, str], code: str = "") -> set[str]:
    """The modules a new process has imported after `tayori <command>` (none if empty),
    which must succeed, and then `code`."""
    probe = (
        "import sys\n"
        "from scheduler.commands import main\n"
        "status = 0\n"
        "try:\n"
        f"    if {command!r}: status = main({command!r})\n"
        "except SystemExit as e:\n"
        "    status = e.code\n"
        f"{code}\n"
        "print(status, ' '.join(sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    status, *modules = result.stdout.splitlines()[-1].split()
    assert status == "0", result.stderr
    return set(modules)

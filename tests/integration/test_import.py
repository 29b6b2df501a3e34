"""`tayori import patients|appointments FILE.csv` as the clinic runs it, on SQLite and
PostgreSQL: rows are upserted; a file with any bad row imports nothing and every bad
row is listed as `FILE:LINE: column: problem`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.commands import main
from scheduler.core.domain import AppointmentStatus, ChannelName, ConsentKind, Phase
from scheduler.store.db import ANALYZE_FROM_ROWS, ANALYZE_FROM_SHARE, refresh_statistics
from scheduler.store.models import Appointment, CadenceChange, ConsentChange, Patient, Replan
from tests.integration.csv_files import (
    LINE_ID,
    PATIENTS_HEADER,
    appointments_csv,
    patient_row,
    patients_csv,
    write_csv,
)

NOTHING_IMPORTED_1 = "tayori: nothing imported (1 problem(s))"


def import_file(kind: str, path: Path) -> int:
    return main(["import", kind, str(path)])


def stderr_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def stored_patients(sessions: sessionmaker[Session]) -> dict[str, Patient]:
    with sessions() as session:
        return {p.external_id: p for p in session.scalars(select(Patient))}


def consent_history(
    sessions: sessionmaker[Session],
) -> list[tuple[str, ConsentKind, bool, str]]:
    with sessions() as session:
        rows = session.execute(
            select(Patient.external_id, ConsentChange)
            .join(ConsentChange.patient)
            .order_by(ConsentChange.id)
        )
        return [(external_id, c.kind, c.granted, c.source) for external_id, c in rows]


def stored_appointments(
    sessions: sessionmaker[Session],
) -> list[tuple[str, datetime, AppointmentStatus]]:
    with sessions() as session:
        rows = session.execute(
            select(Patient.external_id, Appointment)
            .join(Appointment.patient)
            .order_by(Appointment.starts_at)
        )
        return [(external_id, a.starts_at, a.status) for external_id, a in rows]


def count(sessions: sessionmaker[Session], model: type[object]) -> int:
    with sessions() as session:
        return session.scalar(select(sa.func.count()).select_from(model)) or 0


# --- patients --------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig"], ids=["utf8", "utf8-with-bom"])
def test_import_patients_creates_rows_with_japanese_names(
    sessions: sessionmaker[Session],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    encoding: str,
) -> None:
    path = patients_csv(
        tmp_path,
        patient_row("P1", "山田 花子", "acute", "", LINE_ID, "line", "yes", "no"),
        patient_row("P2", "佐藤 健", "rehab", "ken.sato@example.jp", "", "email", "no", "yes"),
        encoding=encoding,
    )
    assert import_file("patients", path) == 0
    assert capsys.readouterr().out.strip() == f"{path}: 2 created, 0 updated, 0 unchanged"

    patients = stored_patients(sessions)
    assert sorted(patients) == ["P1", "P2"]  # the BOM is not part of the first column
    p1, p2 = patients["P1"], patients["P2"]
    assert (p1.name, p1.phase, p1.email, p1.line_user_id, p1.preferred_channel) == (
        "山田 花子",
        Phase.ACUTE,
        None,
        LINE_ID,
        ChannelName.LINE,
    )
    assert (p2.name, p2.phase, p2.email, p2.line_user_id, p2.preferred_channel) == (
        "佐藤 健",
        Phase.REHAB,
        "ken.sato@example.jp",
        None,
        ChannelName.EMAIL,
    )


def test_second_import_updates_patients_by_external_id(
    sessions: sessionmaker[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = patients_csv(
        tmp_path,
        patient_row("P1", "山田 花子", "acute"),
        patient_row("P2", "佐藤 健", "acute"),
        patient_row("P3", "鈴木 美咲", "maintenance"),
        name="first.csv",
    )
    second = patients_csv(
        tmp_path,
        patient_row("P1", "山田 はなこ", "acute"),  # name changed
        patient_row("P2", "佐藤 健", "rehab"),  # phase changed
        patient_row("P3", "鈴木 美咲", "maintenance"),  # as before
        name="second.csv",
    )
    assert import_file("patients", first) == 0
    capsys.readouterr()
    assert import_file("patients", second) == 0

    assert capsys.readouterr().out.strip() == f"{second}: 0 created, 2 updated, 1 unchanged"
    patients = stored_patients(sessions)
    assert len(patients) == 3
    assert patients["P1"].name == "山田 はなこ"
    assert patients["P2"].phase is Phase.REHAB
    assert patients["P3"].name == "鈴木 美咲"


def test_identical_reimport_reports_every_patient_unchanged_and_writes_nothing(
    sessions: sessionmaker[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = patients_csv(tmp_path, patient_row("P1"), patient_row("P2", phase=""))
    assert import_file("patients", path) == 0
    before = {k: p.updated_at for k, p in stored_patients(sessions).items()}
    consents, cadences = count(sessions, ConsentChange), count(sessions, CadenceChange)
    capsys.readouterr()

    assert import_file("patients", path) == 0

    assert capsys.readouterr().out.strip() == f"{path}: 0 created, 0 updated, 2 unchanged"
    assert {k: p.updated_at for k, p in stored_patients(sessions).items()} == before
    assert (count(sessions, ConsentChange), count(sessions, CadenceChange)) == (
        consents,
        cadences,
    )


def test_empty_phase_is_allowed(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    assert import_file("patients", patients_csv(tmp_path, patient_row(phase=""))) == 0
    assert stored_patients(sessions)["P1"].phase is None


def test_consent_changes_are_appended_only_when_a_value_changes(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    def import_consent(reminders: str, newsletter: str) -> None:
        row = patient_row(reminders_opt_in=reminders, newsletter_opt_in=newsletter)
        assert import_file("patients", patients_csv(tmp_path, row)) == 0

    import_consent("yes", "no")
    initial = [
        ("P1", ConsentKind.REMINDERS, True, "import"),
        ("P1", ConsentKind.NEWSLETTER, False, "import"),
    ]
    assert consent_history(sessions) == initial

    import_consent("yes", "no")
    assert consent_history(sessions) == initial

    import_consent("no", "no")
    assert consent_history(sessions) == [*initial, ("P1", ConsentKind.REMINDERS, False, "import")]

    import_consent("no", "yes")
    assert consent_history(sessions) == [
        *initial,
        ("P1", ConsentKind.REMINDERS, False, "import"),
        ("P1", ConsentKind.NEWSLETTER, True, "import"),
    ]


# --- a bad patients file ---------------------------------------------------------


def test_unknown_patient_is_listed_with_the_other_bad_rows_in_one_pass(
    sessions: sessionmaker[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert import_file("patients", patients_csv(tmp_path, patient_row("P1"))) == 0
    path = appointments_csv(tmp_path, "P9,2027-03-04T10:00,booked", "P1,2027-03-05T10:00,done")
    capsys.readouterr()

    assert import_file("appointments", path) == 1

    assert stderr_lines(capsys)[:2] == [
        f"{path}:2: external_id: no patient 'P9' (import patients first)",
        f"{path}:3: status: expected one of booked|visited|cancelled|no_show, got 'done'",
    ]


@pytest.mark.parametrize(
    ("bad_row", "column", "problem"),
    [
        pytest.param(
            patient_row("P2", phase="chronic"),
            "phase",
            "expected one of acute|rehab|maintenance, got 'chronic'",
            id="phase",
        ),
        pytest.param(
            patient_row("P2", preferred_channel="fax"),
            "preferred_channel",
            "expected one of line|email, got 'fax'",
            id="preferred_channel",
        ),
        pytest.param(
            patient_row("P2", reminders_opt_in="maybe"),
            "reminders_opt_in",
            "expected yes or no, got 'maybe'",
            id="reminders-yes-no",
        ),
        pytest.param(
            patient_row("P2", newsletter_opt_in="はい"),
            "newsletter_opt_in",
            "expected yes or no, got 'はい'",
            id="newsletter-yes-no",
        ),
        pytest.param(
            patient_row("P2", email="hanako@example"),
            "email",
            "expected an email address, got 'hanako@example'",
            id="email",
        ),
        pytest.param(
            patient_row("P2", line_user_id="U1234"),
            "line_user_id",
            "expected a LINE user id (U followed by 32 hex digits), got 'U1234'",
            id="line_user_id",
        ),
        pytest.param(patient_row("P2", name=" "), "name", "must not be empty", id="empty-name"),
        pytest.param(patient_row(""), "external_id", "must not be empty", id="empty-external_id"),
        pytest.param(
            patient_row("P1", name="山田 花子（重複）"),
            "external_id",
            "'P1' already on line 2",
            id="duplicate-external_id",
        ),
        pytest.param("P2,佐藤 健,acute", "row", "wrong number of cells", id="too-few-cells"),
        pytest.param(
            patient_row("P2") + ",extra", "row", "wrong number of cells", id="too-many-cells"
        ),
    ],
)
def test_bad_patient_row_is_named_by_file_line_and_column_and_nothing_is_imported(
    sessions: sessionmaker[Session],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    bad_row: str,
    column: str,
    problem: str,
) -> None:
    path = patients_csv(tmp_path, patient_row("P1"), bad_row)
    assert import_file("patients", path) == 1
    assert stderr_lines(capsys) == [f"{path}:3: {column}: {problem}", NOTHING_IMPORTED_1]
    assert count(sessions, Patient) == 0  # not even the good row on line 2


def test_every_bad_patient_row_is_listed_and_the_good_rows_are_not_written(
    sessions: sessionmaker[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert import_file("patients", patients_csv(tmp_path, patient_row("P1"), name="ok.csv")) == 0
    path = patients_csv(
        tmp_path,
        patient_row("P1", name="山田 はなこ"),  # 2: good, an update
        patient_row("P2", phase="chronic"),  # 3
        patient_row("P3"),  # 4: good, new
        patient_row("P4", email="no-at-sign", preferred_channel="sms"),  # 5: two problems
        "P5,伊藤 翔",  # 6
        patient_row("P3"),  # 7: duplicate of line 4
    )
    capsys.readouterr()

    assert import_file("patients", path) == 1

    assert stderr_lines(capsys) == [
        f"{path}:3: phase: expected one of acute|rehab|maintenance, got 'chronic'",
        f"{path}:5: email: expected an email address, got 'no-at-sign'",
        f"{path}:5: preferred_channel: expected one of line|email, got 'sms'",
        f"{path}:6: row: wrong number of cells",
        f"{path}:7: external_id: 'P3' already on line 4",
        "tayori: nothing imported (5 problem(s))",
    ]
    patients = stored_patients(sessions)
    assert sorted(patients) == ["P1"]
    assert patients["P1"].name == "山田 花子"


@pytest.mark.parametrize(
    ("header", "problems"),
    [
        pytest.param(
            PATIENTS_HEADER.replace(",email", ""), ["email: missing column"], id="missing"
        ),
        pytest.param(PATIENTS_HEADER + ",birthday", ["birthday: unknown column"], id="unknown"),
        pytest.param(
            PATIENTS_HEADER.replace("name", "namae"),
            ["name: missing column", "namae: unknown column"],
            id="misspelt",
        ),
    ],
)
def test_bad_patients_header_is_reported_on_line_1_and_nothing_is_imported(
    sessions: sessionmaker[Session],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    header: str,
    problems: list[str],
) -> None:
    path = write_csv(tmp_path, "patients.csv", f"{header}\n{patient_row()}\n")
    assert import_file("patients", path) == 1
    lines = stderr_lines(capsys)
    assert lines[:-1] == [f"{path}:1: {problem}" for problem in problems]
    assert lines[-1] == f"tayori: nothing imported ({len(problems)} problem(s))"
    assert count(sessions, Patient) == 0


@pytest.mark.parametrize("good_rows_before", [1, 600], ids=["small-file", "large-file"])
def test_file_that_is_not_utf8_is_refused_naming_the_line(
    sessions: sessionmaker[Session],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    good_rows_before: int,
) -> None:
    # Excel's "CSV" in Japan is Shift_JIS (cp932): a common mistake to catch.
    good = "".join(f"{patient_row(f'P{n}')}\n" for n in range(good_rows_before)).encode()
    shift_jis = f"{patient_row('SJ1', name='鈴木 美咲')}\n".encode("cp932")
    path = tmp_path / "patients.csv"
    path.write_bytes(f"{PATIENTS_HEADER}\n".encode() + good + shift_jis)
    bad_line = 1 + good_rows_before + 1

    assert import_file("patients", path) == 1

    assert stderr_lines(capsys) == [
        f'{path}:{bad_line}: not UTF-8 text (in Excel, save as "CSV UTF-8")',
        NOTHING_IMPORTED_1,
    ]
    assert count(sessions, Patient) == 0


def test_missing_file_is_reported_and_nothing_is_imported(
    sessions: sessionmaker[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nowhere.csv"
    assert import_file("patients", path) == 1
    assert stderr_lines(capsys) == [
        f"{path}: cannot read: No such file or directory",
        NOTHING_IMPORTED_1,
    ]
    assert count(sessions, Patient) == 0


# --- appointments ----------------------------------------------------------------


def test_an_imported_appointment_is_found_by_its_start_in_sql(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    # Bulk-written moments must be stored exactly as the ORM writes them, or a
    # comparison in SQL (SQLite compares the stored text) would miss them.
    assert import_file("patients", patients_csv(tmp_path, patient_row("P1"))) == 0
    assert (
        import_file("appointments", appointments_csv(tmp_path, "P1,2027-03-03T10:00,booked")) == 0
    )
    start = datetime(2027, 3, 3, 1, 0, tzinfo=UTC)
    with sessions() as session:
        found = session.scalars(select(Appointment.id).where(Appointment.starts_at == start))
        assert len(found.all()) == 1
        later = session.scalars(select(Appointment.id).where(Appointment.starts_at > start))
        assert later.all() == []


def stored_utc_values(sessions: sessionmaker[Session]) -> list[datetime]:
    """The raw column values, as the database holds them (naive UTC)."""
    query = sa.text("SELECT starts_at FROM appointments ORDER BY id").columns(
        starts_at=sa.DateTime()
    )
    with sessions() as session:
        return list(session.scalars(query))


@pytest.mark.parametrize(
    ("starts_at", "utc"),
    [
        pytest.param("2027-03-03T10:00", datetime(2027, 3, 3, 1, 0), id="naive-is-clinic-time"),
        pytest.param("2027-03-03 10:00:00", datetime(2027, 3, 3, 1, 0), id="naive-with-space"),
        pytest.param("2027-03-03T10:00+09:00", datetime(2027, 3, 3, 1, 0), id="offset-+09:00"),
        pytest.param("2027-03-03T10:00+00:00", datetime(2027, 3, 3, 10, 0), id="offset-utc"),
        pytest.param("2027-03-03T10:00Z", datetime(2027, 3, 3, 10, 0), id="offset-Z"),
        pytest.param("2027-03-03T10:00-05:00", datetime(2027, 3, 3, 15, 0), id="offset-negative"),
        pytest.param("2027-03-03T00:30", datetime(2027, 3, 2, 15, 30), id="naive-after-midnight"),
    ],
)
def test_appointment_start_is_clinic_time_unless_it_has_an_offset_and_is_stored_in_utc(
    sessions: sessionmaker[Session], tmp_path: Path, starts_at: str, utc: datetime
) -> None:
    assert import_file("patients", patients_csv(tmp_path, patient_row("P1"))) == 0
    path = appointments_csv(tmp_path, f"P1,{starts_at},booked")

    assert import_file("appointments", path) == 0

    assert stored_utc_values(sessions) == [utc]
    assert stored_appointments(sessions) == [
        ("P1", utc.replace(tzinfo=UTC), AppointmentStatus.BOOKED)
    ]


def test_second_appointment_import_updates_the_status_by_patient_and_start(
    sessions: sessionmaker[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    patients = patients_csv(tmp_path, patient_row("P1"), patient_row("P2"))
    assert import_file("patients", patients) == 0
    first = appointments_csv(
        tmp_path,
        "P1,2027-03-03T10:00,booked",
        "P2,2027-03-03T10:00,booked",
        "P2,2027-03-10T10:00,booked",
        name="first.csv",
    )
    # The same moments, one written with an offset: still the same appointments.
    second = appointments_csv(
        tmp_path,
        "P1,2027-03-03T01:00:00+00:00,visited",
        "P2,2027-03-03T10:00,no_show",
        "P2,2027-03-10T10:00,booked",
        "P1,2027-03-10T10:00,booked",
        name="second.csv",
    )
    assert import_file("appointments", first) == 0
    capsys.readouterr()

    assert import_file("appointments", second) == 0

    assert capsys.readouterr().out.strip() == f"{second}: 1 created, 2 updated, 1 unchanged"
    march_3, march_10 = (datetime(2027, 3, d, 1, 0, tzinfo=UTC) for d in (3, 10))
    assert sorted(stored_appointments(sessions)) == [
        ("P1", march_3, AppointmentStatus.VISITED),
        ("P1", march_10, AppointmentStatus.BOOKED),
        ("P2", march_3, AppointmentStatus.NO_SHOW),
        ("P2", march_10, AppointmentStatus.BOOKED),
    ]


def test_appointment_of_an_unknown_patient_is_refused_naming_its_line(
    sessions: sessionmaker[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert import_file("patients", patients_csv(tmp_path, patient_row("P1"))) == 0
    booked = appointments_csv(tmp_path, "P1,2027-03-03T10:00,booked", name="booked.csv")
    assert import_file("appointments", booked) == 0
    path = appointments_csv(
        tmp_path,
        "P1,2027-03-03T10:00,cancelled",
        "P9,2027-03-04T10:00,booked",
        "P1,2027-03-05T10:00,booked",
    )
    capsys.readouterr()

    assert import_file("appointments", path) == 1

    assert stderr_lines(capsys) == [
        f"{path}:3: external_id: no patient 'P9' (import patients first)",
        NOTHING_IMPORTED_1,
    ]
    assert stored_appointments(sessions) == [
        ("P1", datetime(2027, 3, 3, 1, 0, tzinfo=UTC), AppointmentStatus.BOOKED)
    ]


@pytest.mark.parametrize(
    ("bad_row", "column", "problem"),
    [
        pytest.param(
            "P1,2027-13-01T10:00,booked",
            "starts_at",
            "expected an ISO 8601 date-time such as 2026-11-25T10:00+09:00, got '2027-13-01T10:00'",
            id="month-13",
        ),
        pytest.param(
            "P1,2027-02-30 10:00,booked",
            "starts_at",
            "expected an ISO 8601 date-time such as 2026-11-25T10:00+09:00, got '2027-02-30 10:00'",
            id="february-30",
        ),
        pytest.param(
            "P1,2027/03/03 10:00,booked",
            "starts_at",
            "expected an ISO 8601 date-time such as 2026-11-25T10:00+09:00, got '2027/03/03 10:00'",
            id="slashes",
        ),
        pytest.param(
            "P1,2027-03-03,booked",
            "starts_at",
            "expected an ISO 8601 date-time such as 2026-11-25T10:00+09:00, got '2027-03-03'",
            id="date-without-time",
        ),
        pytest.param(
            "P1,,booked",
            "starts_at",
            "expected an ISO 8601 date-time such as 2026-11-25T10:00+09:00, got ''",
            id="empty-date",
        ),
        pytest.param(
            "P1,2027-03-04T10:00,done",
            "status",
            "expected one of booked|visited|cancelled|no_show, got 'done'",
            id="status",
        ),
        pytest.param(",2027-03-04T10:00,booked", "external_id", "must not be empty", id="no-id"),
        pytest.param(
            "P1,2027-03-03T01:00Z,visited",
            "starts_at",
            "same patient and time as line 2",
            id="duplicate",
        ),
        pytest.param("P1,2027-03-04T10:00", "row", "wrong number of cells", id="too-few-cells"),
    ],
)
def test_bad_appointment_row_is_named_by_file_line_and_column_and_nothing_is_imported(
    sessions: sessionmaker[Session],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    bad_row: str,
    column: str,
    problem: str,
) -> None:
    assert import_file("patients", patients_csv(tmp_path, patient_row("P1"))) == 0
    path = appointments_csv(tmp_path, "P1,2027-03-03T10:00,booked", bad_row)
    capsys.readouterr()

    assert import_file("appointments", path) == 1

    assert stderr_lines(capsys) == [f"{path}:3: {column}: {problem}", NOTHING_IMPORTED_1]
    assert count(sessions, Appointment) == 0


def test_every_bad_appointment_row_is_listed(
    sessions: sessionmaker[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert import_file("patients", patients_csv(tmp_path, patient_row("P1"))) == 0
    path = appointments_csv(
        tmp_path,
        "P1,2027-03-03T10:00,booked",  # 2
        "P1,next monday,booked",  # 3
        "P1,2027-03-05T10:00,attended",  # 4
        "P1,3/6,maybe",  # 5: two problems
        "P1,2027-03-07T10:00,visited",  # 6
    )
    capsys.readouterr()

    assert import_file("appointments", path) == 1

    problems = [line.split(": ", 2)[:2] for line in stderr_lines(capsys)[:-1]]
    assert problems == [
        [f"{path}:3", "starts_at"],
        [f"{path}:4", "status"],
        [f"{path}:5", "starts_at"],
        [f"{path}:5", "status"],
    ]
    assert count(sessions, Appointment) == 0


def test_bad_appointments_header_is_reported_on_line_1(
    sessions: sessionmaker[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(
        tmp_path, "appointments.csv", "external_id,date,status\nP1,2027-03-03,booked\n"
    )
    assert import_file("appointments", path) == 1
    assert stderr_lines(capsys) == [
        f"{path}:1: starts_at: missing column",
        f"{path}:1: date: unknown column",
        "tayori: nothing imported (2 problem(s))",
    ]
    assert count(sessions, Appointment) == 0


# --- what the file may hold -------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="no-bytes"),
        pytest.param(b"\xef\xbb\xbf", id="only-a-bom"),
        pytest.param(b"\n\r\n\n", id="only-blank-lines"),
    ],
)
def test_an_empty_file_is_refused_as_empty(
    sessions: sessionmaker[Session],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes,
) -> None:
    path = tmp_path / "patients.csv"
    path.write_bytes(content)

    assert import_file("patients", path) == 1

    assert stderr_lines(capsys) == [
        f"{path}: the file is empty: the first line must name the columns ({PATIENTS_HEADER})",
        NOTHING_IMPORTED_1,
    ]
    assert count(sessions, Patient) == 0


def test_a_column_named_twice_in_the_header_is_refused_naming_it(
    sessions: sessionmaker[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Were it accepted, the last of the two would silently win.
    path = write_csv(tmp_path, "patients.csv", f"{PATIENTS_HEADER},phase\n{patient_row()},rehab\n")

    assert import_file("patients", path) == 1

    assert stderr_lines(capsys) == [
        f"{path}:1: phase: column appears more than once",
        NOTHING_IMPORTED_1,
    ]
    assert count(sessions, Patient) == 0


@pytest.mark.parametrize(
    ("column", "cell", "problem"),
    [
        pytest.param("name", "山田\x00花子", "U+0000 at character 3", id="nul-in-name"),
        pytest.param("name", "山田\x1b[31m花子", "U+001B at character 3", id="escape-in-name"),
        pytest.param("email", "a\x00@example.jp", "U+0000 at character 2", id="nul-in-email"),
        pytest.param("phase", "acute\x00", "U+0000 at character 6", id="nul-in-phase"),
        pytest.param("name", "山田\t花子", "U+0009 at character 3", id="tab-in-name"),
        pytest.param("external_id", "P\x002", "U+0000 at character 2", id="nul-in-external_id"),
    ],
)
def test_a_control_character_in_a_cell_is_refused_naming_its_column(
    sessions: sessionmaker[Session],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    column: str,
    cell: str,
    problem: str,
) -> None:
    # PostgreSQL refuses NUL in text: the file must be refused before it gets there.
    cells = {"external_id": "P2", column: cell}
    path = patients_csv(tmp_path, patient_row("P1"), patient_row(**cells))

    assert import_file("patients", path) == 1

    assert stderr_lines(capsys) == [
        f"{path}:3: {column}: must not contain control characters (found {problem})",
        NOTHING_IMPORTED_1,
    ]
    assert count(sessions, Patient) == 0


def test_a_control_character_in_an_appointment_cell_is_refused_naming_its_column(
    sessions: sessionmaker[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert import_file("patients", patients_csv(tmp_path, patient_row("P1"))) == 0
    path = appointments_csv(tmp_path, "P1,2027-03-03T10:00,book\x00ed")
    capsys.readouterr()

    assert import_file("appointments", path) == 1

    assert stderr_lines(capsys) == [
        f"{path}:2: status: must not contain control characters (found U+0000 at character 5)",
        NOTHING_IMPORTED_1,
    ]
    assert count(sessions, Appointment) == 0


def test_spaces_and_tabs_around_a_cell_are_not_part_of_it(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    path = patients_csv(tmp_path, patient_row("P1", name="\t山田 花子 "))
    assert import_file("patients", path) == 0
    assert stored_patients(sessions)["P1"].name == "山田 花子"


@pytest.mark.parametrize(
    ("column", "longest"),
    [
        pytest.param("name", 100, id="name"),
        pytest.param("external_id", 64, id="external_id"),
    ],
)
def test_a_name_or_external_id_longer_than_its_limit_is_refused_without_repeating_it(
    sessions: sessionmaker[Session],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    column: str,
    longest: int,
) -> None:
    longest_allowed = patient_row(**{"external_id": "P1", column: "名" * longest})
    too_long = patient_row(**{"external_id": "P2", column: "名" * 10_000})
    path = patients_csv(tmp_path, longest_allowed, too_long)

    assert import_file("patients", path) == 1

    assert stderr_lines(capsys) == [
        f"{path}:3: {column}: must be at most {longest} characters, got 10000",
        NOTHING_IMPORTED_1,
    ]
    assert count(sessions, Patient) == 0


def test_an_email_longer_than_320_characters_is_refused_without_repeating_it(
    sessions: sessionmaker[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = "a" * 309 + "@example.jp"  # 320 characters
    path = patients_csv(
        tmp_path, patient_row("P1", email=address), patient_row("P2", email="a" + address)
    )

    assert import_file("patients", path) == 1

    assert stderr_lines(capsys) == [
        f"{path}:3: email: must be at most 320 characters, got 321",
        NOTHING_IMPORTED_1,
    ]


def test_a_long_bad_cell_is_described_by_its_length_not_repeated(
    sessions: sessionmaker[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = patients_csv(tmp_path, patient_row("P1", phase="x" * 5_000))

    assert import_file("patients", path) == 1

    assert stderr_lines(capsys)[0] == (
        f"{path}:2: phase: expected one of acute|rehab|maintenance, got a text of 5000 characters"
    )


def test_a_problem_in_a_row_that_spans_lines_names_the_line_where_the_row_starts(
    sessions: sessionmaker[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = patients_csv(
        tmp_path,
        patient_row("P1"),  # 2
        patient_row("P2", name='"山田\n\n花子"'),  # 3 to 5
        patient_row("P3", phase="chronic"),  # 6
    )

    assert import_file("patients", path) == 1

    assert stderr_lines(capsys) == [
        f"{path}:3: name: must not contain control characters (found U+000A at character 3)",
        f"{path}:6: phase: expected one of acute|rehab|maintenance, got 'chronic'",
        "tayori: nothing imported (2 problem(s))",
    ]


def test_a_duplicate_of_a_row_refused_for_another_reason_is_still_named(
    sessions: sessionmaker[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert import_file("patients", patients_csv(tmp_path, patient_row("P1"))) == 0
    path = appointments_csv(
        tmp_path,
        "P1,2027-03-03T10:00,attended",
        "P9,2027-03-03T10:00,booked",
        "P1,2027-03-03T10:00,booked",
    )
    capsys.readouterr()

    assert import_file("appointments", path) == 1

    assert stderr_lines(capsys) == [
        f"{path}:2: status: expected one of booked|visited|cancelled|no_show, got 'attended'",
        f"{path}:3: external_id: no patient 'P9' (import patients first)",
        f"{path}:4: starts_at: same patient and time as line 2",
        "tayori: nothing imported (3 problem(s))",
    ]


# --- marking patients for planning -------------------------------------------------


PLANNED_UNTIL = datetime(2027, 3, 1, 1, 0, tzinfo=UTC)


def planned(sessions: sessionmaker[Session]) -> None:
    """As if the worker had planned everyone: each knows when to be planned next."""
    with sessions.begin() as session:
        session.execute(sa.update(Replan).values(replan_at=PLANNED_UNTIL))


def replan_moments(sessions: sessionmaker[Session]) -> set[datetime | None]:
    with sessions() as session:
        return set(session.scalars(select(Replan.replan_at)))


def marked(sessions: sessionmaker[Session]) -> list[str]:
    """The patients the next cycle plans because their facts changed."""
    with sessions() as session:
        return sorted(
            session.scalars(
                select(Patient.external_id)
                .join(Replan, Replan.patient_id == Patient.id)
                .where(Replan.replan_at.is_(None))
            )
        )


def test_new_patients_are_marked_for_planning(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    assert (
        import_file("patients", patients_csv(tmp_path, patient_row("P1"), patient_row("P2"))) == 0
    )
    assert marked(sessions) == ["P1", "P2"]


def test_reimporting_unchanged_files_marks_no_patient_for_planning(
    sessions: sessionmaker[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    patients = patients_csv(tmp_path, patient_row("P1"), patient_row("P2"))
    appointments = appointments_csv(
        tmp_path, "P1,2027-03-03T10:00,visited", "P2,2027-03-04T10:00,booked"
    )
    assert import_file("patients", patients) == 0
    assert import_file("appointments", appointments) == 0
    planned(sessions)
    capsys.readouterr()

    assert import_file("patients", patients) == 0
    assert import_file("appointments", appointments) == 0

    assert capsys.readouterr().out.splitlines() == [
        f"{patients}: 0 created, 0 updated, 2 unchanged",
        f"{appointments}: 0 created, 0 updated, 2 unchanged",
    ]
    assert marked(sessions) == []
    assert replan_moments(sessions) == {PLANNED_UNTIL}


@pytest.mark.parametrize(
    "changed_row",
    [
        pytest.param(patient_row("P2", name="佐藤 健"), id="name"),
        pytest.param(patient_row("P2", email="ken@example.jp"), id="email"),
        pytest.param(patient_row("P2", line_user_id=""), id="line_user_id"),
        pytest.param(patient_row("P2", phase="rehab"), id="phase"),
        pytest.param(patient_row("P2", reminders_opt_in="no"), id="consent"),
    ],
)
def test_a_patient_whose_row_changed_is_marked_for_planning_and_no_other(
    sessions: sessionmaker[Session], tmp_path: Path, changed_row: str
) -> None:
    first = patients_csv(tmp_path, patient_row("P1"), patient_row("P2"), name="first.csv")
    assert import_file("patients", first) == 0
    planned(sessions)

    second = patients_csv(tmp_path, patient_row("P1"), changed_row, name="second.csv")
    assert import_file("patients", second) == 0

    assert marked(sessions) == ["P2"]


def test_a_patient_whose_own_cadence_changed_is_marked_for_planning(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    header = f"{PATIENTS_HEADER},nudge_after_days,follow_up_days"
    rows = f"{patient_row('P1')},,\n{patient_row('P2')},,\n"
    assert import_file("patients", write_csv(tmp_path, "a.csv", f"{header}\n{rows}")) == 0
    planned(sessions)

    rows = f"{patient_row('P1')},,\n{patient_row('P2')},5,\n"
    assert import_file("patients", write_csv(tmp_path, "b.csv", f"{header}\n{rows}")) == 0

    assert marked(sessions) == ["P2"]
    assert stored_patients(sessions)["P2"].nudge_after_days == 5


@pytest.mark.parametrize(
    "changed_row",
    [
        pytest.param("P2,2027-03-04T10:00,no_show", id="status"),
        pytest.param("P2,2027-03-11T10:00,booked", id="added"),
    ],
)
def test_a_patient_whose_appointment_was_added_or_changed_is_marked_and_no_other(
    sessions: sessionmaker[Session], tmp_path: Path, changed_row: str
) -> None:
    assert (
        import_file("patients", patients_csv(tmp_path, patient_row("P1"), patient_row("P2"))) == 0
    )
    visits = ("P1,2027-03-03T10:00,visited", "P2,2027-03-04T10:00,booked")
    assert import_file("appointments", appointments_csv(tmp_path, *visits, name="a.csv")) == 0
    planned(sessions)

    path = appointments_csv(tmp_path, visits[0], changed_row, name="b.csv")
    assert import_file("appointments", path) == 0

    assert marked(sessions) == ["P2"]


def test_a_new_email_address_clears_the_note_that_the_old_one_was_unusable(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    before = patients_csv(tmp_path, patient_row("P1", email="old@example.jp"), name="a.csv")
    assert import_file("patients", before) == 0
    with sessions.begin() as session:
        session.execute(
            sa.update(Patient).values(
                email_unusable_reason="bounced", line_unusable_reason="blocked"
            )
        )

    after = patients_csv(tmp_path, patient_row("P1", email="new@example.jp"), name="b.csv")
    assert import_file("patients", after) == 0

    p1 = stored_patients(sessions)["P1"]
    assert (p1.email, p1.email_unusable_reason, p1.line_unusable_reason) == (
        "new@example.jp",
        None,
        "blocked",  # the LINE user id did not change
    )


# --- large files ---------------------------------------------------------------------


def _patients_file(directory: Path, n: int) -> Path:
    """A file of n new patients, P0 to P{n-1}."""
    patients = directory / "patients.csv"
    rows = "".join(f"P{i},患者 {i},acute,,,email,yes,no\n" for i in range(n))
    patients.write_text(PATIENTS_HEADER + "\n" + rows, encoding="utf-8")
    return patients


def test_a_file_of_more_patients_than_a_statement_can_bind_imports_whole(
    sessions: sessionmaker[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # PostgreSQL binds at most 65,535 parameters in one statement (SQLite 32,766): no
    # statement of the import may list every patient of the file.
    n = 65_536 + 10
    patients = _patients_file(tmp_path, n)
    appointments = appointments_csv(tmp_path, *(f"P{i},2027-03-03T10:00,booked" for i in range(n)))

    assert import_file("patients", patients) == 0
    assert import_file("appointments", appointments) == 0

    assert capsys.readouterr().out.splitlines() == [
        f"{patients}: {n} created, 0 updated, 0 unchanged",
        f"{appointments}: {n} created, 0 updated, 0 unchanged",
    ]
    assert count(sessions, Appointment) == n


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_a_large_import_leaves_postgresql_the_statistics_of_the_tables_it_wrote(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    n = ANALYZE_FROM_ROWS
    patients = _patients_file(tmp_path, n)
    appointments = appointments_csv(tmp_path, *(f"P{i},2026-11-03T10:00,visited" for i in range(n)))

    assert import_file("patients", patients) == 0
    assert import_file("appointments", appointments) == 0

    assert _row_estimates(sessions) == [n, n, n, 2 * n]


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_a_small_import_leaves_postgresql_the_statistics_it_had(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    before = _row_estimates(sessions)
    n = ANALYZE_FROM_ROWS - 1
    patients = _patients_file(tmp_path, n)
    assert import_file("patients", patients) == 0
    assert _row_estimates(sessions) == before


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
@pytest.mark.parametrize(
    ("changed", "analysed"),
    [
        pytest.param(2_000, True, id="a-tenth-is-analysed"),
        pytest.param(1_999, False, id="less-is-left"),
    ],
)
def test_postgresql_statistics_are_refreshed_once_a_tenth_of_a_table_changed(
    sessions: sessionmaker[Session], changed: int, analysed: bool
) -> None:
    rows = 20_000  # a tenth is 2,000: above ANALYZE_FROM_ROWS, so the share decides
    assert ANALYZE_FROM_SHARE * rows == 2_000 > ANALYZE_FROM_ROWS
    add = sa.text("INSERT INTO probe SELECT generate_series(1, :n)")
    with sessions() as session, session.begin():
        # A temporary table: this connection's alone, and the first its name finds.
        session.execute(sa.text("CREATE TEMPORARY TABLE probe (n integer) ON COMMIT DROP"))
        session.execute(add, {"n": rows})
        session.execute(sa.text("ANALYZE probe"))
        session.execute(add, {"n": changed})

        refresh_statistics(session, ["probe"], changed)

        estimate = session.scalar(
            sa.text("SELECT reltuples FROM pg_class WHERE oid = CAST('probe' AS regclass)")
        )
    assert estimate == (rows + changed if analysed else rows)


def _row_estimates(sessions: sessionmaker[Session]) -> list[float]:
    """The query planner's row estimates of patients, their replans, appointments
    and consent changes, which ANALYZE sets (and VACUUM, autovacuum, CREATE INDEX):
    of the tables on the search path (each test process has a schema of its own)."""
    tables = ("patients", "replans", "appointments", "consent_changes")
    with sessions() as session:
        return [
            session.scalar(
                sa.text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)"),
                {"t": table},
            )
            or 0.0
            for table in tables
        ]

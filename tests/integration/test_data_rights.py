"""The clinic's and the patients' rights over their data: `tayori export` and
`tayori forget`, and what a forgotten patient is afterwards (import, link, show,
digest), on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.commands import main
from scheduler.core.domain import DeliveryState, Reason
from scheduler.settings import Settings
from scheduler.store.db import transaction
from scheduler.store.export import TABLES
from scheduler.store.forget import REDACTED_EVENT
from scheduler.store.linking import Linked, issue_code, link
from scheduler.store.models import Delivery, LinkFailure, Patient, WebhookEvent
from tests.integration.csv_files import (
    LINE_ID,
    appointments_csv,
    patient_row,
    patients_csv,
)

JST = ZoneInfo("Asia/Tokyo")
MONDAY_NOON = "2027-03-01T12:00"
THURSDAY_10AM = "2027-03-04T10:00+09:00"  # P1's nudge goes
THURSDAY_11AM = "2027-03-04T11:00"
NAME, EMAIL = "山田 花子", "hanako@example.jp"
TABLE_FILES = [t.name for t in TABLES]


def import_clinic(directory: Path) -> None:
    """P1 (acute, LINE and email, both kinds of consent) visited on Monday morning;
    P2 (rehab, email) visited last week."""
    patients = patients_csv(
        directory,
        patient_row("P1", NAME, "acute", EMAIL, LINE_ID, "line", "yes", "yes"),
        patient_row("P2", "佐藤 健", "rehab", "ken.sato@example.jp", "", "email"),
    )
    appointments = appointments_csv(
        directory, "P1,2027-03-01T10:00,visited", "P2,2027-02-26T10:00,visited"
    )
    assert main(["import", "patients", str(patients), "--now", MONDAY_NOON]) == 0
    assert main(["import", "appointments", str(appointments), "--now", MONDAY_NOON]) == 0


def read_csv(path: Path) -> list[dict[str, str]]:
    data = path.read_bytes()
    assert data.startswith("\ufeff".encode())  # Excel's "CSV UTF-8"
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def p1_deliveries(sessions: sessionmaker[Session]) -> list[Delivery]:
    with sessions() as session:
        return list(
            session.scalars(
                select(Delivery)
                .join(Patient, Delivery.patient_id == Patient.id)
                .where(Patient.external_id == "P1")
                .order_by(Delivery.send_after)
            )
        )


def every_text(directory: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8-sig") for p in directory.rglob("*") if p.is_file())


# --- export, then forget -------------------------------------------------------------


def test_export_then_forget_leaves_no_trace_of_the_patient_in_a_new_export(
    settings: Settings,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import_clinic(tmp_path)
    assert main(["tick", "--now", MONDAY_NOON]) == 0
    assert main(["tick", "--now", THURSDAY_10AM]) == 0  # P1's nudge, to the preview outbox
    before = p1_deliveries(sessions)
    sent = [d for d in before if d.state is DeliveryState.SENT]
    planned = [d for d in before if d.state is DeliveryState.PLANNED]
    assert [d.reason for d in sent] == [Reason.CADENCE_NUDGE]
    assert Reason.CADENCE_FOLLOW_UP in [d.reason for d in planned]
    assert LINE_ID in (settings.outbox_dir / f"{sent[0].id}.json").read_text(encoding="utf-8")
    with sessions() as session:
        logged = len(session.scalars(select(Delivery.id)).all())
    exported = tmp_path / "export"
    capsys.readouterr()

    assert main(["export", str(exported), "--now", THURSDAY_11AM]) == 0

    assert capsys.readouterr().out == (
        f"exported to {exported}: patients.csv (2), appointments.csv (2), "
        f"consent_history.csv (4), cadence_history.csv (2), deliveries.csv ({logged}); "
        "README.md describes every column\n"
    )
    patients = {row["external_id"]: row for row in read_csv(exported / "patients.csv")}
    assert patients["P1"] | {"created_at": "", "updated_at": ""} == {
        "external_id": "P1",
        "name": NAME,
        "phase": "acute",
        "email": EMAIL,
        "line_user_id": LINE_ID,
        "preferred_channel": "line",
        "reminders_opt_in": "yes",
        "newsletter_opt_in": "yes",
        "nudge_after_days": "",
        "follow_up_days": "",
        "line_unusable_reason": "",
        "email_unusable_reason": "",
        "line_linked_at": "",
        "forgotten_at": "",
        "created_at": "",
        "updated_at": "",
    }
    deliveries = read_csv(exported / "deliveries.csv")
    assert {d["id"] for d in deliveries if d["external_id"] == "P1"} == {d.id for d in before}
    nudge = next(d for d in deliveries if d["id"] == sent[0].id)
    assert (nudge["reason"], nudge["channel"], nudge["state"], nudge["sent_at"]) == (
        "cadence_nudge",
        "line",
        "sent",
        "2027-03-04T10:00:00+09:00",
    )

    assert main(["forget", "P1", "--yes", "--now", THURSDAY_11AM]) == 0

    after = p1_deliveries(sessions)
    assert [d.id for d in after] == [d.id for d in before]  # counted still
    assert [d.state for d in after if d.id in {p.id for p in planned}] == [
        DeliveryState.WITHDRAWN
    ] * len(planned)
    assert {d.last_error for d in after if d.state is DeliveryState.WITHDRAWN} == {
        "patient forgotten"
    }
    assert not (settings.outbox_dir / f"{sent[0].id}.json").exists()
    assert LINE_ID not in every_text(settings.outbox_dir)
    assert main(["tick", "--now", "2027-03-06T10:00"]) == 0  # the follow-up's time
    assert [d.id for d in p1_deliveries(sessions)] == [d.id for d in before]  # nothing new

    # Exported again into the same folder, as JSON: the CSV files of before are gone.
    assert main(["export", str(exported), "--format", "json", "--now", "2027-03-06T10:00"]) == 0
    assert sorted(p.name for p in exported.iterdir()) == sorted(
        ["README.md", *(f"{name}.json" for name in TABLE_FILES)]
    )
    text = every_text(exported)
    for trace in (NAME, "山田", EMAIL, LINE_ID):
        assert trace not in text
    patient = next(
        p
        for p in json.loads((exported / "patients.json").read_text("utf-8"))
        if p["external_id"] == "P1"
    )
    assert (patient["name"], patient["email"], patient["line_user_id"]) == (
        "(forgotten)",
        None,
        None,
    )
    assert patient["forgotten_at"] == "2027-03-04T11:00:00+09:00"
    assert (patient["reminders_opt_in"], patient["newsletter_opt_in"]) == (False, False)
    consent = [
        (c["kind"], c["granted"], c["source"])
        for c in json.loads((exported / "consent_history.json").read_text("utf-8"))
        if c["external_id"] == "P1"
    ]
    assert consent == [
        ("reminders", True, "import"),
        ("newsletter", True, "import"),
        ("reminders", False, "forget"),
        ("newsletter", False, "forget"),
    ]
    appointments = json.loads((exported / "appointments.json").read_text("utf-8"))
    assert [a["starts_at"] for a in appointments if a["external_id"] == "P1"] == [
        "2027-03-01T10:00:00+09:00"
    ]
    logged = json.loads((exported / "deliveries.json").read_text("utf-8"))
    assert len([d for d in logged if d["external_id"] == "P1"]) == len(before)


def test_the_export_readme_describes_every_column_of_every_file(
    clinic_env: dict[str, str], tmp_path: Path
) -> None:
    import_clinic(tmp_path)
    exported = tmp_path / "export"
    assert main(["export", str(exported), "--now", MONDAY_NOON]) == 0

    readme = (exported / "README.md").read_text(encoding="utf-8")
    assert "Exported by `tayori export` on 2027-03-01 12:00 (clinic time)" in readme
    for name in TABLE_FILES:
        header = (exported / f"{name}.csv").read_text(encoding="utf-8-sig").splitlines()[0]
        section = readme.split(f"## {name}.csv\n", 1)[1].split("\n## ", 1)[0]
        described = [line.split("`")[1] for line in section.splitlines() if line.startswith("| `")]
        assert described == header.split(",")


def test_export_csv_is_utf8_with_a_bom_and_one_line_per_row(
    clinic_env: dict[str, str], tmp_path: Path
) -> None:
    import_clinic(tmp_path)
    exported = tmp_path / "export"
    assert main(["export", str(exported), "--now", MONDAY_NOON]) == 0
    assert (exported / "consent_history.csv").read_bytes() == (
        "\ufeffexternal_id,kind,granted,changed_at,source\r\n"
        "P1,reminders,yes,2027-03-01T12:00:00+09:00,import\r\n"
        "P1,newsletter,yes,2027-03-01T12:00:00+09:00,import\r\n"
        "P2,reminders,yes,2027-03-01T12:00:00+09:00,import\r\n"
        "P2,newsletter,no,2027-03-01T12:00:00+09:00,import\r\n"
    ).encode()


@pytest.mark.parametrize("what", ["other-files", "an-old-readme", "a-file"])
def test_export_refuses_a_folder_that_is_not_empty_nor_an_earlier_export(
    clinic_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], what: str
) -> None:
    target = tmp_path / "target"
    if what == "a-file":
        target.write_text("mine", encoding="utf-8")
        expected = f"tayori: {target} is a file: name a folder to export into\n"
    else:
        target.mkdir()
        (target / ("notes.txt" if what == "other-files" else "README.md")).write_text("mine")
        expected = (
            f"tayori: {target} is not empty and not an earlier export of Tayori's: name a new "
            "or empty folder (nothing was written)\n"
        )

    assert main(["export", str(target)]) == 1

    assert capsys.readouterr().err == expected
    if what != "a-file":
        assert [p.read_text() for p in target.iterdir()] == ["mine"]


def test_export_refuses_an_earlier_export_with_a_file_of_the_clinics_added(
    clinic_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exported = tmp_path / "export"
    assert main(["export", str(exported)]) == 0
    (exported / "notes.txt").write_text("mine")
    assert main(["export", str(exported)]) == 1
    assert "is not empty and not an earlier export" in capsys.readouterr().err
    assert (exported / "notes.txt").read_text() == "mine"


# --- forget --------------------------------------------------------------------------


def test_forget_asks_to_type_the_external_id_and_changes_nothing_on_another_answer(
    clinic_env: dict[str, str],
    tmp_path: Path,
    sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import_clinic(tmp_path)
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("P2\n"))

    assert main(["forget", "P1", "--now", THURSDAY_11AM]) == 1

    err = capsys.readouterr().err
    assert "Type P1 to confirm: " in err
    assert err.endswith("tayori: not confirmed: nothing was changed\n")
    with sessions() as session:
        patient = session.scalars(select(Patient).where(Patient.external_id == "P1")).one()
        assert (patient.name, patient.forgotten_at) == (NAME, None)

    monkeypatch.setattr("sys.stdin", io.StringIO("P1\n"))
    assert main(["forget", "P1", "--now", THURSDAY_11AM]) == 0
    assert capsys.readouterr().out.startswith("patient P1 forgotten: ")
    with sessions() as session:
        patient = session.scalars(select(Patient).where(Patient.external_id == "P1")).one()
        assert (patient.name, patient.email, patient.line_user_id) == ("(forgotten)", None, None)
        assert patient.forgotten_at == datetime(2027, 3, 4, 11, 0, tzinfo=JST)

    assert main(["forget", "P1", "--yes"]) == 0
    assert capsys.readouterr().out == (
        "patient P1 was forgotten on 2027-03-04 11:00 already: nothing to do\n"
    )


def test_forget_erases_what_the_line_side_holds_of_the_patient(
    clinic_env: dict[str, str], tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    import_clinic(tmp_path)
    monday = datetime(2027, 3, 1, 12, 0, tzinfo=JST)
    body = json.dumps({"type": "message", "source": {"userId": LINE_ID}})
    dealt_with, waiting, other = (f"test-{uuid.uuid4().hex}" for _ in range(3))
    with transaction(sessions) as session:
        for event_id, processed in ((dealt_with, monday), (waiting, None), (other, monday)):
            session.add(
                WebhookEvent(
                    id=event_id,
                    event_type="message",
                    body=body if event_id != other else body.replace(LINE_ID, "U" + "0" * 32),
                    received_at=monday,
                    processed_at=processed,
                    attempts=1,
                )
            )
        session.add(LinkFailure(line_user_id=LINE_ID, at=monday))

    assert main(["forget", "P1", "--yes", "--now", THURSDAY_11AM]) == 0

    with sessions() as session:
        bodies = {
            e.id: e.body
            for e in session.scalars(
                select(WebhookEvent).where(WebhookEvent.id.in_([dealt_with, waiting, other]))
            )
        }
        assert bodies[dealt_with] == REDACTED_EVENT
        # Not dealt with yet: left to the webhook, which finds no patient with that id.
        assert bodies[waiting] == body
        assert LINE_ID not in bodies[other]
        assert bodies[other] != REDACTED_EVENT
        failures = session.scalars(select(LinkFailure).where(LinkFailure.line_user_id == LINE_ID))
        assert failures.all() == []


def test_forget_an_unknown_patient_exits_1(
    clinic_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["forget", "NOPE", "--yes"]) == 1
    assert capsys.readouterr().err == "tayori: no patient with external_id 'NOPE'\n"


def test_an_import_does_not_bring_a_forgotten_patient_back(
    clinic_env: dict[str, str],
    tmp_path: Path,
    sessions: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
) -> None:
    import_clinic(tmp_path)
    assert main(["forget", "P1", "--yes", "--now", THURSDAY_11AM]) == 0
    again = patients_csv(
        tmp_path,
        patient_row("P3", "鈴木 一郎"),
        patient_row("P1", NAME, "acute", EMAIL, LINE_ID, "line", "yes", "yes"),
        name="again.csv",
    )
    capsys.readouterr()

    assert main(["import", "patients", str(again)]) == 1

    assert capsys.readouterr().err == (
        f"{again}:3: external_id: patient 'P1' was forgotten at their request (tayori forget) "
        "and is not imported again: remove the row\n"
        "tayori: nothing imported (1 problem(s))\n"
    )
    with sessions() as session:
        assert sorted(session.scalars(select(Patient.external_id))) == ["P1", "P2"]
        assert session.scalars(select(Patient.name).where(Patient.external_id == "P1")).one() == (
            "(forgotten)"
        )


def test_patient_show_says_when_line_was_linked_and_when_the_patient_was_forgotten(
    clinic_env: dict[str, str],
    tmp_path: Path,
    sessions: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
) -> None:
    patients = patients_csv(tmp_path, patient_row("P1", line_user_id=""))
    assert main(["import", "patients", str(patients), "--now", MONDAY_NOON]) == 0
    monday = datetime(2027, 3, 1, 12, 0, tzinfo=JST)
    with transaction(sessions) as session:
        patient = session.scalars(select(Patient)).one()
        code = issue_code(session, patient, monday).code
        assert link(session, LINE_ID, f"連携コード {code}", monday).linked is Linked.LINKED
    capsys.readouterr()

    assert main(["patient", "show", "P1", "--now", MONDAY_NOON]) == 0
    shown = capsys.readouterr().out
    assert "  LINE linked on 2027-03-01 12:00 (a link code)\n" in shown
    assert "    2027-03-01 12:00  reminders yes  (import)\n" in shown

    assert main(["forget", "P1", "--yes", "--now", THURSDAY_11AM]) == 0
    capsys.readouterr()
    assert main(["patient", "show", "P1", "--now", THURSDAY_11AM]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith(
        "patient P1  (forgotten)\n"
        "  forgotten on 2027-03-04 11:00: name and contacts erased at the patient's request, "
        "consent withdrawn\n"
    )
    assert "LINE linked" not in shown
    assert "    2027-03-04 11:00  reminders no  (forget)\n" in shown

    assert main(["patient", "set", "P1", "--phase", "rehab"]) == 1
    assert capsys.readouterr().err == (
        "tayori: patient P1 was forgotten on 2027-03-04 11:00: nothing to change\n"
    )


def test_the_digest_names_no_forgotten_patient(
    clinic_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    patients = patients_csv(tmp_path, patient_row("P1", NAME), patient_row("P2", "佐藤 健"))
    assert main(["import", "patients", str(patients), "--now", "2027-01-01T10:00"]) == 0
    assert main(["forget", "P1", "--yes", "--now", "2027-01-02T10:00"]) == 0
    capsys.readouterr()

    assert main(["digest", "--now", MONDAY_NOON]) == 0

    printed = capsys.readouterr().out
    assert "佐藤 健様（P2）急性期 59日目" in printed
    assert "（P1）" not in printed

"""Link codes at the desk: `tayori link-code` for one patient (with its QR code) and
`tayori link-codes` for printed pages, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ElementTree
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import segno
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.commands import main
from scheduler.store.db import transaction
from scheduler.store.linking import Linked, issue_code, link
from scheduler.store.models import LinkCode, Patient
from tests.conftest import ROOT
from tests.integration.csv_files import LINE_ID, patient_row, patients_csv
from tests.integration.qr_png import qr_modules

JST = ZoneInfo("Asia/Tokyo")
NOW = "2027-03-01T12:00"
BASIC_ID = "@123abcde"
# 「連携コード 」 as LINE's URL carries it, the account's "@" %-encoded too.
URL_START = (
    "https://line.me/R/oaMessage/%40123abcde/?%E9%80%A3%E6%90%BA%E3%82%B3%E3%83%BC%E3%83%89%20"
)
CODE = re.compile(r"^[ABCDEFGHJKMNPQRSTUVWXYZ23456789]{8}$")
OTHER_LINE_ID = "U" + "fedcba9876543210" * 2
ESCAPED_NAME = '<script>alert("x")</script> & 山田'


@pytest.fixture
def line_clinic(
    clinic_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The shipped settings with the official account's ID set."""
    shipped = (ROOT / "config" / "tayori.toml").read_text(encoding="utf-8")
    assert '\nbasic_id = ""' in shipped
    config = tmp_path / "tayori.toml"
    config.write_text(shipped.replace('\nbasic_id = ""', f'\nbasic_id = "{BASIC_ID}"'), "utf-8")
    monkeypatch.setenv("TAYORI_CONFIG", str(config))
    return config


def import_patients(directory: Path, *rows: str) -> None:
    assert main(["import", "patients", str(patients_csv(directory, *rows))]) == 0


def stored_codes(sessions: sessionmaker[Session]) -> dict[str, LinkCode]:
    with sessions() as session:
        return {
            external_id: code
            for external_id, code in session.execute(
                select(Patient.external_id, LinkCode).join(
                    LinkCode, LinkCode.patient_id == Patient.id
                )
            )
        }


def printed(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """`tayori link-code`'s lines: the code, the expiry, the URL, the QR file."""
    lines = capsys.readouterr().out.splitlines()
    found = {
        "code": lines[0].rsplit(": ", 1)[1],
        "valid": lines[1],
    }
    for line in lines[2:]:
        key, _, value = line.partition(": ")
        found[key] = value
    return found


# --- one patient ---------------------------------------------------------------------


def test_link_code_prints_a_code_without_look_alikes_its_expiry_and_the_line_url(
    line_clinic: Path,
    tmp_path: Path,
    sessions: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
) -> None:
    import_patients(tmp_path, patient_row("P1", line_user_id=""))
    capsys.readouterr()

    assert main(["link-code", "P1", "--now", NOW]) == 0

    shown = printed(capsys)
    assert CODE.match(shown["code"])
    assert not set(shown["code"]) & set("01OIL")
    assert shown["valid"] == "valid until 2027-03-15 12:00, once; a new code replaces it"
    assert shown["LINE"] == URL_START + shown["code"]
    stored = stored_codes(sessions)["P1"]
    assert stored.code == shown["code"]
    assert stored.expires_at == datetime(2027, 3, 15, 12, 0, tzinfo=JST)
    assert stored.used_at is None


def test_a_new_link_code_replaces_the_old_one(
    line_clinic: Path,
    tmp_path: Path,
    sessions: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
) -> None:
    import_patients(tmp_path, patient_row("P1", line_user_id=""))
    capsys.readouterr()
    assert main(["link-code", "P1", "--now", NOW]) == 0
    first = printed(capsys)["code"]
    assert main(["link-code", "P1", "--now", "2027-03-02T09:00"]) == 0
    second = printed(capsys)["code"]

    assert second != first
    assert {p: c.code for p, c in stored_codes(sessions).items()} == {"P1": second}
    later = datetime(2027, 3, 2, 10, 0, tzinfo=JST)
    with transaction(sessions) as session:
        assert link(session, OTHER_LINE_ID, f"連携コード {first}", later).linked is Linked.WRONG
        assert link(session, OTHER_LINE_ID, f"連携コード {second}", later).linked is Linked.LINKED


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_link_code_qr_writes_the_line_url_as_a_qr_code(
    line_clinic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    import_patients(tmp_path, patient_row("P1", line_user_id=""))
    capsys.readouterr()
    qr = tmp_path / f"desk{suffix}"

    assert main(["link-code", "P1", "--qr", str(qr), "--now", NOW]) == 0

    shown = printed(capsys)
    assert shown["QR code"] == str(qr)
    # What segno makes of the URL, written out from the expected text (not from the
    # command's own function), at error correction M as printed codes are.
    expected = segno.make_qr(URL_START + shown["code"], error="m")
    data = qr.read_bytes()
    if suffix == ".png":
        assert qr_modules(data) == [[bool(m) for m in row] for row in expected.matrix]
    else:
        assert ElementTree.fromstring(data).tag == "{http://www.w3.org/2000/svg}svg"
        written = io.BytesIO()
        expected.save(written, kind="svg", scale=10, border=4)
        assert data == written.getvalue()


def test_link_code_without_basic_id_prints_the_code_and_refuses_a_qr_code(
    clinic_env: dict[str, str],
    tmp_path: Path,
    sessions: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
) -> None:
    import_patients(tmp_path, patient_row("P1", line_user_id=""))
    capsys.readouterr()

    assert main(["link-code", "P1", "--qr", str(tmp_path / "desk.png"), "--now", NOW]) == 1
    assert capsys.readouterr().err == (
        "tayori: a QR code needs the LINE official account's ID: set [line] basic_id in "
        'config/tayori.toml (such as "@123abcde")\n'
    )
    assert stored_codes(sessions) == {}
    assert not (tmp_path / "desk.png").exists()

    assert main(["link-code", "P1", "--now", NOW]) == 0
    lines = capsys.readouterr().out.splitlines()
    code = stored_codes(sessions)["P1"].code
    assert lines[0] == f"link code for P1 (山田 花子): {code}"
    assert lines[2] == (
        f"the patient sends 「連携コード {code}」 to the clinic's LINE; for a URL and a QR "
        "code, set [line] basic_id in config/tayori.toml"
    )


def test_link_code_notes_a_patient_who_has_a_line_user_id_already(
    line_clinic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import_patients(tmp_path, patient_row("P1"))
    capsys.readouterr()
    assert main(["link-code", "P1", "--now", NOW]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "note: P1 has a LINE user id already (from an import); this code sent from another "
        "LINE account links that account instead"
    )


def test_link_code_for_an_unknown_patient_exits_1(
    line_clinic: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["link-code", "NOPE", "--now", NOW]) == 1
    assert capsys.readouterr().err == "tayori: no patient with external_id 'NOPE'\n"


def test_link_code_refuses_a_qr_file_that_is_neither_png_nor_svg(
    line_clinic: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["link-code", "P1", "--qr", "desk.jpg"])
    assert "expected a file ending in .png or .svg, got 'desk.jpg'" in capsys.readouterr().err


def test_a_forgotten_patient_gets_no_code_and_their_earlier_code_links_nobody(
    line_clinic: Path,
    tmp_path: Path,
    sessions: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
) -> None:
    import_patients(tmp_path, patient_row("P1", line_user_id=""))
    assert main(["link-code", "P1", "--now", NOW]) == 0
    code = stored_codes(sessions)["P1"].code
    assert main(["forget", "P1", "--yes", "--now", "2027-03-01T13:00"]) == 0
    capsys.readouterr()

    assert main(["link-code", "P1", "--now", "2027-03-01T14:00"]) == 1
    assert capsys.readouterr().err == (
        "tayori: patient P1 was forgotten on 2027-03-01 13:00 at their request: no link code\n"
    )
    later = datetime(2027, 3, 1, 15, 0, tzinfo=JST)
    with transaction(sessions) as session:
        assert link(session, OTHER_LINE_ID, f"連携コード {code}", later).linked is Linked.WRONG
        patient = session.scalars(select(Patient)).one()
        assert patient.line_user_id is None
        with pytest.raises(ValueError, match="forgotten"):
            issue_code(session, patient, later)
    assert stored_codes(sessions) == {}


# --- printed pages -------------------------------------------------------------------


def test_link_codes_writes_a_page_per_unlinked_patient_and_an_index(
    line_clinic: Path,
    tmp_path: Path,
    sessions: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
) -> None:
    import_patients(
        tmp_path,
        patient_row("P1", f'"{ESCAPED_NAME.replace(chr(34), chr(34) * 2)}"', line_user_id=""),
        patient_row("P2"),  # linked already
        patient_row("P/3", "佐藤 健", line_user_id=""),
        patient_row("P4", "鈴木 一郎", line_user_id=""),
    )
    assert main(["forget", "P4", "--yes", "--now", NOW]) == 0
    capsys.readouterr()
    pages = tmp_path / "desk"

    assert main(["link-codes", "--all-unlinked", str(pages), "--now", NOW]) == 0

    assert capsys.readouterr().out == (
        f"2 page(s) written to {pages}: open {pages / 'index.html'} for the list, "
        f"{pages / 'all.html'} to print them all; the codes are valid until 2027-03-15 12:00\n"
    )
    codes = {p: c.code for p, c in stored_codes(sessions).items()}
    assert set(codes) == {"P1", "P/3"}
    # One page per patient, named by the external_id; "/" cannot name a folder.
    assert sorted(p.name for p in (pages / "patients").iterdir()) == ["P%2F3.html", "P1.html"]
    first = (pages / "patients" / "P1.html").read_text(encoding="utf-8")
    third = (pages / "patients" / "P%2F3.html").read_text(encoding="utf-8")
    index = (pages / "index.html").read_text(encoding="utf-8")
    every = (pages / "all.html").read_text(encoding="utf-8")
    for page, external_id in ((first, "P1"), (third, "P/3")):
        code = codes[external_id]
        assert f'<p class="code">{code}</p>' in page
        assert f"「連携コード {code}」" in page
        assert "たより整体院" in page
        assert "2027年3月15日 12:00" in page
        assert page.count("<svg") == 1
        assert f'<p class="code">{code}</p>' in every
        assert code in index
    assert "佐藤 健 様" in third
    # Names are escaped wherever they appear.
    escaped = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; 山田 様"
    for page in (first, index, every):
        assert "<script>" not in page
        assert escaped in page
    assert '<a href="patients/P%252F3.html">P/3</a>' in index
    assert "鈴木" not in index + every
    assert every.count('<section class="card">') == 2


def test_link_codes_without_basic_id_exits_1_writing_nothing(
    clinic_env: dict[str, str],
    tmp_path: Path,
    sessions: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
) -> None:
    import_patients(tmp_path, patient_row("P1", line_user_id=""))
    capsys.readouterr()
    assert main(["link-codes", "--all-unlinked", str(tmp_path / "desk"), "--now", NOW]) == 1
    assert capsys.readouterr().err == (
        "tayori: a page with a QR code needs the LINE official account's ID: set [line] "
        'basic_id in config/tayori.toml (such as "@123abcde")\n'
    )
    assert not (tmp_path / "desk").exists()
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(LinkCode)) == 0


def test_link_codes_with_every_patient_linked_writes_nothing(
    line_clinic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import_patients(tmp_path, patient_row("P1", line_user_id=LINE_ID))
    capsys.readouterr()
    assert main(["link-codes", "--all-unlinked", str(tmp_path / "desk"), "--now", NOW]) == 0
    assert capsys.readouterr().out == (
        "every patient has a LINE user id (or was forgotten): no pages written\n"
    )
    assert not (tmp_path / "desk").exists()

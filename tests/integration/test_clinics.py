"""Several clinics in one installation: each has its own folder (settings, messages,
channel credentials), and nothing of one clinic reaches another: not its templates,
its LINE token, its sender, its quota, its webhook or its patients."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from scheduler.clock import FixedClock
from scheduler.commands import main
from scheduler.core.domain import ConsentKind, DeliveryState, Reason
from scheduler.core.unsubscribe import unsubscribe_token
from scheduler.outbox.budget import line_quota
from scheduler.runtime import Clinics, Runtime, open_runtime
from scheduler.settings import load_settings
from scheduler.store.db import reading
from scheduler.store.facts import current_consent
from scheduler.store.models import Delivery, WebhookEvent
from scheduler.store.patients import find_patient
from scheduler.web.app import create_app
from scheduler.worker import Worker
from tests.conftest import ROOT
from tests.integration.channel_env import SECRET_KEY, install_channel_env
from tests.integration.dispatching import NUDGE_TIME, nudged_patients
from tests.integration.line_webhook import follow, new_user_id, signature, webhook_body
from tests.integration.workers import start_workers, wait_until
from tests.servers.line_api import LineApiServer
from tests.servers.smtp import SmtpServer

A_SECRET, B_SECRET = "clinic-a-channel-secret", "clinic-b-channel-secret"
B_NAME = "うめ鍼灸院"
B_SENDER = f"{B_NAME} <info@ume.example>"
B_TEMPLATE_MARK = "（うめ鍼灸院の文面）"
B_LINE_ID = "U" + "b1" * 16


@pytest.fixture
def servers() -> Iterator[tuple[LineApiServer, LineApiServer, SmtpServer, SmtpServer]]:
    with (
        LineApiServer("clinic-a-token") as line_a,
        LineApiServer("clinic-b-token") as line_b,
        SmtpServer() as smtp_a,
        SmtpServer() as smtp_b,
    ):
        yield line_a, line_b, smtp_a, smtp_b


@dataclass
class TwoClinics:
    a: Runtime
    b: Runtime
    line_a: LineApiServer
    line_b: LineApiServer
    smtp_a: SmtpServer
    smtp_b: SmtpServer
    folder_b: Path


def clinic_folder(folder: Path, line: LineApiServer, smtp: SmtpServer) -> Path:
    """Clinic B's folder: its name, its own wording of the nudge, its channels."""
    folder.mkdir()
    settings = (ROOT / "config" / "tayori.toml").read_text(encoding="utf-8")
    (folder / "tayori.toml").write_text(
        settings.replace('name = "たより整体院"', f'name = "{B_NAME}"'), encoding="utf-8"
    )
    shutil.copytree(ROOT / "messages", folder / "messages")
    for channel in ("line", "email"):
        template = folder / "messages" / "cadence_nudge" / f"{channel}.j2"
        template.write_text(
            B_TEMPLATE_MARK + "\n" + template.read_text(encoding="utf-8"), encoding="utf-8"
        )
    (folder / ".env").write_text(
        f"LINE_CHANNEL_ACCESS_TOKEN={line.access_token}\n"
        f"LINE_API_BASE_URL={line.base_url}\n"
        f"LINE_CHANNEL_SECRET={B_SECRET}\n"
        f"SMTP_HOST={smtp.host}\nSMTP_PORT={smtp.port}\nSMTP_SECURITY=none\n"
        f'MAIL_FROM="{B_SENDER}"\n',
        encoding="utf-8",
    )
    return folder


def settings_only(folder: Path) -> Path:
    """A clinic's folder holding only the shipped settings file."""
    folder.mkdir()
    shutil.copy(ROOT / "config" / "tayori.toml", folder / "tayori.toml")
    return folder


@pytest.fixture
def clinics(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    servers: tuple[LineApiServer, LineApiServer, SmtpServer, SmtpServer],
) -> Iterator[TwoClinics]:
    line_a, line_b, smtp_a, smtp_b = servers
    env = install_channel_env(database_url, tmp_path, monkeypatch, line_a, smtp_a)
    monkeypatch.setenv("LINE_CHANNEL_SECRET", A_SECRET)
    folder_b = clinic_folder(tmp_path / "clinic-b", line_b, smtp_b)
    assert main(["clinic", "add", "b", "--config", str(folder_b)]) == 0
    own = open_runtime(load_settings(env | {"LINE_CHANNEL_SECRET": A_SECRET}))
    b = Clinics(own, os.environ).find("b")
    assert b is not None
    yield TwoClinics(own, b, line_a, line_b, smtp_a, smtp_b, folder_b)
    own.close()


def test_each_clinic_pushes_with_its_own_token_and_its_own_templates(
    clinics: TwoClinics,
) -> None:
    nudged_patients(clinics.a)
    nudged_patients(clinics.b, line_user_id=B_LINE_ID)
    assert main(["tick", "--now", NUDGE_TIME.isoformat()]) == 0
    [to_a] = clinics.line_a.accepted.values()
    [to_b] = clinics.line_b.accepted.values()
    assert to_b["to"] == B_LINE_ID
    assert B_TEMPLATE_MARK in to_b["messages"][0]["text"]
    assert B_NAME in to_b["messages"][0]["text"]
    assert B_TEMPLATE_MARK not in to_a["messages"][0]["text"]
    assert B_NAME not in to_a["messages"][0]["text"]


def test_each_clinic_mails_from_its_own_sender_and_server(clinics: TwoClinics) -> None:
    nudged_patients(clinics.a, line_user_id=None, email="a@example.jp")
    nudged_patients(clinics.b, line_user_id=None, email="b@example.jp")
    assert main(["tick", "--now", NUDGE_TIME.isoformat()]) == 0
    [to_a] = [r.message for r in clinics.smtp_a.received if "a@example.jp" in r.rcpt_tos]
    [to_b] = [r.message for r in clinics.smtp_b.received if "b@example.jp" in r.rcpt_tos]
    assert B_NAME in str(to_b["From"]) and "info@ume.example" in str(to_b["From"])
    assert "info@ume.example" not in str(to_a["From"])
    assert not [r for r in clinics.smtp_a.received if "b@example.jp" in r.rcpt_tos]


def test_each_clinics_line_quota_counts_its_own_messages(clinics: TwoClinics) -> None:
    nudged_patients(clinics.a, count=3)
    nudged_patients(clinics.b, line_user_id=B_LINE_ID)
    assert main(["tick", "--now", NUDGE_TIME.isoformat()]) == 0
    used = {}
    for runtime in (clinics.a, clinics.b):
        settings = runtime.settings
        with reading(runtime.sessions) as session:
            quota = line_quota(session, NUDGE_TIME, settings.timezone, 200)
        used[settings.clinic_slug] = quota.used
    assert used == {"default": 3, "b": 1}


def test_the_same_patient_number_is_a_different_patient_in_each_clinic(
    clinics: TwoClinics,
) -> None:
    nudged_patients(clinics.a)
    nudged_patients(clinics.b, line_user_id=B_LINE_ID)
    with reading(clinics.a.sessions) as a, reading(clinics.b.sessions) as b:
        in_a, in_b = find_patient(a, "P1"), find_patient(b, "P1")
        assert in_a is not None and in_b is not None
        assert in_a.id != in_b.id and in_b.line_user_id == B_LINE_ID


def _follow_event(clinics: TwoClinics, path: str, secret: str) -> int:
    """A follow event posted to `path` signed with `secret`: the answer's status."""
    client = create_app(clinics.a.settings, clinics.a).test_client()
    body = webhook_body(follow(new_user_id(), clinics.line_b.issue_reply_token()))
    answer = client.post(path, data=body, headers={"X-Line-Signature": signature(body, secret)})
    return answer.status_code


def test_a_webhook_signed_with_another_clinics_secret_is_refused(clinics: TwoClinics) -> None:
    assert _follow_event(clinics, "/line/webhook/b", A_SECRET) == 400
    with reading(clinics.b.sessions) as session:
        assert session.scalars(select(WebhookEvent)).all() == []


def test_a_webhook_is_stored_for_the_clinic_whose_path_it_came_to(clinics: TwoClinics) -> None:
    assert _follow_event(clinics, "/line/webhook/b", B_SECRET) == 200
    with reading(clinics.b.sessions) as session:
        [event] = session.scalars(select(WebhookEvent)).all()
    assert event.clinic_id == clinics.b.settings.clinic_id


def test_a_webhook_for_a_clinic_not_served_is_not_found(clinics: TwoClinics) -> None:
    assert _follow_event(clinics, "/line/webhook/nowhere", A_SECRET) == 404


def test_an_unsubscribe_link_acts_in_its_own_clinic(clinics: TwoClinics) -> None:
    nudged_patients(clinics.a, newsletter=True)
    nudged_patients(clinics.b, line_user_id=B_LINE_ID, newsletter=True)
    with reading(clinics.b.sessions) as session:
        patient = find_patient(session, "P1")
        assert patient is not None
        public_id, b_id = patient.public_id, patient.id
    token = unsubscribe_token(SECRET_KEY, "b", public_id, ConsentKind.NEWSLETTER)
    client = create_app(clinics.a.settings, clinics.a).test_client()
    assert client.post(f"/unsubscribe/{token}", data={"scope": "kind"}).status_code == 200
    with reading(clinics.b.sessions) as session:
        assert current_consent(session, [b_id])[b_id][ConsentKind.NEWSLETTER] is False
    with reading(clinics.a.sessions) as session:
        a_patient = find_patient(session, "P1")
        assert a_patient is not None
        a_id = a_patient.id
        assert current_consent(session, [a_id])[a_id][ConsentKind.NEWSLETTER] is True


def test_a_token_naming_another_clinic_finds_no_patient(clinics: TwoClinics) -> None:
    nudged_patients(clinics.b, line_user_id=B_LINE_ID, newsletter=True)
    with reading(clinics.b.sessions) as session:
        patient = find_patient(session, "P1")
        assert patient is not None
        public_id = patient.public_id
    token = unsubscribe_token(SECRET_KEY, "default", public_id, ConsentKind.NEWSLETTER)
    client = create_app(clinics.a.settings, clinics.a).test_client()
    assert client.get(f"/unsubscribe/{token}").status_code == 404


def test_a_command_asks_which_clinic_when_there_are_several(
    clinics: TwoClinics, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status"]) == 1
    assert "--clinic" in capsys.readouterr().err
    assert main(["status", "--clinic", "b"]) == 0


def test_a_busy_clinic_does_not_hold_up_anothers_messages(clinics: TwoClinics) -> None:
    """However little claiming time a cycle has, each clinic sends a batch in it: a
    clinic with hundreds of messages due goes on over the next cycles, and the other
    clinic's message is not behind them."""
    nudged_patients(clinics.a, count=300, line_user_id=None, email="a@example.jp")
    nudged_patients(clinics.b, line_user_id=B_LINE_ID)
    worker = Worker([clinics.a, clinics.b], FixedClock(NUDGE_TIME), claiming_seconds=0)
    worker.run_once()
    assert len(clinics.line_b.accepted) == 1
    with reading(clinics.a.sessions) as session:
        waiting = session.scalars(
            select(Delivery.id).where(
                Delivery.clinic_id == clinics.a.settings.clinic_id,
                Delivery.state == DeliveryState.PLANNED,
            )
        ).all()
    assert waiting, "clinic A's backlog was sent in one cycle: nothing was shown"


def test_a_clinic_folder_gets_the_installations_messages_when_it_has_none(
    clinics: TwoClinics, tmp_path: Path
) -> None:
    folder = settings_only(tmp_path / "clinic-c")
    assert main(["clinic", "add", "c", "--config", str(folder)]) == 0
    assert (folder / "messages" / "cadence_nudge" / "line.j2").is_file()


def test_a_clinic_env_with_another_variable_is_refused_naming_it(
    clinics: TwoClinics, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = settings_only(tmp_path / "clinic-d")
    (folder / ".env").write_text("DATABASE_URL=sqlite:///elsewhere.db\n", encoding="utf-8")
    assert main(["clinic", "add", "d", "--config", str(folder)]) == 1
    error = capsys.readouterr().err
    assert str(folder / ".env") in error and "DATABASE_URL" in error
    assert main(["status", "--clinic", "d"]) == 1  # not registered
    assert not (folder / "messages").exists()


def test_a_slug_must_fit_in_a_web_address(
    clinics: TwoClinics, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = settings_only(tmp_path / "clinic-e")
    assert main(["clinic", "add", "Ume Clinic", "--config", str(folder)]) == 1
    assert "slug" in capsys.readouterr().err


def test_the_clinic_list_shows_each_clinic_and_its_channels(
    clinics: TwoClinics, capsys: pytest.CaptureFixture[str]
) -> None:
    nudged_patients(clinics.b, line_user_id=B_LINE_ID)
    capsys.readouterr()
    assert main(["clinic", "list"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].split()[:2] == ["default", "0"]
    assert rows[2].split()[:4] == ["b", "1", "yes", "yes"]


# PostgreSQL only: on SQLite one worker runs at a time (scheduler/store/worker_lock.py).
@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_two_workers_send_each_clinics_messages_once_with_its_own_token(
    clinics: TwoClinics, database_url: str, tmp_path: Path
) -> None:
    count = 20
    nudged_patients(clinics.a, count=count)
    nudged_patients(clinics.b, count=count, line_user_id=B_LINE_ID)
    env = {"DATABASE_URL": database_url, "LINE_CHANNEL_SECRET": A_SECRET}
    workers = start_workers(env, NUDGE_TIME.isoformat(), tmp_path / "logs", 2)
    wait_until(
        lambda: len(clinics.line_a.accepted) + len(clinics.line_b.accepted) >= 2 * count,
        workers,
        "every nudge sent",
    )
    for worker in workers:
        worker.stop()
    for runtime, line in ((clinics.a, clinics.line_a), (clinics.b, clinics.line_b)):
        with reading(runtime.sessions) as session:
            sent = set(
                session.scalars(
                    select(Delivery.id).where(
                        Delivery.clinic_id == runtime.settings.clinic_id,
                        Delivery.reason == Reason.CADENCE_NUDGE,
                        Delivery.state == DeliveryState.SENT,
                    )
                )
            )
        assert set(line.accepted) == sent and len(sent) == count
        assert line.usage == count


def test_the_doctor_checks_the_named_clinics_own_channels(
    clinics: TwoClinics, capsys: pytest.CaptureFixture[str]
) -> None:
    clinics.line_b.usage_offset = 37  # B's LINE answers with B's own count
    assert main(["doctor", "--clinic", "b"]) == 0
    out = capsys.readouterr().out
    assert "37 of 200" in out
    assert str(clinics.folder_b / "tayori.toml") in out


def test_the_metrics_count_each_clinic_apart(clinics: TwoClinics) -> None:
    nudged_patients(clinics.a, count=3)
    nudged_patients(clinics.b, line_user_id=B_LINE_ID)
    client = create_app(clinics.a.settings, clinics.a).test_client()
    text = client.get("/metrics").text
    planned = {
        sample.labels["clinic"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "tayori_deliveries" and sample.labels["state"] == "planned"
    }
    assert planned == {"default": 3, "b": 1}


def test_a_clinic_whose_settings_break_leaves_the_others_served(
    clinics: TwoClinics, caplog: pytest.LogCaptureFixture
) -> None:
    nudged_patients(clinics.a)
    (clinics.folder_b / "tayori.toml").write_text("[clinic\n", encoding="utf-8")
    assert main(["tick", "--now", NUDGE_TIME.isoformat()]) == 0
    assert len(clinics.line_a.accepted) == 1
    assert "clinic b is not served" in caplog.text


def test_a_clinic_without_credentials_of_its_own_sends_to_previews(
    clinics: TwoClinics, tmp_path: Path
) -> None:
    folder = settings_only(tmp_path / "clinic-f")
    assert main(["clinic", "add", "f", "--config", str(folder)]) == 0
    f = Clinics(clinics.a, os.environ).find("f")
    assert f is not None
    assert clinics.a.settings.line_api is not None and clinics.a.settings.smtp is not None
    assert f.settings.line_api is None and f.settings.smtp is None
    assert f.settings.outbox_dir == clinics.a.settings.outbox_dir.parent / "clinics/f/outbox"


def test_a_clinic_env_cannot_borrow_the_installations_values(
    clinics: TwoClinics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", "the-installation's-password")
    with (clinics.folder_b / ".env").open("a", encoding="utf-8") as env:
        env.write("SMTP_PASSWORD=${SMTP_PASSWORD}\n")
    b = Clinics(clinics.a, os.environ).find("b")
    assert b is not None and b.settings.smtp is not None
    assert b.settings.smtp.password == "${SMTP_PASSWORD}"


def test_a_folder_serves_one_clinic_only(
    clinics: TwoClinics, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["clinic", "add", "b2", "--config", str(clinics.folder_b)]) == 1
    assert "clinic b's folder already" in capsys.readouterr().err


def test_a_valid_token_for_a_patient_gone_answers_in_its_clinics_name(
    clinics: TwoClinics,
) -> None:
    token = unsubscribe_token(SECRET_KEY, "b", "f" * 32, ConsentKind.NEWSLETTER)
    client = create_app(clinics.a.settings, clinics.a).test_client()
    answer = client.get(f"/unsubscribe/{token}")
    assert answer.status_code == 404
    assert B_NAME in answer.text

"""What the processes log, read as an operator's log collector reads it: every line of
every process, at DEBUG, in both formats. It never holds a patient's name, contact,
message or a secret; with LOG_FORMAT=json every line is one JSON object carrying
the facts of its event.

Every command runs as its own process (`python -m scheduler`), so what is read is
all a process wrote to stderr; the loopback LINE and SMTP servers live in this
process and are not part of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

import pytest
import sqlalchemy as sa

from scheduler.commands import main
from scheduler.core.link_codes import message_text
from scheduler.store.models import Patient
from tests.conftest import run_tayori
from tests.integration.channel_env import PUBLIC_URL, SECRET_KEY
from tests.integration.csv_files import appointments_csv, patient_row, patients_csv
from tests.integration.line_webhook import (
    CHANNEL_SECRET,
    follow,
    new_user_id,
    post,
    send,
    text_message,
    unfollow,
    webhook_body,
)
from tests.integration.web import web_process
from tests.integration.workers import wait_until
from tests.servers.line_api import LineApiServer
from tests.servers.smtp import SmtpServer

# The demo clinic (config/demo/) has six messages due now; the patients imported
# below visited three days before, so each is nudged now too.
NOW = "2026-11-25T10:30:00+09:00"
SMTP_LOGIN = ("clinic", "smtp-password-for-the-tests")
DEMO_LINE_ID = "U0123456789abcdef0123456789abcdef"  # D001 in config/demo/patients.csv
N1_LINE_ID = "U" + "a1" * 16
N2_EMAIL = "megumi.kato@example.jp"
UNKNOWN_TO_LINE = "U" + "c3" * 16
REFUSED_ADDRESS = "shigeru.yoshida@example.jp"
NEW_PATIENTS = (
    patient_row("N1", "小林 優子", "acute", "", N1_LINE_ID, "line"),
    patient_row("N2", "加藤 恵", "acute", N2_EMAIL, "", "email"),
    patient_row("N3", "吉田 茂", "acute", REFUSED_ADDRESS, UNKNOWN_TO_LINE, "line"),
    patient_row("N4", "松本 遥", "acute", "", "U" + "d4" * 16, "line"),
)
REFUSED_ROW = patient_row("N5", "井上 一郎", "chronic", "ichiro.inoue@example.jp", "", "email")
CHAT = "小林です。明日の予約を十五時に変更できますか"


@pytest.fixture
def servers() -> Iterator[tuple[LineApiServer, SmtpServer]]:
    with LineApiServer() as line_api, SmtpServer(login=SMTP_LOGIN) as smtp_server:
        yield line_api, smtp_server


def _channels(line_api: LineApiServer, smtp_server: SmtpServer) -> dict[str, str]:
    user, password = SMTP_LOGIN
    return {
        "LINE_CHANNEL_ACCESS_TOKEN": line_api.access_token,
        "LINE_API_BASE_URL": line_api.base_url,
        "LINE_CHANNEL_SECRET": CHANNEL_SECRET,
        "SMTP_HOST": smtp_server.host,
        "SMTP_PORT": str(smtp_server.port),
        "SMTP_SECURITY": "none",
        "SMTP_USERNAME": user,
        "SMTP_PASSWORD": password,
        "MAIL_FROM": "たより整体院 <info@clinic.example>",
        "TAYORI_PUBLIC_URL": PUBLIC_URL,
        "TAYORI_SECRET_KEY": SECRET_KEY,
    }


class Logs:
    """Runs commands as processes and keeps everything they wrote to stderr."""

    def __init__(self) -> None:
        self.written: list[str] = []

    def tayori(self, *args: str, env: dict[str, str], status: int = 0) -> str:
        """Run `tayori ARGS`; its stdout."""
        result = run_tayori(*args, env=env)
        self.written.append(result.stderr)
        assert result.returncode == status, result.stderr
        return result.stdout


def test_a_whole_run_at_debug_logs_no_name_contact_message_or_secret(
    local_env: dict[str, str],
    tmp_path: Path,
    servers: tuple[LineApiServer, SmtpServer],
) -> None:
    line_api, smtp_server = servers
    # In the text format only: the JSON format writes the same records with the same
    # facts (scheduler/logs.py `fields_of`), and the tests below check its shape.
    previews = {**local_env, "LOG_FORMAT": "text", "TAYORI_LOG_LEVEL": "DEBUG"}
    live = {**previews, **_channels(line_api, smtp_server)}
    logs = Logs()

    # The demo clinic's messages go to the preview channel.
    logs.tayori("demo", "load", "--now", NOW, env=previews)
    logs.tayori("tick", "--now", NOW, env=previews)
    # An import with a bad row imports nothing; the mended one does.
    refused = patients_csv(tmp_path, *NEW_PATIENTS, REFUSED_ROW, name="refused.csv")
    logs.tayori("import", "patients", str(refused), "--now", NOW, env=live, status=1)
    patients = patients_csv(tmp_path, *NEW_PATIENTS)
    logs.tayori("import", "patients", str(patients), "--now", NOW, env=live)
    visits = appointments_csv(tmp_path, *(f"N{n},2026-11-22T10:00,visited" for n in range(1, 5)))
    logs.tayori("import", "appointments", str(visits), "--now", NOW, env=live)
    # Their nudges go to the real servers: one LINE push fails for a while, one
    # patient is unknown to LINE and refused by the mail server.
    line_api.fail_next(500)
    line_api.mark_unknown(UNKNOWN_TO_LINE)
    smtp_server.refuse_recipient(REFUSED_ADDRESS)
    logs.tayori("tick", "--now", NOW, env=live)
    # The web process: an unsubscribe link clicked in a mail; LINE's webhook with a
    # follow, a chat message, a link code, 「配信停止」, a block, and a forged request.
    printed = logs.tayori("link-code", "D008", env=live)
    [code] = re.findall(r"^link code for D008 \(.*\): (\S+)$", printed, re.MULTILINE)
    linking_user, tokens = new_user_id(), [line_api.issue_reply_token() for _ in range(4)]
    [mail] = [r.message for r in smtp_server.received if N2_EMAIL in r.rcpt_tos]
    unsubscribe = urlsplit(mail["List-Unsubscribe"].strip("<>")).path
    with web_process(live, tmp_path / "web.log") as base:
        one_click = Request(base + unsubscribe, data=b"List-Unsubscribe=One-Click", method="POST")
        with urlopen(one_click, timeout=30) as answer:
            assert answer.status == 200
        assert post(base, webhook_body(unfollow(new_user_id())), "forged").status == 400
        send(
            base,
            follow(N1_LINE_ID, tokens[0]),
            text_message(N1_LINE_ID, CHAT, tokens[1]),
            text_message(linking_user, message_text(code), tokens[2]),
            text_message(N1_LINE_ID, "配信停止", tokens[3]),
            unfollow(DEMO_LINE_ID),
        )
        wait_until(lambda: line_api.replies_to(tokens[3]) != [], [], "the webhook's replies")
    logs.written.append((tmp_path / "web.log").read_text())
    logs.tayori("tick", "--now", NOW, env=live)  # and the events the web process left

    secrets = {line_api.access_token, CHANNEL_SECRET, SMTP_LOGIN[1], SECRET_KEY}
    private = (
        _identities(local_env["DATABASE_URL"])
        | _identities_in(REFUSED_ROW)
        | _messages(Path(local_env["TAYORI_OUTBOX_DIR"]), line_api, smtp_server)
        | {CHAT, code, linking_user, *tokens, *secrets}
    )
    written = "\n".join(logs.written)
    assert "delivery" in written and "LINE event" in written  # the run was logged
    assert sorted(p for p in private if p in written) == []


def _json_lines(written: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in written.splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    return lines


def test_with_log_format_json_a_cycle_logs_one_object_a_line_with_each_deliverys_facts(
    local_env: dict[str, str],
) -> None:
    assert main(["demo", "load", "--now", NOW]) == 0
    env = {**local_env, "LOG_FORMAT": "json", "TAYORI_LOG_LEVEL": "DEBUG"}
    result = run_tayori("tick", "--now", NOW, env=env)
    assert result.returncode == 0, result.stderr

    sent = [line for line in _json_lines(result.stderr) if line.get("state") == "sent"]
    assert len(sent) == 6  # what the demo clinic has due
    assert {(line["clinic"], line["outcome"]) for line in sent} == {("default", "sent")}
    assert all(line["delivery_id"] in line["message"] for line in sent)
    assert {line["channel"] for line in sent} == {"line", "email"}
    assert "cadence_nudge" in {line["reason"] for line in sent}


def test_with_log_format_json_the_web_process_logs_one_object_a_line_too(
    local_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**local_env, "LOG_FORMAT": "json", "TAYORI_LOG_LEVEL": "DEBUG"}
    with web_process(env, tmp_path / "web.log"):
        pass
    lines = _json_lines((tmp_path / "web.log").read_text())
    assert any(line["message"].startswith("Listening at") for line in lines)  # gunicorn's


def _identities(database_url: str) -> set[str]:
    """Every patient's name (and each part of it), email and LINE user id."""
    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(sa.select(Patient.name, Patient.email, Patient.line_user_id))
        found = {value for row in rows for value in row if value}
    engine.dispose()
    return found | {part for name in found for part in name.split()}


def _identities_in(row: str) -> set[str]:
    _, name, _, email, *_ = row.split(",")
    return {name, *name.split(), email}


def _messages(outbox: Path, line_api: LineApiServer, smtp_server: SmtpServer) -> set[str]:
    """Each line of every message sent or previewed, and of every reply, long enough to
    be the message's own (not a word any log could use), and the unsubscribe tokens."""
    texts: list[str] = []
    mails = [r.message for r in smtp_server.received]
    for path in outbox.iterdir():
        if path.suffix == ".json":
            texts += _push_texts(json.loads(path.read_text(encoding="utf-8"))["body"])
        elif path.suffix == ".eml":
            mails.append(_read_mail(path))
    texts += [text for body in line_api.accepted.values() for text in _push_texts(body)]
    texts += [text for reply in line_api.replies for text in reply.texts]
    for mail in mails:
        plain = mail.get_body(preferencelist=("plain",))
        assert plain is not None
        texts += [plain.get_content(), str(mail["Subject"])]
        texts += re.findall(r"/unsubscribe/([^>\s]+)", str(mail["List-Unsubscribe"]))
    assert texts, "nothing was sent"
    return {line.strip() for text in texts for line in text.splitlines() if len(line.strip()) > 12}


def _push_texts(body: dict[str, Any]) -> list[str]:
    return [m["text"] for m in body["messages"] if "text" in m]


def _read_mail(path: Path) -> EmailMessage:
    mail = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(mail, EmailMessage)
    return mail

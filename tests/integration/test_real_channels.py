"""The worker's cycle with real channels: LINE pushes reach the loopback LINE API,
mail reaches aiosmtpd, and what they answer changes what Tayori does next."""

from __future__ import annotations

from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler.commands import main
from scheduler.core.domain import ChannelName, DeliveryState, Reason
from scheduler.core.unsubscribe import read_unsubscribe_token
from scheduler.outbox.report import status
from scheduler.runtime import Runtime
from scheduler.store.models import Delivery, Patient
from scheduler.worker import tick
from tests.integration.channel_env import (
    PUBLIC_URL,
    SECRET_KEY,
    install_channel_env,
    open_channel_runtime,
)
from tests.integration.clinic import LINE_ID
from tests.integration.dispatching import NUDGE_TIME, nudged_patients, the_nudge
from tests.servers.line_api import LineApiServer, line_api_fixture
from tests.servers.smtp import SmtpServer, smtp_server_fixture

EMAIL = "hanako@example.jp"

line_api = line_api_fixture()
smtp_server = smtp_server_fixture()


@pytest.fixture
def channel_env(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    line_api: LineApiServer,
    smtp_server: SmtpServer,
) -> dict[str, str]:
    return install_channel_env(database_url, tmp_path, monkeypatch, line_api, smtp_server)


@pytest.fixture
def live(channel_env: dict[str, str]) -> Iterator[Runtime]:
    """The wired application with LINE and SMTP pointed at the loopback servers."""
    runtime = open_channel_runtime(channel_env)
    yield runtime
    runtime.close()


def _patient_mail(smtp_server: SmtpServer) -> list[EmailMessage]:
    return [r.message for r in smtp_server.received if EMAIL in r.rcpt_tos]


def test_line_nudge_is_pushed_with_its_delivery_id_as_retry_key(
    live: Runtime, line_api: LineApiServer
) -> None:
    nudged_patients(live)
    tick(live, NUDGE_TIME)
    nudge = the_nudge(live)
    assert nudge.state is DeliveryState.SENT
    assert list(line_api.accepted) == [nudge.id]
    assert line_api.accepted[nudge.id]["to"] == LINE_ID
    assert line_api.schema_errors == []


def test_email_nudge_carries_a_signed_one_click_unsubscribe_link(
    live: Runtime, smtp_server: SmtpServer
) -> None:
    nudged_patients(live, line_user_id=None, email=EMAIL)
    tick(live, NUDGE_TIME)
    [mail] = _patient_mail(smtp_server)
    link = mail["List-Unsubscribe"].strip("<>")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    with live.sessions() as session:
        patient = session.scalars(select(Patient)).one()
    token = link.rsplit("/", 1)[1]
    assert read_unsubscribe_token(SECRET_KEY, token, "x") == (
        "default",
        patient.public_id,
        "reminders",
    )
    assert link == f"{PUBLIC_URL}/unsubscribe/{token}"
    text = mail.get_body(preferencelist=("plain",))
    assert text is not None
    footer = text.get_content()
    # The link sits beside the other ways to stop, which stay for those who prefer them.
    assert link in footer
    assert "ご返信" in footer and "「配信停止」" in footer


def test_unknown_line_user_is_marked_and_mailed_instead(
    live: Runtime, line_api: LineApiServer, smtp_server: SmtpServer
) -> None:
    line_api.mark_unknown(LINE_ID)
    nudged_patients(live, email=EMAIL)
    tick(live, NUDGE_TIME)
    assert line_api.accepted == {}
    assert len(_patient_mail(smtp_server)) == 1
    assert the_nudge(live).channel is ChannelName.EMAIL
    with live.sessions() as session:
        patient = session.scalars(select(Patient)).one()
    assert patient.line_unusable_reason is not None


def test_line_quota_is_read_from_line_in_the_first_cycle(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    smtp_server: SmtpServer,
) -> None:
    with LineApiServer(monthly_limit=5000, usage_offset=1234) as server:
        env = install_channel_env(database_url, tmp_path, monkeypatch, server, smtp_server)
        runtime = open_channel_runtime(env)
        tick(runtime, NUDGE_TIME)
        with runtime.sessions() as session:
            quota = status(session, NUDGE_TIME, runtime.settings).line_quota
        runtime.close()
    assert (quota.limit, quota.used, quota.read_at) == (5000, 1234, NUDGE_TIME)


def test_nearly_used_line_quota_sends_the_rest_by_email(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    smtp_server: SmtpServer,
) -> None:
    with LineApiServer(monthly_limit=200, usage_offset=199, enforce_monthly_limit=True) as server:
        env = install_channel_env(database_url, tmp_path, monkeypatch, server, smtp_server)
        runtime = open_channel_runtime(env)
        nudged_patients(runtime, count=3, email=EMAIL)
        tick(runtime, NUDGE_TIME)
        nudges = [d for d in _deliveries(runtime) if d.reason is Reason.CADENCE_NUDGE]
        runtime.close()
    assert {d.state for d in nudges} == {DeliveryState.SENT}
    assert sorted(d.channel.value for d in nudges if d.channel) == ["email", "email", "line"]
    assert len(server.accepted) == 1


def _deliveries(runtime: Runtime) -> list[Delivery]:
    with runtime.sessions() as session:
        return list(session.scalars(select(Delivery)))


def test_refused_token_holds_line_and_status_says_why(
    channel_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    line_api: LineApiServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LINE_CHANNEL_ACCESS_TOKEN", "an-expired-token")
    runtime = open_channel_runtime(channel_env)
    nudged_patients(runtime)
    runtime.close()
    assert main(["tick", "--now", NUDGE_TIME.isoformat()]) == 0
    capsys.readouterr()
    assert main(["status", "--now", NUDGE_TIME.isoformat()]) == 0
    printed = capsys.readouterr().out
    assert "line held since" in printed
    assert "LINE_CHANNEL_ACCESS_TOKEN" in printed
    assert "an-expired-token" not in printed
    assert line_api.accepted == {}


def test_send_test_pushes_one_sample_to_the_patient_now(
    live: Runtime, line_api: LineApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    nudged_patients(live)
    now = NUDGE_TIME.isoformat()
    assert main(["send-test", "--channel", "line", "--to", "P1", "--now", now]) == 0
    assert "cadence_nudge to P1 by line: sent" in capsys.readouterr().out
    [body] = line_api.accepted.values()
    assert "山田 花子様" in body["messages"][0]["text"]


def test_send_test_to_an_unknown_patient_says_so(
    live: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["send-test", "--channel", "email", "--to", "NOBODY"]) == 1
    assert "no patient with external_id 'NOBODY'" in capsys.readouterr().err


def test_retry_sends_a_failed_delivery_again_under_its_id(
    live: Runtime, line_api: LineApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    nudged_patients(live)
    line_api.fail_next(400, message="The request body has 1 error(s)")
    tick(live, NUDGE_TIME)
    failed = the_nudge(live)
    assert failed.state is DeliveryState.FAILED

    assert main(["retry", failed.id, "--now", NUDGE_TIME.isoformat()]) == 0
    tick(live, NUDGE_TIME)
    assert the_nudge(live).state is DeliveryState.SENT
    assert list(line_api.accepted) == [failed.id]


def test_retry_refuses_a_delivery_that_has_not_failed(
    live: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    nudged_patients(live)
    nudge = the_nudge(live)
    assert main(["retry", nudge.id]) == 1
    assert "only failed or skipped deliveries" in capsys.readouterr().err


def test_send_test_refuses_a_patient_without_reminder_consent(
    live: Runtime, line_api: LineApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    nudged_patients(live, reminders=False)
    assert main(["send-test", "--channel", "line", "--to", "P1"]) == 1
    assert "has not agreed to receive reminders" in capsys.readouterr().err
    assert line_api.accepted == {}

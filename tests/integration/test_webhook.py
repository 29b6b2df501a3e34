"""The LINE webhook, end to end: a real `tayori serve` on a real database (SQLite and
PostgreSQL), LINE's requests built and signed as LINE sends them (checked against
its description of webhook bodies), and its replies received by the loopback LINE
API, which holds them to the reply contract.

One web process serves the whole module, per database; each test has its own
patients and LINE users, so none sees another's. The web process runs on the real
clock: link codes are issued at the real moment (and 15 days before it, to expire).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import sqlalchemy as sa
from sqlalchemy import func, select

from scheduler.core.domain import ChannelName, ConsentKind, DeliveryState, Phase, Reason
from scheduler.core.line_chat import Say
from scheduler.core.link_codes import LOCK_AFTER, message_text, new_code
from scheduler.core.routing import NO_USABLE_CONTACT
from scheduler.messages.replies import TEXTS
from scheduler.outbox.planner import plan
from scheduler.runtime import Runtime, open_runtime
from scheduler.settings import load_settings
from scheduler.store import inbox
from scheduler.store.db import transaction
from scheduler.store.linking import issue_code
from scheduler.store.models import Base, ConsentChange, Delivery, Patient, WebhookEvent
from scheduler.web.app import create_app
from scheduler.worker import tick
from tests.conftest import ROOT
from tests.integration.clinic import add_patient, visited
from tests.integration.dispatching import (
    NUDGE_TIME,
    PLANNED_AT,
    RecordingTransport,
    dispatcher_with,
)
from tests.integration.line_webhook import (
    CHANNEL_SECRET,
    Answer,
    follow,
    new_event_id,
    new_user_id,
    post,
    send,
    signature,
    sticker_message,
    text_message,
    unfollow,
    webhook_body,
)
from tests.integration.web import web_process
from tests.servers.line_api import LineApiServer

CLINIC = "たより整体院"  # config/tayori.toml
WAIT_SECONDS = 15


# --- the web process, one per database ------------------------------------------------


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def module_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated, empty database for this module's web process."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("webhook-db") / "tayori.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    url: str = request.getfixturevalue("postgres_schema_url")
    _truncate_all(url)
    yield url
    _truncate_all(url)


def _truncate_all(url: str) -> None:
    engine = sa.create_engine(url)
    # The clinics stay: the first one is the installation's own.
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables if t.name != "clinics")
    with engine.begin() as connection:
        connection.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(scope="module")
def line_api() -> Iterator[LineApiServer]:
    with LineApiServer() as server:
        yield server


@dataclass
class Web:
    """The running web process, the database it uses, and the loopback LINE API."""

    base_url: str
    runtime: Runtime
    line: LineApiServer
    log: Path
    # Everything a log must never show: LINE user ids, texts, reply tokens.
    private: set[str] = field(default_factory=set)

    def send(self, *events: dict[str, Any]) -> Answer:
        for event in events:
            self.private.add(event["source"]["userId"])
            if "replyToken" in event:
                self.private.add(event["replyToken"])
            text = event.get("message", {}).get("text")
            if text:
                self.private.add(text)
        return send(self.base_url, *events)

    def token(self) -> str:
        return self.line.issue_reply_token()

    def patient(self, **facts: Any) -> Patient:
        """A patient of this test alone (no phase: the planner leaves them be)."""
        facts = {"phase": None, "line_user_id": None, "reminders": False, **facts}
        with transaction(self.runtime.sessions) as session:
            return add_patient(session, _now(), f"W-{uuid4().hex[:12]}", **facts)

    def code(self, patient: Patient, issued_at: datetime | None = None) -> str:
        with transaction(self.runtime.sessions) as session:
            return issue_code(session, patient, issued_at or _now()).code

    def reread(self, patient: Patient) -> Patient:
        with self.runtime.sessions() as session:
            return session.get_one(Patient, patient.id)

    def consent(self, patient: Patient, kind: ConsentKind) -> list[tuple[bool, str]]:
        """The history of one kind of consent: (granted, source) by change."""
        with self.runtime.sessions() as session:
            changes = session.scalars(
                select(ConsentChange)
                .where(ConsentChange.patient_id == patient.id, ConsentChange.kind == kind)
                .order_by(ConsentChange.id)
            )
            return [(c.granted, c.source) for c in changes]

    def counts(self) -> dict[str, int]:
        """The rows of every table."""
        with self.runtime.engine.connect() as connection:
            return {
                table.name: connection.scalar(select(func.count()).select_from(table)) or 0
                for table in Base.metadata.sorted_tables
            }

    def processed(self, *events: dict[str, Any]) -> None:
        """Wait until the web process has processed these events."""
        ids = [event["webhookEventId"] for event in events]

        def done() -> bool:
            with self.runtime.sessions() as session:
                return session.scalar(
                    select(func.count()).where(
                        WebhookEvent.id.in_(ids), WebhookEvent.processed_at.is_not(None)
                    )
                ) == len(ids)

        _wait(done, f"events {ids} processed")

    def reply(self, token: str) -> str:
        """The text of the reply to this token, once it arrives."""
        _wait(lambda: bool(self.line.replies_to(token)), "the reply")
        [reply] = self.line.replies_to(token)
        [text] = reply.texts
        return text

    def no_reply(self, token: str) -> bool:
        time.sleep(0.3)  # a reply follows its event's commit at once, if there is one
        return self.line.replies_to(token) == []


@pytest.fixture(scope="module")
def web(
    module_database: str, line_api: LineApiServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Web]:
    folder = tmp_path_factory.mktemp("webhook")
    env = {
        "DATABASE_URL": module_database,
        "TAYORI_CONFIG": str(ROOT / "config" / "tayori.toml"),
        "TAYORI_MESSAGES_DIR": str(ROOT / "messages"),
        "TAYORI_OUTBOX_DIR": str(folder / "outbox"),
        "TAYORI_LOG_LEVEL": "DEBUG",  # the strictest test of what the log says
        "LINE_CHANNEL_ACCESS_TOKEN": line_api.access_token,
        "LINE_API_BASE_URL": line_api.base_url,
        "LINE_CHANNEL_SECRET": CHANNEL_SECRET,
    }
    runtime = open_runtime(load_settings(env))
    try:
        with web_process(env, folder / "web.log") as base_url:
            yield Web(base_url, runtime, line_api, folder / "web.log")
    finally:
        runtime.close()


def _now() -> datetime:
    return datetime.now(UTC)


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"waited {WAIT_SECONDS} s for {what}"
        time.sleep(0.02)


# --- follow ---------------------------------------------------------------------------


def test_a_new_friend_is_greeted_with_how_to_link(web: Web) -> None:
    token = web.token()
    event = follow(new_user_id(), token)
    assert web.send(event) == Answer(200, "OK")
    greeting = web.reply(token)
    assert greeting.startswith(f"{CLINIC}です。友だち追加ありがとうございます。")
    assert "連携コード" in greeting and "QRコード" in greeting
    web.processed(event)


# --- linking --------------------------------------------------------------------------


def test_a_link_code_links_the_patients_line_and_says_so(web: Web) -> None:
    patient = web.patient()
    user, token, code = new_user_id(), web.token(), web.code(patient)
    before = _now()
    assert web.send(text_message(user, message_text(code), token)).status == 200
    assert web.reply(token) == TEXTS[Say.LINKED].format(clinic=CLINIC)
    linked = web.reread(patient)
    assert linked.line_user_id == user
    assert linked.line_linked_at is not None and linked.line_linked_at >= before
    # Sending the code from LINE asks for the clinic's messages there.
    assert web.consent(patient, ConsentKind.REMINDERS) == [(False, "import"), (True, "line")]


def test_a_code_typed_by_hand_links_too(web: Web) -> None:
    patient, user, token = web.patient(), new_user_id(), web.token()
    code = web.code(patient)
    typed = f"　{code[:4].lower()}{code[4:]}".translate(_FULL_WIDTH)  # full-width, lower case
    web.send(text_message(user, typed, token))
    assert web.reply(token) == TEXTS[Say.LINKED].format(clinic=CLINIC)
    assert web.reread(patient).line_user_id == user


_FULL_WIDTH = {c: c + 0xFEE0 for c in range(0x21, 0x7F)}


@pytest.mark.parametrize(
    ("issued_days_ago", "say"),
    [pytest.param(15, Say.EXPIRED_CODE, id="expired"), pytest.param(0, Say.LINKED, id="fresh")],
)
def test_a_code_is_valid_for_fourteen_days(web: Web, issued_days_ago: int, say: Say) -> None:
    patient, user, token = web.patient(), new_user_id(), web.token()
    code = web.code(patient, _now() - timedelta(days=issued_days_ago))
    web.send(text_message(user, message_text(code), token))
    assert web.reply(token) == TEXTS[say].format(clinic=CLINIC)
    assert (web.reread(patient).line_user_id == user) is (say is Say.LINKED)


def test_a_used_code_links_nobody_else_and_its_owner_is_told_it_is_done(web: Web) -> None:
    patient, owner, stranger = web.patient(), new_user_id(), new_user_id()
    code = message_text(web.code(patient))
    web.send(text_message(owner, code, first := web.token()))
    web.reply(first)
    web.send(text_message(stranger, code, second := web.token()))
    assert web.reply(second) == TEXTS[Say.USED_CODE].format(clinic=CLINIC)
    web.send(text_message(owner, code, third := web.token()))
    assert web.reply(third) == TEXTS[Say.ALREADY_LINKED]
    assert web.reread(patient).line_user_id == owner


def test_a_line_linked_to_one_patient_cannot_take_another(web: Web) -> None:
    user = new_user_id()
    mother = web.patient(line_user_id=user)
    daughter = web.patient()
    token = web.token()
    web.send(text_message(user, message_text(web.code(daughter)), token))
    assert web.reply(token) == TEXTS[Say.TAKEN].format(clinic=CLINIC)
    assert web.reread(daughter).line_user_id is None
    assert web.reread(mother).line_user_id == user


def test_five_wrong_codes_within_an_hour_lock_linking(web: Web) -> None:
    patient, user = web.patient(), new_user_id()
    said = []
    for _ in range(LOCK_AFTER):
        token = web.token()
        web.send(text_message(user, message_text(new_code()), token))
        said.append(web.reply(token))
    assert said == [TEXTS[Say.WRONG_CODE]] * (LOCK_AFTER - 1) + [TEXTS[Say.LOCKED]]
    # Even the right code waits for the hour to pass.
    token = web.token()
    web.send(text_message(user, message_text(web.code(patient)), token))
    assert web.reply(token) == TEXTS[Say.LOCKED]
    assert web.reread(patient).line_user_id is None


# --- 配信停止 / 配信再開 ------------------------------------------------------------------


def test_stop_and_resume_change_the_newsletter_consent_and_are_confirmed(web: Web) -> None:
    user = new_user_id()
    patient = web.patient(line_user_id=user, newsletter=True)
    web.send(text_message(user, "配信停止", stop := web.token()))
    assert web.reply(stop) == TEXTS[Say.STOPPED]
    # Spaces around it, full-width or not, change nothing.
    web.send(text_message(user, "　配信再開 ", resume := web.token()))
    assert web.reply(resume) == TEXTS[Say.RESUMED]
    assert web.consent(patient, ConsentKind.NEWSLETTER) == [
        (True, "import"),
        (False, "line"),
        (True, "line"),
    ]


def test_stop_from_a_line_not_linked_is_told_so_politely(web: Web) -> None:
    before = web.counts()
    token = web.token()
    event = text_message(new_user_id(), "配信停止", token)
    web.send(event)
    assert web.reply(token) == TEXTS[Say.NOT_LINKED].format(clinic=CLINIC)
    web.processed(event)
    assert web.counts() == {**before, "webhook_events": before["webhook_events"] + 1}


def test_other_messages_get_no_automatic_answer(web: Web) -> None:
    user = new_user_id()
    patient = web.patient(line_user_id=user, newsletter=True)
    hello, sticker = web.token(), web.token()
    question = text_message(user, "明日の予約を変更できますか", hello)
    events = (question, sticker_message(user, sticker))
    web.send(*events)
    web.processed(*events)
    assert web.no_reply(hello) and web.no_reply(sticker)
    assert web.consent(patient, ConsentKind.NEWSLETTER) == [(True, "import")]


# --- unfollow and follow again ----------------------------------------------------------


def test_unfollow_marks_the_line_blocked_and_unblocking_restores_it(web: Web) -> None:
    user = new_user_id()
    patient = web.patient(line_user_id=user)
    blocked = unfollow(user)
    web.send(blocked)
    web.processed(blocked)
    reason = web.reread(patient).line_unusable_reason
    assert reason is not None and reason.startswith(inbox.BLOCKED)
    token = web.token()
    web.send(follow(user, token, unblocked=True))
    assert "これまでどおり" in web.reply(token)  # linked: no need to link again
    restored = web.reread(patient)
    assert restored.line_unusable_reason is None and restored.line_user_id == user


def test_after_an_unfollow_planned_line_messages_go_by_email_or_are_skipped(web: Web) -> None:
    """The dispatcher chooses the channel again when a message goes: nothing else
    has to change when LINE is blocked."""
    with_email, without = new_user_id(), new_user_id()
    runtime = web.runtime
    with transaction(runtime.sessions) as session:
        for user, email in ((with_email, "hanako@example.jp"), (without, None)):
            external = f"W-{uuid4().hex[:12]}"
            add_patient(session, PLANNED_AT, external, Phase.ACUTE, line_user_id=user, email=email)
            visited(session, PLANNED_AT, days_ago=1, external_id=external)
        plan(session, PLANNED_AT, runtime.settings.rules)
    events = (unfollow(with_email), unfollow(without))
    web.send(*events)
    web.processed(*events)
    transport = RecordingTransport()
    dispatcher_with(runtime, transport).dispatch_due(NUDGE_TIME)
    assert [(m.channel, m.to) for m in transport.received] == [
        (ChannelName.EMAIL, "hanako@example.jp")
    ]
    with runtime.sessions() as session:
        nudges = session.execute(
            select(Patient.line_user_id, Delivery.state, Delivery.last_error)
            .join(Patient, Patient.id == Delivery.patient_id)
            .where(Delivery.reason == Reason.CADENCE_NUDGE)
        ).all()
    assert sorted(nudges) == sorted(
        [
            (with_email, DeliveryState.SENT, None),
            (without, DeliveryState.SKIPPED, NO_USABLE_CONTACT),
        ]
    )


# --- once by webhookEventId -------------------------------------------------------------


def test_a_redelivered_event_has_no_second_effect(web: Web) -> None:
    user, token = new_user_id(), web.token()
    wrong = text_message(user, message_text(new_code()), token)  # each one counts
    web.send(wrong)
    assert web.reply(token) == TEXTS[Say.WRONG_CODE]
    web.processed(wrong)
    before, requests = web.counts(), web.line.requests
    again = {**wrong, "deliveryContext": {"isRedelivery": True}}
    assert web.send(again).status == 200
    assert web.send(wrong).status == 200  # the very same request, twice
    time.sleep(0.3)
    assert web.counts() == before
    assert web.line.requests == requests and len(web.line.replies_to(token)) == 1


def test_a_redelivered_event_never_received_before_is_processed(web: Web) -> None:
    patient = web.patient()
    user, token = new_user_id(), web.token()
    event = text_message(user, message_text(web.code(patient)), token, redelivery=True)
    web.send(event)
    assert web.reply(token) == TEXTS[Say.LINKED].format(clinic=CLINIC)
    assert web.reread(patient).line_user_id == user


def test_several_events_in_one_body_are_each_processed(web: Web) -> None:
    user = new_user_id()
    patient = web.patient(line_user_id=user, newsletter=True)
    events = (
        follow(user, greeting := web.token()),
        text_message(user, "配信停止", stop := web.token()),
    )
    web.send(*events)
    assert "これまでどおり" in web.reply(greeting)
    assert web.reply(stop) == TEXTS[Say.STOPPED]
    assert web.consent(patient, ConsentKind.NEWSLETTER)[-1] == (False, "line")


def test_a_chunked_body_within_the_limit_is_read_whole(web: Web) -> None:
    token = web.token()
    body = webhook_body(follow(new_user_id(), token))
    assert post(web.base_url, body, signature(body), chunked=True) == Answer(200, "OK")
    web.reply(token)


def test_lines_verify_button_an_empty_list_of_events_is_answered_200(web: Web) -> None:
    before = web.counts()
    assert send(web.base_url) == Answer(200, "OK")
    assert web.counts() == before


# --- refused requests -------------------------------------------------------------------


def _forged(body: bytes) -> tuple[bytes, str | None]:
    return body, signature(body, secret="not-the-channel-secret")


def _unsigned(body: bytes) -> tuple[bytes, str | None]:
    return body, None


def _signature_of_another_body(body: bytes) -> tuple[bytes, str | None]:
    return body, signature(body + b" ")


def _tampered(body: bytes) -> tuple[bytes, str | None]:
    return body.replace("配信停止".encode(), "配信再開".encode()), signature(body)


def _oversized(body: bytes) -> tuple[bytes, str | None]:
    big = body[:-1] + b" " * (1024 * 1024) + body[-1:]  # still LINE's JSON
    return big, signature(big)


def _not_json(body: bytes) -> tuple[bytes, str | None]:
    broken = body[: len(body) // 2]
    return broken, signature(broken)


def _not_lines_shape(body: bytes) -> tuple[bytes, str | None]:
    other = b'{"destination": "U0", "events": [{"type": "follow"}]}'
    return other, signature(other)


def _not_utf8(body: bytes) -> tuple[bytes, str | None]:
    latin = body.replace("配信停止".encode(), b"\xff\xfe")
    return latin, signature(latin)


@pytest.mark.parametrize(
    ("request_of", "status", "chunked"),
    [
        pytest.param(_forged, 400, False, id="forged-signature"),
        pytest.param(_unsigned, 400, False, id="missing-signature"),
        pytest.param(_signature_of_another_body, 400, False, id="signature-of-another-body"),
        pytest.param(_tampered, 400, False, id="tampered-body"),
        pytest.param(_oversized, 413, False, id="over-1-MB"),
        pytest.param(_oversized, 413, True, id="over-1-MB-chunked"),
        pytest.param(_not_json, 400, False, id="malformed-json"),
        pytest.param(_not_lines_shape, 400, False, id="json-not-lines-shape"),
        pytest.param(_not_utf8, 400, False, id="not-utf-8"),
    ],
)
def test_a_refused_request_changes_nothing(
    web: Web,
    request_of: Callable[[bytes], tuple[bytes, str | None]],
    status: int,
    chunked: bool,
) -> None:
    user = new_user_id()
    patient = web.patient(line_user_id=user, newsletter=True)
    token = web.token()
    body, signed = request_of(webhook_body(text_message(user, "配信停止", token)))
    before, requests = web.counts(), web.line.requests
    assert post(web.base_url, body, signed, chunked=chunked).status == status
    assert web.no_reply(token)
    assert web.counts() == before and web.line.requests == requests
    assert web.consent(patient, ConsentKind.NEWSLETTER) == [(True, "import")]


def test_without_a_channel_secret_the_webhook_answers_503_and_does_nothing(web: Web) -> None:
    settings = replace(web.runtime.settings, line_channel_secret="")
    body = webhook_body(follow(new_user_id(), web.token()))
    before = web.counts()
    client = create_app(settings, replace(web.runtime, settings=settings)).test_client()
    with client.post(
        "/line/webhook", data=body, headers={"X-Line-Signature": signature(body)}
    ) as answer:
        assert answer.status_code == 503
    assert web.counts() == before


# --- without LINE's access token: replies as previews -----------------------------------


def test_without_an_access_token_replies_are_written_to_the_outbox(
    web: Web, tmp_path: Path
) -> None:
    settings = replace(web.runtime.settings, line_api=None, outbox_dir=tmp_path / "outbox")
    runtime = open_runtime(settings)
    try:
        event = follow(new_user_id(), token := web.token())
        body = webhook_body(event)
        client = create_app(settings, runtime).test_client()
        # The events are processed once the response is closed (after the answer).
        with client.post(
            "/line/webhook", data=body, headers={"X-Line-Signature": signature(body)}
        ) as answer:
            assert answer.status_code == 200
    finally:
        runtime.close()
    [preview] = (tmp_path / "outbox").glob("reply-*.json")
    reply = preview.read_text(encoding="utf-8")
    assert token in reply and "友だち追加ありがとうございます" in reply
    assert web.no_reply(token)  # nothing went to LINE


# --- what the log says -------------------------------------------------------------------


def test_the_log_names_no_line_user_text_or_reply_token(web: Web) -> None:
    """Last in this module: it reads the log of all the requests above."""
    log = web.log.read_text(encoding="utf-8")
    assert web.private, "the tests above sent nothing"
    assert re.search(r"LINE event [0-9A-Z]{26}: replied", log)
    leaked = [value for value in web.private if value.strip() and value.strip() in log]
    assert leaked == []


# --- what is left in the inbox ----------------------------------------------------------


def test_the_workers_cycle_processes_events_left_in_the_inbox(runtime: Runtime) -> None:
    """A web process that stopped after storing an event: the next cycle acts on it
    (and writes its reply as a preview: no LINE credentials here)."""
    now = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    user = new_user_id()
    with transaction(runtime.sessions) as session:
        patient = add_patient(session, now, "P1", None, line_user_id=user, newsletter=True)
        inbox.store(session, [text_message(user, "配信停止", "a-reply-token")], now)
    result = tick(runtime, now)
    assert result.events == 1
    with runtime.sessions() as session:
        [event] = session.scalars(select(WebhookEvent))
        assert event.processed_at == now and event.attempts == 1
        granted = session.scalars(
            select(ConsentChange.granted)
            .where(
                ConsentChange.patient_id == patient.id,
                ConsentChange.kind == ConsentKind.NEWSLETTER,
            )
            .order_by(ConsentChange.id)
        ).all()
    assert granted == [True, False]
    [preview] = runtime.settings.outbox_dir.glob("reply-*.json")
    assert "配信を停止しました" in preview.read_text(encoding="utf-8")
    assert tick(runtime, now).events == 0  # processed once


def test_an_event_that_fails_is_tried_each_cycle_until_the_cap_with_its_error(
    runtime: Runtime,
) -> None:
    now = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    event_id = new_event_id()
    with transaction(runtime.sessions) as session:
        # What no code of ours can read: its processing fails every time.
        session.add(
            WebhookEvent(
                id=event_id, event_type="message", body="{not json", received_at=now, attempts=0
            )
        )
    for cycle in range(1, inbox.MAX_ATTEMPTS + 2):
        processed = runtime.events.process_pending(now + timedelta(minutes=cycle))
        assert processed == 0
    with runtime.sessions() as session:
        event = session.get_one(WebhookEvent, (runtime.settings.clinic_id, event_id))
    assert event.processed_at is None
    assert event.attempts == inbox.MAX_ATTEMPTS  # then left alone, with why
    assert event.last_error == "JSONDecodeError"

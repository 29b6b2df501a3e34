"""The desk's Upcoming page: the next 30 days of messages by day (the planner's dry
run, as `tayori plan` lists it), filtered by reason and channel; holding a message
(the real worker then leaves it unsent, through replanning, until it is released)
and sending one to oneself — through the Flask app on a real database (SQLite and
PostgreSQL), the worker's own `tick` with the preview channel, the CLI, and a real
`tayori serve` driven by a real Chromium."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from email import message_from_bytes
from email.header import decode_header, make_header
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from scheduler.clock import FixedClock
from scheduler.commands import main
from scheduler.core.domain import ChannelName, DeliveryState, Phase, Reason
from scheduler.core.unsubscribe import read_unsubscribe_token
from scheduler.outbox.planner import PlannedMessage, dry_run, plan
from scheduler.runtime import Runtime, open_runtime
from scheduler.settings import load_settings
from scheduler.store.db import transaction
from scheduler.store.models import Delivery, DeskAudit, HeldMessage, Patient
from scheduler.web.app import create_app
from scheduler.worker import tick
from tests.integration.browser import PHONE, fits_the_width
from tests.integration.clinic import add_appointment, add_patient, visited
from tests.integration.desk import (
    JST,
    NOW,
    STAFF,
    Site,
    add_staff_account,
    csrf_of,
    emptied,
    fits_the_phone,
    sign_in_with_browser,
    signed_in,
    text_of,
)
from tests.servers.smtp import SmtpServer, smtp_server_fixture

TEN_AM = datetime(2026, 11, 25, 10, 0, tzinfo=JST)  # when today's nudges are due
KEY_FIELD = re.compile(r'name="key" value="([^"]+)"')


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def client(desk_runtime: Runtime, clock: FixedClock) -> FlaskClient:
    client = create_app(desk_runtime.settings, desk_runtime, clock).test_client()
    signed_in(client)
    return client


def a_clinic(runtime: Runtime, now: datetime) -> None:
    """Two nudges due at 10:00 on `now`'s day (LINE for LINE1, email for MAIL1), and a
    reminder by LINE the evening before REMIND's appointment in ten days (planned
    into the outbox only when it is due)."""
    with transaction(runtime.sessions) as session:
        add_patient(session, now - timedelta(days=10), "LINE1", Phase.ACUTE, name="山田 花子")
        visited(session, now, days_ago=3, external_id="LINE1")
        add_patient(
            session,
            now - timedelta(days=10),
            "MAIL1",
            Phase.REHAB,
            name="鈴木 次郎",
            line_user_id=None,
            email="jiro@example.jp",
            preferred=ChannelName.EMAIL,
        )
        visited(session, now, days_ago=6, external_id="MAIL1")
        add_patient(session, now - timedelta(days=10), "REMIND", Phase.ACUTE, name="佐藤 三郎")
        visited(session, now, days_ago=1, external_id="REMIND")
        add_appointment(session, now, now + timedelta(days=10), external_id="REMIND")


def coming(runtime: Runtime, now: datetime) -> list[PlannedMessage]:
    settings = runtime.settings
    with runtime.sessions() as session:
        return dry_run(session, now, now + timedelta(days=30), settings.rules, settings)


def the_key(runtime: Runtime, now: datetime, patient: str, reason: Reason) -> str:
    [message] = [
        m for m in coming(runtime, now) if m.patient == patient and m.reason == reason.value
    ]
    return message.key


def post(client: FlaskClient, action: str, key: str, **filters: str) -> str:
    """Press a button of the page; the page it returns to, as text."""
    answer = client.post(
        f"/upcoming/{action}",
        data={"key": key, "csrf_token": csrf_of(client, "/upcoming"), **filters},
    )
    assert answer.status_code == 302
    return text_of(client.get(answer.location).get_data(as_text=True))


# --- the list ------------------------------------------------------------------------


def test_the_page_lists_the_same_messages_as_the_dry_run_of_30_days(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    a_clinic(desk_runtime, NOW)
    expected = coming(desk_runtime, NOW)
    html = client.get("/upcoming").get_data(as_text=True)
    assert sorted(KEY_FIELD.findall(html)) == sorted(2 * [m.key for m in expected])
    page = text_of(html)
    assert f"{len(expected)} 件" in page
    assert len(expected) >= 3  # the two nudges and the reminder, at least


def test_the_messages_are_grouped_by_day_with_their_labels(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    a_clinic(desk_runtime, NOW)
    html = client.get("/upcoming").get_data(as_text=True)
    today = _day(html, "11月25日（水）")
    assert "10:00 次回来院のおすすめ（LINE） 患者番号 LINE1・ 山田 花子 様" in today
    assert "10:00 次回来院のおすすめ（メール） 患者番号 MAIL1・ 鈴木 次郎 様" in today
    evening_before = _day(html, "12月4日（金）")
    assert "18:00 予約前日のお知らせ（LINE） 患者番号 REMIND・ 佐藤 三郎 様" in evening_before


def _day(html: str, label: str) -> str:
    """The text of one day's section of the page."""
    return text_of(html.split(f'<section aria-label="{label}">')[1].split("</section>")[0])


def test_filtering_by_reason_shows_only_that_reason(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    a_clinic(desk_runtime, NOW)
    page = text_of(client.get("/upcoming?reason=appointment_reminder").get_data(as_text=True))
    assert "患者番号 REMIND" in page
    assert "患者番号 LINE1" not in page and "患者番号 MAIL1" not in page


def test_filtering_by_channel_shows_only_that_channel(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    a_clinic(desk_runtime, NOW)
    page = text_of(client.get("/upcoming?channel=email").get_data(as_text=True))
    assert "患者番号 MAIL1" in page
    assert "患者番号 LINE1" not in page and "患者番号 REMIND" not in page


def test_filtering_by_day_shows_only_that_day(client: FlaskClient, desk_runtime: Runtime) -> None:
    a_clinic(desk_runtime, NOW)
    page = text_of(client.get("/upcoming?day=2026-12-04").get_data(as_text=True))
    assert "18:00 予約前日のお知らせ（LINE） 患者番号 REMIND" in page
    assert "患者番号 LINE1" not in page and "患者番号 MAIL1" not in page


def test_past_200_messages_the_page_shows_the_first_and_asks_for_a_filter(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    with transaction(desk_runtime.sessions) as session:
        for n in range(201):
            add_patient(session, NOW - timedelta(days=10), f"N{n:03d}", Phase.ACUTE)
            visited(session, NOW, days_ago=3, external_id=f"N{n:03d}")
    page = text_of(client.get("/upcoming").get_data(as_text=True))
    assert "日時の早い順に 200 件を表示しています。" in page
    assert page.count("保留する") == 200


def test_a_filter_that_matches_nothing_says_so(client: FlaskClient, desk_runtime: Runtime) -> None:
    a_clinic(desk_runtime, NOW)
    page = text_of(client.get("/upcoming?reason=no_show_follow_up").get_data(as_text=True))
    assert "この条件の予定はありません。" in page


# --- holding and releasing -------------------------------------------------------------


def test_hold_a_delivery_and_see_the_worker_skip_it(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    a_clinic(desk_runtime, NOW)
    held = the_key(desk_runtime, NOW, "LINE1", Reason.CADENCE_NUDGE)
    other = the_key(desk_runtime, NOW, "MAIL1", Reason.CADENCE_NUDGE)
    assert "保留しました。" in post(client, "hold", held)
    tick(desk_runtime, TEN_AM)
    tick(desk_runtime, TEN_AM + timedelta(minutes=5))  # planned again, claimed again
    assert _state(desk_runtime, held) is DeliveryState.PLANNED
    assert _state(desk_runtime, other) is DeliveryState.SENT
    assert _files_for(desk_runtime, held) == []
    assert "保留を解除しました。" in post(client, "release", held)
    tick(desk_runtime, TEN_AM + timedelta(minutes=10))
    assert _state(desk_runtime, held) is DeliveryState.SENT
    assert len(_files_for(desk_runtime, held)) == 1


def test_a_hold_made_before_the_outbox_has_the_message_sticks_when_it_is_planned(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    a_clinic(desk_runtime, NOW)
    key = the_key(desk_runtime, NOW, "REMIND", Reason.APPOINTMENT_REMINDER)
    assert _state(desk_runtime, key) is None  # not in the outbox yet
    post(client, "hold", key)
    evening_before = datetime.combine((NOW + timedelta(days=9)).date(), time(18, 0), tzinfo=JST)
    tick(desk_runtime, evening_before - timedelta(hours=1))
    tick(desk_runtime, evening_before + timedelta(minutes=1))
    assert _state(desk_runtime, key) is DeliveryState.PLANNED
    assert _files_for(desk_runtime, key) == []


def test_a_held_message_is_shown_as_held_and_can_be_released(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    a_clinic(desk_runtime, NOW)
    key = the_key(desk_runtime, NOW, "LINE1", Reason.CADENCE_NUDGE)
    page = post(client, "hold", key)
    assert "（うち保留中 1 件）" in page
    assert "次回来院のおすすめ（LINE） 保留中 患者番号 LINE1" in page
    assert [m.held for m in coming(desk_runtime, NOW) if m.key == key] == [True]
    page = post(client, "release", key)
    assert "保留中" not in page


def test_holding_and_releasing_are_recorded_with_who(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    a_clinic(desk_runtime, NOW)
    key = the_key(desk_runtime, NOW, "LINE1", Reason.CADENCE_NUDGE)
    post(client, "hold", key)
    post(client, "release", key)
    with desk_runtime.sessions() as session:
        records = session.scalars(select(DeskAudit).order_by(DeskAudit.id)).all()
    assert [(r.action, r.detail) for r in records] == [
        ("hold", f"message {key} held"),
        ("release", f"message {key} released"),
    ]


def test_a_message_already_sent_cannot_be_held(client: FlaskClient, desk_runtime: Runtime) -> None:
    a_clinic(desk_runtime, NOW)
    key = the_key(desk_runtime, NOW, "LINE1", Reason.CADENCE_NUDGE)
    tick(desk_runtime, TEN_AM)
    page = post(client, "hold", key)
    assert "送信中か送信済みのため、保留できませんでした。" in page
    with desk_runtime.sessions() as session:
        assert session.scalars(select(HeldMessage)).all() == []


def test_a_key_of_no_patient_of_the_clinic_holds_nothing(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    page = post(client, "hold", "cadence_nudge:e1:999")
    assert "このメッセージは見つかりませんでした。" in page
    with desk_runtime.sessions() as session:
        assert session.scalars(select(HeldMessage)).all() == []


def test_a_hold_without_the_csrf_token_is_refused(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    a_clinic(desk_runtime, NOW)
    key = the_key(desk_runtime, NOW, "LINE1", Reason.CADENCE_NUDGE)
    assert client.post("/upcoming/hold", data={"key": key}).status_code == 400
    with desk_runtime.sessions() as session:
        assert session.scalars(select(HeldMessage)).all() == []


def test_the_buttons_keep_the_filters(client: FlaskClient, desk_runtime: Runtime) -> None:
    a_clinic(desk_runtime, NOW)
    key = the_key(desk_runtime, NOW, "MAIL1", Reason.CADENCE_NUDGE)
    answer = client.post(
        "/upcoming/hold",
        data={"key": key, "channel": "email", "csrf_token": csrf_of(client, "/upcoming")},
    )
    assert answer.location == "/upcoming?channel=email"


def test_the_status_and_the_today_page_do_not_count_a_held_message_as_going_out(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    a_clinic(desk_runtime, NOW)
    with transaction(desk_runtime.sessions) as session:
        plan(session, NOW, desk_runtime.settings.rules, desk_runtime.settings)
    post(client, "hold", the_key(desk_runtime, NOW, "LINE1", Reason.CADENCE_NUDGE))
    today = text_of(client.get("/").get_data(as_text=True)).split("明日の送信予定")[0]
    assert "次回来院のおすすめ 0 1 1" in today  # LINE, email, total


# --- sending a message to oneself --------------------------------------------------------


def test_send_to_me_mails_the_patients_message_to_the_staff_and_not_the_patient(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    a_clinic(desk_runtime, NOW)
    key = the_key(desk_runtime, NOW, "MAIL1", Reason.CADENCE_NUDGE)
    page = post(client, "send-to-me", key)
    assert "確認用のメールはプレビュー用のフォルダに保存しました。" in page
    [mail_file] = list(desk_runtime.settings.outbox_dir.glob("copy-*.eml"))
    mail = message_from_bytes(mail_file.read_bytes())
    assert mail["To"] == STAFF
    assert str(make_header(decode_header(mail["Subject"]))).startswith("【確認用】")
    assert "jiro@example.jp" not in mail_file.read_bytes().decode("utf-8", "replace")
    with desk_runtime.sessions() as session:
        patient = session.scalars(select(Patient).where(Patient.external_id == "MAIL1")).one()
    token = str(mail["List-Unsubscribe"]).strip("<>").rsplit("/", 1)[1]
    settings = desk_runtime.settings
    _, stops, _ = read_unsubscribe_token(settings.secret_key, token, settings.clinic_slug)
    assert stops != patient.public_id  # its unsubscribe link stops no one
    with desk_runtime.sessions() as session:
        assert session.scalars(select(Delivery)).all() == []  # no delivery to anyone
        [record] = session.scalars(select(DeskAudit).where(DeskAudit.action == "send_to_me"))
    assert record.detail.startswith(f"message {key} sent as copy-")


def test_send_to_me_of_a_line_message_mails_its_line_text(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    a_clinic(desk_runtime, NOW)
    post(client, "send-to-me", the_key(desk_runtime, NOW, "LINE1", Reason.CADENCE_NUDGE))
    [mail_file] = list(desk_runtime.settings.outbox_dir.glob("copy-*.eml"))
    mail = message_from_bytes(mail_file.read_bytes(), policy=default)
    assert mail["To"] == STAFF
    subject = str(make_header(decode_header(mail["Subject"])))
    assert subject == "【確認用】LINEでお送りする内容"
    body = mail.get_body(("plain",)).get_content()  # type: ignore[attr-defined]
    assert body.startswith("山田 花子様、")  # the LINE text, written for her
    assert "U0123456789abcdef" not in mail_file.read_text("utf-8")  # her LINE id goes nowhere
    with desk_runtime.sessions() as session:
        assert session.scalars(select(Delivery)).all() == []


smtp_server = smtp_server_fixture()


@pytest.fixture
def client_with_smtp(
    desk_env: dict[str, str], smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FlaskClient, Runtime]]:
    """The desk of a clinic that sends email by SMTP (aiosmtpd on loopback), signed in."""
    smtp = {
        "SMTP_HOST": smtp_server.host,
        "SMTP_PORT": str(smtp_server.port),
        "SMTP_SECURITY": "none",
        "MAIL_FROM": "たより整体院 <info@clinic.example>",
    }
    for name, value in smtp.items():
        monkeypatch.setenv(name, value)
    runtime = open_runtime(load_settings({**desk_env, **smtp}))
    with transaction(runtime.sessions) as session:
        add_staff_account(session, NOW)
    client = create_app(runtime.settings, runtime, FixedClock(NOW)).test_client()
    signed_in(client)
    yield client, runtime
    runtime.close()


def test_send_to_me_goes_by_smtp_to_the_staff_address_only(
    client_with_smtp: tuple[FlaskClient, Runtime], smtp_server: SmtpServer
) -> None:
    client, runtime = client_with_smtp
    a_clinic(runtime, NOW)
    page = post(client, "send-to-me", the_key(runtime, NOW, "MAIL1", Reason.CADENCE_NUDGE))
    assert f"{STAFF} 宛てに確認用のメールをお送りしました。" in page
    [mail] = smtp_server.received
    assert mail.rcpt_tos == (STAFF,)
    assert "鈴木 次郎" in mail.message.get_body(("plain",)).get_content()  # written for him
    assert "jiro@example.jp" not in mail.data.decode("utf-8", "replace")


# --- the command line --------------------------------------------------------------------


def test_tayori_hold_and_unhold_by_key(
    desk_runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    a_clinic(desk_runtime, NOW)
    key = the_key(desk_runtime, NOW, "LINE1", Reason.CADENCE_NUDGE)
    assert main(["hold", key, "--now", NOW.isoformat()]) == 0
    assert main(["plan", "--now", NOW.isoformat(), "--keys"]) == 0
    [line] = [row for row in capsys.readouterr().out.splitlines() if row.endswith(key)]
    assert "LINE1" in line and "cadence_nudge (held)" in line
    tick(desk_runtime, TEN_AM)
    assert _state(desk_runtime, key) is DeliveryState.PLANNED
    assert main(["unhold", key]) == 0
    tick(desk_runtime, TEN_AM + timedelta(minutes=1))
    assert _state(desk_runtime, key) is DeliveryState.SENT


def test_tayori_status_counts_held_messages_apart_from_those_going_out(
    desk_runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    a_clinic(desk_runtime, NOW)
    with transaction(desk_runtime.sessions) as session:
        plan(session, NOW, desk_runtime.settings.rules, desk_runtime.settings)
    delivery = _delivery_id(desk_runtime, the_key(desk_runtime, NOW, "LINE1", Reason.CADENCE_NUDGE))
    assert main(["hold", delivery, "--now", NOW.isoformat()]) == 0
    assert main(["status", "--now", NOW.isoformat()]) == 0
    out = capsys.readouterr().out
    assert "1 of the planned held by hand: not sent until `tayori unhold`" in out
    assert delivery not in out.split("next due:")[1].split("failures:")[0]


def _delivery_id(runtime: Runtime, key: str) -> str:
    with runtime.sessions() as session:
        return session.scalars(select(Delivery.id).where(Delivery.idempotency_key == key)).one()


def _state(runtime: Runtime, key: str) -> DeliveryState | None:
    with runtime.sessions() as session:
        return session.scalar(select(Delivery.state).where(Delivery.idempotency_key == key))


def _files_for(runtime: Runtime, key: str) -> list[Path]:
    with runtime.sessions() as session:
        delivery_id = session.scalar(select(Delivery.id).where(Delivery.idempotency_key == key))
    return list(runtime.settings.outbox_dir.glob(f"{delivery_id}.*")) if delivery_id else []


# --- in a real browser, against a real `tayori serve` ------------------------------------


def a_clinic_today(runtime: Runtime) -> datetime:
    """The site's clinic emptied, then `a_clinic` as of the real day at 09:30 (the web
    process runs on the real clock; the nudges are due at 10:00 of that day, or at
    the next opening once it has passed)."""
    now = datetime.now(UTC)
    emptied(runtime, now)
    morning = datetime.combine(now.astimezone(JST).date(), time(9, 30), tzinfo=JST)
    a_clinic(runtime, morning)
    return morning


def test_the_upcoming_page_on_a_phone(site: Site, browser: Any, screenshots: Path) -> None:
    a_clinic_today(site.runtime)
    page = browser.new_page(viewport=PHONE)
    try:
        sign_in_with_browser(page, site.base)
        page.get_by_role("link", name="予定").click()
        page.wait_for_load_state()
        assert page.inner_text("h1") == "これからの送信予定"
        body = page.inner_text("body")
        assert "患者番号 LINE1・山田 花子 様" in body and "患者番号 REMIND" in body
        assert fits_the_phone(page) and fits_the_width(page)
        page.screenshot(path=str(screenshots / "desk-upcoming-phone.png"), full_page=True)
    finally:
        page.close()


def test_the_upcoming_page_on_a_desktop(site: Site, browser: Any, screenshots: Path) -> None:
    a_clinic_today(site.runtime)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        sign_in_with_browser(page, site.base)
        page.goto(f"{site.base}/upcoming")
        assert "患者番号 MAIL1・鈴木 次郎 様" in page.inner_text("body")
        assert fits_the_phone(page)
        page.screenshot(path=str(screenshots / "desk-upcoming-desktop.png"), full_page=True)
    finally:
        page.close()


def test_filtering_in_the_browser(site: Site, browser: Any, screenshots: Path) -> None:
    a_clinic_today(site.runtime)
    page = browser.new_page(viewport=PHONE)
    try:
        sign_in_with_browser(page, site.base)
        page.goto(f"{site.base}/upcoming")
        page.get_by_label("送り方").select_option(label="メール")
        page.get_by_role("button", name="絞り込む").click()
        page.wait_for_load_state()
        body = page.inner_text("body")
        assert "患者番号 MAIL1" in body
        assert "患者番号 LINE1" not in body and "患者番号 REMIND" not in body
        assert page.get_by_label("送り方").input_value() == "email"
        assert fits_the_phone(page)
        page.screenshot(path=str(screenshots / "desk-upcoming-filtered-phone.png"), full_page=True)
    finally:
        page.close()


def test_hold_and_release_in_the_browser(site: Site, browser: Any, screenshots: Path) -> None:
    a_clinic_today(site.runtime)
    key = the_key(site.runtime, datetime.now(UTC), "LINE1", Reason.CADENCE_NUDGE)
    page = browser.new_page(viewport=PHONE)
    try:
        sign_in_with_browser(page, site.base)
        page.goto(f"{site.base}/upcoming")
        page.get_by_role(
            "button", name=re.compile(r"^保留する（.*患者番号 LINE1・次回来院のおすすめ）")
        ).click()
        page.wait_for_load_state()
        assert "保留しました。" in page.inner_text("body")
        assert "保留中" in page.inner_text("li.held")
        assert fits_the_phone(page)
        page.screenshot(path=str(screenshots / "desk-upcoming-held-phone.png"), full_page=True)
        with site.runtime.sessions() as session:
            assert session.scalar(select(HeldMessage.idempotency_key)) == key
        page.get_by_role(
            "button", name=re.compile(r"^保留を解除（.*患者番号 LINE1・次回来院のおすすめ）")
        ).click()
        page.wait_for_load_state()
        assert "保留を解除しました。" in page.inner_text("body")
        assert page.locator("li.held").count() == 0
    finally:
        page.close()
    with site.runtime.sessions() as session:
        assert session.scalars(select(HeldMessage)).all() == []
        actions = session.scalars(
            select(DeskAudit.action).where(DeskAudit.action.in_(("hold", "release")))
        ).all()
    assert actions == ["hold", "release"]

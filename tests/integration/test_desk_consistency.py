"""What the desk's pages share (issue 16's review): every named patient links to their
page, the error pages are the desk's own in Japanese, a held message and a paused
campaign read the same on every page, and an old date names its year — through the
Flask app against a real database (SQLite and PostgreSQL), and a real `tayori serve`
in a real Chromium for the error page on a phone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select, text

from scheduler.core.domain import DeliveryState, Phase
from scheduler.outbox import transitions
from scheduler.outbox.campaign_control import pause
from scheduler.outbox.planner import plan
from scheduler.runtime import Runtime
from scheduler.store.db import transaction
from scheduler.store.models import Delivery, Patient
from tests.integration.browser import PHONE, fits_the_width
from tests.integration.clinic import add_patient, visited
from tests.integration.desk import (
    NOW,
    Site,
    emptied,
    fits_the_phone,
    sign_in_with_browser,
    signed_in,
    text_of,
)
from tests.integration.test_desk import known_outbox


def _id_of(runtime: Runtime, number: str) -> int:
    with runtime.sessions() as session:
        return session.scalars(select(Patient.id).where(Patient.external_id == number)).one()


def _section(html: str, heading: str) -> str:
    """The HTML of the page's section whose heading is `heading`."""
    return html.split(f">{heading}</h2>")[1].split("</section>")[0]


def a_patient_with_a_coming_message(runtime: Runtime, now: datetime = NOW) -> int:
    """A maintenance patient who visited 4 days before `now`, planned at `now`; their id."""
    with transaction(runtime.sessions) as session:
        patient = add_patient(session, now - timedelta(days=30), "P001", Phase.MAINTENANCE)
        visited(session, now, days_ago=4, external_id="P001")
        patient_id = patient.id
    with transaction(runtime.sessions) as session:
        plan(session, now, runtime.settings.rules, runtime.settings)
    return patient_id


def hold_the_first(runtime: Runtime, patient_id: int, now: datetime) -> None:
    """Hold the patient's first coming message, as Upcoming's 「保留する」 does."""
    with transaction(runtime.sessions) as session:
        [key, *_] = session.scalars(
            select(Delivery.idempotency_key)
            .where(Delivery.patient_id == patient_id, Delivery.state == DeliveryState.PLANNED)
            .order_by(Delivery.send_after)
        ).all()
        assert transitions.hold(session, key, now, None)


# --- every named patient links to their page --------------------------------------


def test_todays_failures_name_the_patient_with_a_link_to_their_page(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    known_outbox(desk_runtime)
    signed_in(client)
    failures = _section(client.get("/").get_data(as_text=True), "送れなかったメッセージ")
    link = f'<a href="/patients/{_id_of(desk_runtime, "FAIL")}">山田 花子 様</a>'
    assert link in failures


def test_the_lapsed_and_long_acute_patients_link_to_their_pages(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    known_outbox(desk_runtime)
    signed_in(client)
    html = client.get("/").get_data(as_text=True)
    lapsed = f'<a href="/patients/{_id_of(desk_runtime, "LAPSED")}">山田 花子 様</a>'
    acute = f'<a href="/patients/{_id_of(desk_runtime, "LONG")}">佐藤 一郎 様</a>'
    assert lapsed in _section(html, "ご来院が途絶えた方")
    assert acute in _section(html, "急性期が長い方")


def test_the_upcoming_messages_link_each_patient_to_their_page(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    patient_id = a_patient_with_a_coming_message(desk_runtime)
    signed_in(client)
    html = client.get("/upcoming").get_data(as_text=True)
    assert f'<a href="/patients/{patient_id}">山田 花子 様</a>' in html


# --- the desk's error pages -----------------------------------------------------------


def test_an_unknown_patient_is_a_japanese_page_with_the_navigation(
    client: FlaskClient,
) -> None:
    signed_in(client)
    answer = client.get("/patients/999999")
    assert answer.status_code == 404
    page = text_of(answer.get_data(as_text=True))
    assert "ページが見つかりません" in page
    assert "今日 予定 患者 メッセージ" in page  # the navigation
    assert "Not Found" not in page


def test_an_address_no_page_has_is_the_desks_not_found_page(client: FlaskClient) -> None:
    signed_in(client)
    answer = client.get("/no/such/page")
    assert answer.status_code == 404
    assert "ページが見つかりません" in text_of(answer.get_data(as_text=True))
    assert "今日のページへ戻る" in answer.get_data(as_text=True)


def test_signed_out_the_not_found_page_offers_the_sign_in_not_the_navigation(
    client: FlaskClient,
) -> None:
    answer = client.get("/no/such/page")
    assert answer.status_code == 404
    page = text_of(answer.get_data(as_text=True))
    assert "ページが見つかりません" in page and "ログインのページへ" in page
    assert "ログアウト" not in page


def test_a_wrong_method_on_a_desk_page_is_a_japanese_page(client: FlaskClient) -> None:
    signed_in(client)
    answer = client.get("/deliveries/some-id/retry")  # a button's address, opened
    assert answer.status_code == 405
    page = text_of(answer.get_data(as_text=True))
    assert "この操作はできません" in page
    assert "Method Not Allowed" not in page


def test_a_wrong_method_outside_the_desk_is_left_to_its_page(client: FlaskClient) -> None:
    answer = client.delete("/unsubscribe/some-token")
    assert answer.status_code == 405
    assert "この操作はできません" not in answer.get_data(as_text=True)


def test_another_pages_own_not_found_is_left_as_it_is(client: FlaskClient) -> None:
    answer = client.get("/unsubscribe/no-such-token")
    assert answer.status_code == 404
    assert "今日のページへ戻る" not in answer.get_data(as_text=True)


def test_a_fault_is_a_japanese_page_that_names_nothing_of_it(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    signed_in(client)
    # A real fault: the Messages page reads a table that is gone for the moment.
    with transaction(desk_runtime.sessions) as session:
        session.execute(text("ALTER TABLE paused_campaigns RENAME TO paused_campaigns_away"))
    try:
        answer = client.get("/messages")
    finally:
        with transaction(desk_runtime.sessions) as session:
            session.execute(text("ALTER TABLE paused_campaigns_away RENAME TO paused_campaigns"))
    assert answer.status_code == 500
    page = text_of(answer.get_data(as_text=True))
    assert "うまく表示できませんでした" in page
    assert "paused_campaigns" not in page and "Error" not in page
    assert "今日 予定 患者" in page


def test_the_not_found_page_fits_a_phone(site: Site, browser: Any, screenshots: Path) -> None:
    emptied(site.runtime, datetime.now(UTC))
    page = browser.new_page(viewport=PHONE)
    try:
        sign_in_with_browser(page, site.base)
        answer = page.goto(f"{site.base}/patients/999999")
        assert answer is not None and answer.status == 404
        assert page.inner_text("h1") == "ページが見つかりません"
        assert fits_the_phone(page) and fits_the_width(page)
        page.screenshot(path=str(screenshots / "desk-not-found-phone.png"), full_page=True)
        page.get_by_role("link", name="今日のページへ戻る").click()
        page.wait_for_load_state()
        assert "の状況" in page.inner_text("h1")
    finally:
        page.close()


# --- the same words on every page -------------------------------------------------


def test_a_held_message_shows_as_held_on_the_patients_page(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    patient_id = a_patient_with_a_coming_message(desk_runtime)
    hold_the_first(desk_runtime, patient_id, NOW)
    signed_in(client)
    html = client.get(f"/patients/{patient_id}").get_data(as_text=True)
    coming = _section(html, "今後の送信予定")
    assert coming.count('<span class="badge held">保留中</span>') == 1
    assert coming.count("送信予定") == coming.count("<li") - 1  # the others wait as planned


def test_a_held_message_on_the_patients_page_on_a_phone(
    site: Site, browser: Any, screenshots: Path
) -> None:
    now = datetime.now(UTC)
    emptied(site.runtime, now)
    patient_id = a_patient_with_a_coming_message(site.runtime, now)
    hold_the_first(site.runtime, patient_id, now)
    page = browser.new_page(viewport=PHONE)
    try:
        sign_in_with_browser(page, site.base)
        page.goto(f"{site.base}/patients/{patient_id}")
        coming = page.locator("section[aria-labelledby=upcoming]")
        assert coming.locator(".badge.held").inner_text() == "保留中"
        assert fits_the_phone(page) and fits_the_width(page)
        coming.screenshot(path=str(screenshots / "desk-patient-held-phone.png"))
    finally:
        page.close()


def test_a_campaign_paused_in_the_desk_shows_as_stopped_on_the_messages_page(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    with transaction(desk_runtime.sessions) as session:
        pause(session, desk_runtime.settings, "year_end", None, NOW)
    signed_in(client)
    page = text_of(client.get("/messages").get_data(as_text=True))
    year_end = page.split("季節のお便り：year_end")[1].split("季節のお便り：")[0]
    assert "このキャンペーンは停止中です。" in year_end
    season_change = page.split("季節のお便り：season_change")[1].split("季節のお便り：")[0]
    assert "停止中" not in season_change


def test_a_history_line_of_an_earlier_year_names_its_year(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    with transaction(desk_runtime.sessions) as session:
        patient = add_patient(session, NOW - timedelta(days=400), "OLD", Phase.MAINTENANCE)
        patient_id = patient.id
    signed_in(client)
    page = text_of(client.get(f"/patients/{patient_id}").get_data(as_text=True))
    assert "2025年10月21日（火）" in page  # 400 days before 2026-11-25

"""The practitioner's desk: its accounts, the sign-in and its rules, and the Today
page — through the CLI as a user runs it, the Flask app against a real database
(SQLite and PostgreSQL) for the HTTP rules, and a real `tayori serve` driven by a
real Chromium for the page."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from werkzeug.test import TestResponse

from scheduler.clock import FixedClock
from scheduler.core.domain import ChannelName, DeliveryState, Phase
from scheduler.messages.digest import build_digest
from scheduler.outbox import transitions
from scheduler.outbox.planner import plan
from scheduler.runtime import Runtime
from scheduler.store.db import transaction
from scheduler.store.desk import FAILURE_WINDOW, FAILURES_ALLOWED, add_user
from scheduler.store.models import Delivery, DeskAudit, DeskUser
from scheduler.web.app import create_app
from tests.conftest import run_tayori
from tests.integration.browser import PHONE, fits_the_width
from tests.integration.clinic import add_appointment, add_patient, visited
from tests.integration.desk import (
    JST,
    NOW,
    PASSWORD,
    STAFF,
    Site,
    claim_due,
    csrf_of,
    emptied,
    fits_the_phone,
    second_clinic,
    sign_in,
    sign_in_with_browser,
    signed_in,
    text_of,
)

# --- accounts: `tayori user add` --------------------------------------------------


def test_user_add_reads_the_password_from_standard_input_and_keeps_only_a_hash(
    clinic_env: dict[str, str], runtime: Runtime
) -> None:
    done = run_tayori(
        "user", "add", "Reception@Clinic.example", env=clinic_env, stdin=PASSWORD + "\n"
    )
    assert done.returncode == 0, done.stderr
    assert "desk account reception@clinic.example added" in done.stdout
    with runtime.sessions() as session:
        [user] = session.scalars(select(DeskUser)).all()
    assert user.email == STAFF
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash


def test_user_add_refuses_a_short_password_and_adds_nothing(
    clinic_env: dict[str, str], runtime: Runtime
) -> None:
    done = run_tayori("user", "add", STAFF, env=clinic_env, stdin="short pass\n")
    assert done.returncode == 1
    assert "the password is too short: at least 12 characters" in done.stderr
    with runtime.sessions() as session:
        assert session.scalars(select(DeskUser)).all() == []


def test_user_add_refuses_a_second_account_with_the_same_email(
    clinic_env: dict[str, str],
) -> None:
    assert run_tayori("user", "add", STAFF, env=clinic_env, stdin=PASSWORD).returncode == 0
    again = run_tayori("user", "add", STAFF.upper(), env=clinic_env, stdin=PASSWORD)
    assert again.returncode == 1
    assert f"this clinic has an account for {STAFF} already" in again.stderr


# --- the HTTP rules: the Flask app against a real database --------------------------

YESTERDAY_10AM = datetime(2026, 11, 24, 10, 0, tzinfo=JST)
# What the LINE channel records of a user it cannot reach, and what staff read of it.
REFUSED_BY_LINE = (
    "LINE 400: Failed to send messages (this LINE user id cannot be reached from this channel)"
)
REFUSED_BY_LINE_SAID = "このLINEの方には届きません（ブロックや連携の解除など）"


def test_signing_in_opens_the_today_page(client: FlaskClient) -> None:
    signed_in = sign_in(client)
    assert (signed_in.status_code, signed_in.location) == (302, "/")
    today = client.get("/")
    assert today.status_code == 200
    assert "11月25日（水）の状況" in today.get_data(as_text=True)


def test_a_wrong_password_is_refused_and_opens_nothing(client: FlaskClient) -> None:
    refused = sign_in(client, password="not the password at all")
    assert refused.status_code == 200
    assert "メールアドレスまたはパスワードが正しくありません。" in refused.get_data(as_text=True)
    assert client.get("/").location == "/login"


def test_an_unknown_email_gets_the_same_answer_as_a_wrong_password(client: FlaskClient) -> None:
    answer = client.post(
        "/login",
        data={
            "email": "nobody@clinic.example",
            "password": PASSWORD,
            "csrf_token": csrf_of(client),
        },
    )
    assert "メールアドレスまたはパスワードが正しくありません。" in answer.get_data(as_text=True)


def test_after_five_failures_even_the_right_password_is_refused_for_a_while(
    client: FlaskClient,
) -> None:
    for _ in range(FAILURES_ALLOWED):
        assert sign_in(client, password="a wrong password!").status_code == 200
    locked = sign_in(client)
    assert locked.status_code == 429
    assert locked.headers["Retry-After"] == "900"
    assert "ログインの失敗が続いたため、しばらくログインできません。" in locked.get_data(
        as_text=True
    )
    assert client.get("/").location == "/login"


def test_the_failures_of_one_address_do_not_lock_out_another(client: FlaskClient) -> None:
    for _ in range(FAILURES_ALLOWED):
        sign_in(client, password="a wrong password!", address="192.0.2.66")
    assert sign_in(client, address="192.0.2.10").status_code == 302


def test_the_lock_ends_when_the_failures_leave_the_window(
    client: FlaskClient, clock: FixedClock
) -> None:
    for _ in range(FAILURES_ALLOWED):
        sign_in(client, password="a wrong password!")
    clock.set(NOW + FAILURE_WINDOW + timedelta(seconds=1))
    assert sign_in(client).status_code == 302


def test_the_failures_are_counted_in_the_database_by_every_web_process(
    desk_runtime: Runtime, clock: FixedClock
) -> None:
    one, other = (
        create_app(desk_runtime.settings, desk_runtime, clock).test_client() for _ in "ab"
    )
    for _ in range(FAILURES_ALLOWED):
        sign_in(one, password="a wrong password!")
    assert sign_in(other).status_code == 429


def test_a_post_without_the_csrf_token_is_refused(client: FlaskClient) -> None:
    sign_in(client)
    answer = client.post("/logout")
    assert answer.status_code == 400
    assert client.get("/").status_code == 200  # still signed in: the POST did nothing


def test_a_sign_in_without_the_csrf_token_is_refused(client: FlaskClient) -> None:
    client.get("/login")
    answer = client.post("/login", data={"email": STAFF, "password": PASSWORD})
    assert answer.status_code == 400
    assert client.get("/").location == "/login"


def test_a_csrf_token_of_another_session_is_refused(
    client: FlaskClient, desk_runtime: Runtime, clock: FixedClock
) -> None:
    stranger = create_app(desk_runtime.settings, desk_runtime, clock).test_client()
    client.get("/login")
    answer = client.post(
        "/login", data={"email": STAFF, "password": PASSWORD, "csrf_token": csrf_of(stranger)}
    )
    assert answer.status_code == 400


def _desk_urls(app: Flask, slug: str) -> list[tuple[str, str]]:
    """Every desk page and form (but the sign-in form), as (method, URL): pages added
    later are checked without changing the test."""
    urls = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("desk.") or rule.endpoint == "desk.login":
            continue
        values = {
            arg: "x"
            for arg in rule.arguments
            if arg != "clinic" or "clinic" not in (rule.defaults or {})
        }
        if "clinic" in values:
            values["clinic"] = slug
        path = rule.build(values, append_unknown=False)
        assert path is not None
        for method in sorted((rule.methods or set()) & {"GET", "POST"}):
            urls.append((method, path[1]))
    return urls


def test_every_desk_page_redirects_to_login_when_signed_out(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    slug = desk_runtime.settings.clinic_slug
    token = csrf_of(client)  # a session with a CSRF token, signed in as nobody
    urls = _desk_urls(client.application, slug)
    assert ("GET", "/") in urls and ("POST", "/logout") in urls
    for method, url in urls:
        answer = client.open(url, method=method, data={"csrf_token": token})
        login = f"/desk/{slug}/login" if url.startswith("/desk/") else "/login"
        assert (answer.status_code, answer.location) == (302, login), (method, url)


def test_signing_out_ends_the_session(client: FlaskClient) -> None:
    sign_in(client)
    answer = client.post("/logout", data={"csrf_token": csrf_of(client, "/")})
    assert answer.location == "/login"
    assert client.get("/").location == "/login"


def test_a_disabled_account_is_signed_out_at_its_next_request(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    sign_in(client)
    with transaction(desk_runtime.sessions) as session:
        session.execute(update(DeskUser).values(disabled_at=NOW))
    assert client.get("/").location == "/login"


def test_the_session_cookie_is_httponly_samesite_and_secure(client: FlaskClient) -> None:
    cookie = sign_in(client).headers["Set-Cookie"]
    assert cookie.startswith("tayori_desk=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie


def test_the_log_names_no_email_and_no_password(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sign_in(client, password="a wrong password!")
    sign_in(client)
    assert "signed in" in caplog.text
    assert STAFF not in caplog.text and "wrong password!" not in caplog.text
    assert PASSWORD not in caplog.text


def test_without_a_secret_key_the_desk_says_what_is_missing(
    clinic_env: dict[str, str], runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    client = create_app(runtime.settings, runtime, FixedClock(NOW)).test_client()
    answer = client.get("/login")
    assert answer.status_code == 503
    assert "TAYORI_SECRET_KEY" in answer.get_data(as_text=True)
    assert "the desk is off: TAYORI_SECRET_KEY is not set" in caplog.text


# --- the Today page -------------------------------------------------------------------


def known_outbox(runtime: Runtime) -> str:
    """A clinic whose Today page at NOW is known: a LINE and an email nudge today, a
    LINE reminder tomorrow, a nudge that failed yesterday, a patient who lapsed today
    and one acute for 43 days. The failed delivery's id."""
    settings = runtime.settings
    with transaction(runtime.sessions) as session:
        add_patient(session, NOW - timedelta(days=10), "NUDGE", Phase.ACUTE)
        visited(session, NOW, days_ago=3, external_id="NUDGE")
        add_patient(
            session,
            NOW - timedelta(days=10),
            "MAIL",
            Phase.REHAB,
            line_user_id=None,
            email="mail@example.jp",
            preferred=ChannelName.EMAIL,
        )
        visited(session, NOW, days_ago=6, external_id="MAIL")
        add_patient(session, NOW - timedelta(days=10), "REMIND", Phase.ACUTE)
        visited(session, NOW, days_ago=1, external_id="REMIND")
        add_appointment(session, NOW, NOW + timedelta(days=2), external_id="REMIND")
        add_patient(session, NOW - timedelta(days=10), "FAIL", Phase.ACUTE)
        visited(session, YESTERDAY_10AM, days_ago=3, external_id="FAIL")
        add_patient(session, NOW - timedelta(days=70), "LAPSED", Phase.MAINTENANCE, reminders=False)
        visited(session, NOW, days_ago=61, external_id="LAPSED")
        add_patient(session, NOW - timedelta(days=43), "LONG", Phase.ACUTE, name="佐藤 一郎")
        visited(session, NOW, days_ago=1, external_id="LONG")
    with transaction(runtime.sessions) as session:
        plan(session, YESTERDAY_10AM, settings.rules, settings)
        [failing] = claim_due(session, YESTERDAY_10AM)
        transitions.fail(session, failing.claim, REFUSED_BY_LINE, YESTERDAY_10AM)
    with transaction(runtime.sessions) as session:
        plan(session, NOW, settings.rules, settings)
    return failing.claim.id


def test_the_today_page_shows_the_numbers_of_a_known_outbox(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    failed = known_outbox(desk_runtime)
    signed_in(client)
    page = text_of(client.get("/").get_data(as_text=True))
    today, tomorrow = page.split("今日の送信予定")[1].split("明日の送信予定")
    assert "次回来院のおすすめ 1 1 2" in today  # LINE, email, total
    assert "予約前日のお知らせ" not in today
    assert "予約前日のお知らせ 1 0 1" in tomorrow.split("送れなかったメッセージ")[0]
    assert (
        "山田 花子 様 ・次回来院のおすすめ（LINE） 患者番号 FAIL・11月24日（火）10:00 "
        f"{REFUSED_BY_LINE_SAID} 詳しい内容 {REFUSED_BY_LINE}"
    ) in page
    assert "山田 花子 様 患者番号 LAPSED・最終来院" in page
    assert "佐藤 一郎 様 患者番号 LONG・急性期 43日目" in page
    with desk_runtime.sessions() as session:
        digest = build_digest(session, NOW, desk_runtime.settings)
    assert digest.line_used == 0
    assert f"0 通（上限 200 通） 今月末までの見込み： {digest.line_forecast} 通" in page
    assert failed in client.get("/").get_data(as_text=True)  # its retry form


def test_the_retry_button_requeues_a_failed_delivery_and_records_who(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    failed = known_outbox(desk_runtime)
    signed_in(client)
    answer = client.post(f"/deliveries/{failed}/retry", data={"csrf_token": csrf_of(client, "/")})
    assert answer.location == "/"
    assert "再送を受け付けました。" in client.get("/").get_data(as_text=True)
    with desk_runtime.sessions() as session:
        delivery = session.get_one(Delivery, failed)
        [record] = session.scalars(select(DeskAudit).where(DeskAudit.action == "retry")).all()
        user = session.get_one(DeskUser, record.user_id)
    assert (delivery.state, delivery.attempts, delivery.send_after) == (
        DeliveryState.PLANNED,
        0,
        NOW.astimezone(UTC),
    )
    assert delivery.last_error == f"queued again by hand; before: {REFUSED_BY_LINE}"
    assert (user.email, record.detail, record.at) == (
        STAFF,
        f"delivery {failed} (cadence_nudge) queued again",
        NOW.astimezone(UTC),
    )


def test_retrying_a_delivery_that_is_not_failed_changes_nothing_and_says_so(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    failed = known_outbox(desk_runtime)
    signed_in(client)
    token = csrf_of(client, "/")
    client.post(f"/deliveries/{failed}/retry", data={"csrf_token": token})
    client.post(f"/deliveries/{failed}/retry", data={"csrf_token": token})
    assert "このメッセージは再送できませんでした。" in client.get("/").get_data(as_text=True)
    with desk_runtime.sessions() as session:
        assert len(session.scalars(select(DeskAudit).where(DeskAudit.action == "retry")).all()) == 1


# --- in a real browser, against a real `tayori serve` ------------------------------


def a_failed_delivery(runtime: Runtime, now: datetime) -> str:
    """An emptied clinic with one staff account and one nudge that failed yesterday
    (the web process runs on the real clock); the delivery's id."""
    emptied(runtime, now)
    day = now.astimezone(JST).date() - timedelta(days=1)
    yesterday_10am = datetime.combine(day, time(10), tzinfo=JST)
    with transaction(runtime.sessions) as session:
        add_patient(session, yesterday_10am - timedelta(days=10), "FAIL", Phase.ACUTE)
        visited(session, yesterday_10am, days_ago=3, external_id="FAIL")
    with transaction(runtime.sessions) as session:
        plan(session, yesterday_10am, runtime.settings.rules, runtime.settings)
        [failing] = claim_due(session, yesterday_10am)
        transitions.fail(session, failing.claim, REFUSED_BY_LINE, yesterday_10am)
    return failing.claim.id


def test_staff_sign_in_and_retry_a_failed_message_on_a_phone(
    site: Site, browser: Any, screenshots: Path
) -> None:
    failed = a_failed_delivery(site.runtime, datetime.now(UTC))
    page = browser.new_page(viewport=PHONE)
    try:
        page.goto(f"{site.base}/")
        assert page.url == f"{site.base}/login"
        assert fits_the_phone(page) and fits_the_width(page)
        page.screenshot(path=str(screenshots / "desk-login-phone.png"), full_page=True)
        page.get_by_label("メールアドレス").fill(STAFF)
        page.get_by_label("パスワード").fill(PASSWORD)
        page.get_by_role("button", name="ログイン").click()
        page.wait_for_load_state()
        assert "の状況" in page.inner_text("h1")
        assert REFUSED_BY_LINE_SAID in page.inner_text("body")
        assert fits_the_phone(page)
        page.screenshot(path=str(screenshots / "desk-today-phone.png"), full_page=True)
        page.get_by_role("button", name="再送する（患者番号 FAIL・次回来院のおすすめ）").click()
        page.wait_for_load_state()
        assert "再送を受け付けました。" in page.inner_text("body")
        assert "送れなかったメッセージはありません。" in page.inner_text("body")
        assert fits_the_phone(page)
        page.screenshot(path=str(screenshots / "desk-today-retried-phone.png"), full_page=True)
    finally:
        page.close()
    with site.runtime.sessions() as session:
        delivery = session.get_one(Delivery, failed)
        [record] = session.scalars(select(DeskAudit).where(DeskAudit.action == "retry")).all()
    assert (delivery.state, delivery.attempts) == (DeliveryState.PLANNED, 0)
    assert (record.action, record.detail) == (
        "retry",
        f"delivery {failed} (cadence_nudge) queued again",
    )


def test_a_wrong_password_in_the_browser_opens_nothing(site: Site, browser: Any) -> None:
    emptied(site.runtime, datetime.now(UTC))
    page = browser.new_page(viewport=PHONE)
    try:
        page.goto(f"{site.base}/login")
        page.get_by_label("メールアドレス").fill(STAFF)
        page.get_by_label("パスワード").fill("not the password at all")
        page.get_by_role("button", name="ログイン").click()
        page.wait_for_load_state()
        assert "メールアドレスまたはパスワードが正しくありません。" in page.inner_text("body")
        page.goto(f"{site.base}/upcoming")
        assert page.url == f"{site.base}/login"
    finally:
        page.close()


def test_the_web_process_refuses_a_form_posted_without_its_csrf_token(
    site: Site, browser: Any
) -> None:
    """As a page of another site would post it: with the session's cookie, without
    the token that only the desk's own forms carry."""
    failed = a_failed_delivery(site.runtime, datetime.now(UTC))
    context = browser.new_context()
    page = context.new_page()
    try:
        sign_in_with_browser(page, site.base)
        answer = context.request.post(
            f"{site.base}/deliveries/{failed}/retry", form={"confirm": "1"}
        )
        assert answer.status == 400
    finally:
        context.close()
    with site.runtime.sessions() as session:
        assert session.get_one(Delivery, failed).state is DeliveryState.FAILED


def test_the_today_page_on_a_desktop(site: Site, browser: Any, screenshots: Path) -> None:
    a_failed_delivery(site.runtime, datetime.now(UTC))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        sign_in_with_browser(page, site.base)
        assert fits_the_phone(page)
        page.screenshot(path=str(screenshots / "desk-today-desktop.png"), full_page=True)
        page.get_by_role("button", name="ログアウト").click()
        page.wait_for_load_state()
        assert page.url == f"{site.base}/login"
        assert "ログアウトしました。" in page.inner_text("body")
    finally:
        page.close()


# --- many clinics: each desk signs in its own accounts ---------------------------------

NORTH_PASSWORD = "another clinic, another password"


@pytest.fixture
def north(desk_runtime: Runtime, tmp_path: Path) -> Runtime:
    """A second clinic, `north`, with an account of the same email as the first's."""
    runtime = second_clinic(desk_runtime, tmp_path / "north")
    with transaction(runtime.sessions) as session:
        add_user(session, STAFF, NORTH_PASSWORD, NOW)
    return runtime


def _sign_in_at(client: FlaskClient, base: str, password: str) -> TestResponse:
    return client.post(
        f"{base}/login",
        data={"email": STAFF, "password": password, "csrf_token": csrf_of(client, f"{base}/login")},
    )


def test_another_clinics_desk_signs_in_with_its_own_account(
    client: FlaskClient, north: Runtime
) -> None:
    assert _sign_in_at(client, "/desk/north", PASSWORD).status_code == 200  # refused
    signed_in = _sign_in_at(client, "/desk/north", NORTH_PASSWORD)
    assert signed_in.location == "/desk/north/"
    assert client.get("/desk/north/").status_code == 200


def test_a_session_for_one_clinic_opens_no_other_clinics_desk(
    client: FlaskClient, north: Runtime
) -> None:
    signed_in(client)
    assert client.get("/").status_code == 200
    assert client.get("/desk/north/").location == "/desk/north/login"


def test_a_clinic_not_served_has_no_desk(client: FlaskClient) -> None:
    assert client.get("/desk/nowhere/login").status_code == 404

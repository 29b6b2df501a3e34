"""The desk's accounts: owners and staff, the Accounts page (owners only) that adds,
disables, enables and changes the role of an account, and the password page of every
account — through the CLI as a user runs it, the Flask app against a real database
(SQLite and PostgreSQL), the migration that gave existing accounts their role, and a
real `tayori serve` driven by a real Chromium."""

from __future__ import annotations

import logging
import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from scheduler.clock import FixedClock
from scheduler.runtime import Runtime
from scheduler.store.db import transaction
from scheduler.store.desk import FAILURES_ALLOWED, Change, Role, add_user, set_enabled
from scheduler.store.models import DeskAudit, DeskUser
from tests.conftest import run_tayori
from tests.integration.browser import PHONE, fits_the_width
from tests.integration.desk import (
    NOW,
    PASSWORD,
    STAFF,
    Site,
    add_account,
    csrf_of,
    emptied,
    fits_the_phone,
    second_clinic,
    sign_in,
    sign_in_with_browser,
    signed_in,
)

NURSE = "nurse@clinic.example"
NURSE_PASSWORD = "kettle umbrella violin harbour"
OWNERS_ONLY = "このページは管理者専用です"


@pytest.fixture
def other(client: FlaskClient) -> FlaskClient:
    """A second browser of the same desk, for another account."""
    return client.application.test_client()


@pytest.fixture
def nurse(desk_runtime: Runtime) -> int:
    """A staff account beside the owner; its id."""
    with transaction(desk_runtime.sessions) as session:
        return add_account(session, NURSE, NURSE_PASSWORD, Role.STAFF, NOW).id


def sign_in_as(client: FlaskClient, email: str, password: str) -> TestResponse:
    return client.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": csrf_of(client)},
    )


def post(client: FlaskClient, url: str, **fields: str) -> TestResponse:
    return client.post(url, data={"csrf_token": csrf_of(client, "/"), **fields})


def user(runtime: Runtime, email: str) -> DeskUser:
    with runtime.sessions() as session:
        found = session.scalars(select(DeskUser).where(DeskUser.email == email)).one()
        session.expunge(found)
        return found


def audited(runtime: Runtime, action: str) -> list[tuple[int, str, datetime]]:
    with runtime.sessions() as session:
        records = session.scalars(select(DeskAudit).where(DeskAudit.action == action)).all()
        return [(r.user_id, r.detail, r.at) for r in records]


def text(answer: TestResponse) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", answer.get_data(as_text=True)).split())


# --- `tayori user add` ------------------------------------------------------------


def test_user_add_makes_the_clinics_first_account_an_owner_and_says_so(
    clinic_env: dict[str, str], runtime: Runtime
) -> None:
    done = run_tayori("user", "add", STAFF, env=clinic_env, stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    assert f"desk account {STAFF} added to clinic default as an owner" in done.stdout
    assert user(runtime, STAFF).role == Role.OWNER


def test_user_add_makes_later_accounts_staff_and_says_so(
    clinic_env: dict[str, str], runtime: Runtime
) -> None:
    run_tayori("user", "add", STAFF, env=clinic_env, stdin=PASSWORD)
    done = run_tayori("user", "add", NURSE, env=clinic_env, stdin=PASSWORD)
    assert done.returncode == 0, done.stderr
    assert "added to clinic default as staff" in done.stdout
    assert "--owner makes an owner" in done.stdout
    assert user(runtime, NURSE).role == Role.STAFF


def test_user_add_with_owner_makes_a_later_account_an_owner(
    clinic_env: dict[str, str], runtime: Runtime
) -> None:
    run_tayori("user", "add", STAFF, env=clinic_env, stdin=PASSWORD)
    done = run_tayori("user", "add", NURSE, "--owner", env=clinic_env, stdin=PASSWORD)
    assert done.returncode == 0, done.stderr
    assert "as an owner" in done.stdout
    assert user(runtime, NURSE).role == Role.OWNER


# --- migration 0016 -------------------------------------------------------------------


# --- who may open the Accounts page -------------------------------------------------


def test_an_owner_sees_the_accounts_link_and_page(client: FlaskClient) -> None:
    signed_in(client)
    assert 'href="/accounts">アカウント</a>' in client.get("/").get_data(as_text=True)
    page = client.get("/accounts")
    assert page.status_code == 200
    assert "アカウントを追加" in page.get_data(as_text=True)


def test_staff_get_no_accounts_link_and_a_403_page(client: FlaskClient, nurse: int) -> None:
    sign_in_as(client, NURSE, NURSE_PASSWORD)
    assert 'href="/accounts"' not in client.get("/").get_data(as_text=True)
    refused = client.get("/accounts")
    assert refused.status_code == 403
    assert OWNERS_ONLY in refused.get_data(as_text=True)


@pytest.mark.parametrize(
    ("url", "fields"),
    [
        ("/accounts", {"email": "new@clinic.example", "password": NURSE_PASSWORD}),
        ("/accounts/1/disable", {}),
        ("/accounts/2/role", {"role": "owner"}),
    ],
    ids=["add", "disable", "role"],
)
def test_staff_cannot_change_accounts(
    client: FlaskClient, desk_runtime: Runtime, nurse: int, url: str, fields: dict[str, str]
) -> None:
    sign_in_as(client, NURSE, NURSE_PASSWORD)
    answer = post(client, url, **fields)
    assert answer.status_code == 403
    with desk_runtime.sessions() as session:
        users = session.scalars(select(DeskUser).order_by(DeskUser.id)).all()
        assert [(u.email, u.role, u.disabled_at) for u in users] == [
            (STAFF, Role.OWNER, None),
            (NURSE, Role.STAFF, None),
        ]
    assert audited(desk_runtime, "account_add") == []


# --- the list ---------------------------------------------------------------------------


def test_the_list_shows_each_accounts_role_state_creation_and_last_sign_in(
    client: FlaskClient, other: FlaskClient, desk_runtime: Runtime, nurse: int, clock: FixedClock
) -> None:
    with transaction(desk_runtime.sessions) as session:
        add_user(session, "gone@clinic.example", PASSWORD, NOW, Role.STAFF).disabled_at = NOW
    clock.set(NOW + timedelta(hours=1))
    sign_in(client)  # the last sign-in is read from the audit log
    page = text(client.get("/accounts"))
    assert (
        f"{STAFF} （あなた） 管理者 作成 11月25日（水）09:30・最終ログイン 11月25日（水）10:30"
    ) in page
    assert f"{NURSE} スタッフ 作成 11月25日（水）09:30・最終ログイン 記録なし" in page
    assert "gone@clinic.example スタッフ 無効 作成" in page
    assert page.index(NURSE) < page.index("gone@clinic.example")  # the enabled first


# --- adding an account -------------------------------------------------------------------


def test_an_owner_adds_a_staff_account_with_a_typed_password_who_can_sign_in(
    client: FlaskClient, other: FlaskClient, desk_runtime: Runtime
) -> None:
    signed_in(client)
    answer = post(client, "/accounts", email="Nurse@Clinic.example", password=NURSE_PASSWORD)
    assert answer.location == "/accounts"
    assert f"{NURSE} をスタッフとして追加しました。" in client.get("/accounts").get_data(
        as_text=True
    )
    added = user(desk_runtime, NURSE)
    assert added.role == Role.STAFF
    owner = user(desk_runtime, STAFF)
    assert audited(desk_runtime, "account_add") == [
        (owner.id, f"account {added.id} added as staff", NOW.astimezone(UTC))
    ]
    assert sign_in_as(other, NURSE, NURSE_PASSWORD).location == "/"


def test_an_owner_adds_another_owner(client: FlaskClient, desk_runtime: Runtime) -> None:
    signed_in(client)
    post(client, "/accounts", email=NURSE, password=NURSE_PASSWORD, role="owner")
    assert user(desk_runtime, NURSE).role == Role.OWNER


def test_a_generated_password_is_shown_once_and_signs_in(
    client: FlaskClient, other: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    signed_in(client)
    answer = post(client, "/accounts", email=NURSE, password_choice="generate")
    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == "no-store"
    match = re.search(r'class="secret"><code>([^<]+)</code>', answer.get_data(as_text=True))
    assert match is not None
    generated = match.group(1)
    assert len(generated) >= 12
    assert generated not in client.get("/accounts").get_data(as_text=True)
    assert generated not in caplog.text and NURSE not in caplog.text
    assert sign_in_as(other, NURSE, generated).location == "/"


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"email": NURSE, "password": "eleven char"}, "パスワードは12文字以上にしてください。"),
        (
            {"email": "not an address", "password": NURSE_PASSWORD},
            "メールアドレスの形が正しくありません。",
        ),
        (
            {"email": STAFF.upper(), "password": NURSE_PASSWORD},
            "このメールアドレスのアカウントはすでにあります。",
        ),
    ],
    ids=["short password", "no email", "taken email"],
)
def test_an_account_the_desk_cannot_accept_is_refused_and_nothing_added(
    client: FlaskClient, desk_runtime: Runtime, fields: dict[str, str], problem: str
) -> None:
    signed_in(client)
    answer = post(client, "/accounts", **fields)
    assert answer.status_code == 400
    assert problem in answer.get_data(as_text=True)
    with desk_runtime.sessions() as session:
        assert session.scalars(select(DeskUser.email)).all() == [STAFF]
    assert audited(desk_runtime, "account_add") == []


# --- disabling and enabling -------------------------------------------------------------


def test_a_disabled_account_is_signed_out_at_its_next_request_and_cannot_sign_in(
    client: FlaskClient, other: FlaskClient, desk_runtime: Runtime, nurse: int
) -> None:
    sign_in_as(other, NURSE, NURSE_PASSWORD)
    assert other.get("/").status_code == 200
    signed_in(client)
    assert post(client, f"/accounts/{nurse}/disable").location == "/accounts"
    assert "アカウントを無効にしました。" in client.get("/accounts").get_data(as_text=True)
    assert other.get("/").location == "/login"
    assert sign_in_as(other, NURSE, NURSE_PASSWORD).status_code == 200  # refused
    owner = user(desk_runtime, STAFF)
    assert audited(desk_runtime, "account_disable") == [
        (owner.id, f"account {nurse} disabled", NOW.astimezone(UTC))
    ]


def test_a_disabled_account_is_enabled_again_and_signs_in(
    client: FlaskClient, other: FlaskClient, desk_runtime: Runtime, nurse: int
) -> None:
    signed_in(client)
    post(client, f"/accounts/{nurse}/disable")
    post(client, f"/accounts/{nurse}/enable")
    assert user(desk_runtime, NURSE).disabled_at is None
    assert [detail for _, detail, _ in audited(desk_runtime, "account_enable")] == [
        f"account {nurse} enabled"
    ]
    assert sign_in_as(other, NURSE, NURSE_PASSWORD).location == "/"


def test_an_owner_cannot_disable_themself(client: FlaskClient, desk_runtime: Runtime) -> None:
    signed_in(client)
    owner = user(desk_runtime, STAFF)
    post(client, f"/accounts/{owner.id}/disable")
    assert "自分のアカウントは無効にできません。" in client.get("/accounts").get_data(as_text=True)
    assert user(desk_runtime, STAFF).disabled_at is None
    assert audited(desk_runtime, "account_disable") == []


def test_two_owners_disabling_each_other_at_once_leave_one_enabled(
    desk_runtime: Runtime, nurse: int
) -> None:
    """Each one's check and change in its own transaction, the second started while the
    first holds its rows: the second sees the first's change, and is refused."""
    owner = user(desk_runtime, STAFF).id
    with transaction(desk_runtime.sessions) as session:
        session.get_one(DeskUser, nurse).role = Role.OWNER
    second: list[Change] = []
    with transaction(desk_runtime.sessions) as first:
        assert set_enabled(first, owner, nurse, False, NOW) is Change.DONE
        first.flush()

        def the_other_way() -> None:
            with transaction(desk_runtime.sessions) as session:
                second.append(set_enabled(session, nurse, owner, False, NOW))

        racing = threading.Thread(target=the_other_way)
        racing.start()
        racing.join(timeout=0.5)
        assert racing.is_alive()  # waiting for the first transaction's rows
    racing.join(timeout=30)
    assert second == [Change.NOT_OWNER]
    assert user(desk_runtime, STAFF).disabled_at is None


# --- roles ---------------------------------------------------------------------------------


def test_an_owner_makes_staff_an_owner_who_then_sees_the_page(
    client: FlaskClient, other: FlaskClient, desk_runtime: Runtime, nurse: int
) -> None:
    signed_in(client)
    post(client, f"/accounts/{nurse}/role", role="owner")
    assert user(desk_runtime, NURSE).role == Role.OWNER
    owner = user(desk_runtime, STAFF)
    assert audited(desk_runtime, "account_role") == [
        (owner.id, f"account {nurse} is now owner", NOW.astimezone(UTC))
    ]
    sign_in_as(other, NURSE, NURSE_PASSWORD)
    assert other.get("/accounts").status_code == 200


def test_the_last_enabled_owner_cannot_be_made_staff(
    client: FlaskClient, desk_runtime: Runtime, nurse: int
) -> None:
    signed_in(client)
    owner = user(desk_runtime, STAFF)
    post(client, f"/accounts/{owner.id}/role", role="staff")
    assert "有効な管理者がいなくなるため、変更できません。" in client.get("/accounts").get_data(
        as_text=True
    )
    assert user(desk_runtime, STAFF).role == Role.OWNER
    assert audited(desk_runtime, "account_role") == []


def test_a_disabled_owner_does_not_count_as_the_clinics_owner(
    client: FlaskClient, desk_runtime: Runtime, nurse: int
) -> None:
    with transaction(desk_runtime.sessions) as session:
        disabled = session.get_one(DeskUser, nurse)
        disabled.role, disabled.disabled_at = Role.OWNER, NOW
    signed_in(client)
    owner = user(desk_runtime, STAFF)
    post(client, f"/accounts/{owner.id}/role", role="staff")
    assert user(desk_runtime, STAFF).role == Role.OWNER


def test_an_owner_who_steps_down_leaves_for_the_today_page(
    client: FlaskClient, desk_runtime: Runtime, nurse: int
) -> None:
    signed_in(client)
    post(client, f"/accounts/{nurse}/role", role="owner")
    owner = user(desk_runtime, STAFF)
    assert post(client, f"/accounts/{owner.id}/role", role="staff").location == "/"
    assert client.get("/accounts").status_code == 403


# --- another clinic's accounts are out of reach -----------------------------------------


@pytest.fixture
def north_account(desk_runtime: Runtime, tmp_path: Path) -> int:
    """A second clinic, `north`, with an account; the account's id."""
    north = second_clinic(desk_runtime, tmp_path / "north")
    with transaction(north.sessions) as session:
        return add_user(session, NURSE, NURSE_PASSWORD, NOW).id


def test_an_owner_cannot_touch_another_clinics_account(
    client: FlaskClient, desk_runtime: Runtime, north_account: int
) -> None:
    signed_in(client)
    post(client, f"/accounts/{north_account}/disable")
    post(client, f"/accounts/{north_account}/role", role="staff")
    assert "このアカウントは見つかりませんでした。" in client.get("/accounts").get_data(
        as_text=True
    )
    assert NURSE not in client.get("/accounts").get_data(as_text=True)
    with desk_runtime.sessions() as session:
        north = session.get_one(DeskUser, north_account)
        assert (north.disabled_at, north.role) == (None, Role.OWNER)


# --- one's own password ------------------------------------------------------------------


def test_staff_change_their_own_password_with_the_current_one(
    client: FlaskClient, other: FlaskClient, desk_runtime: Runtime, nurse: int
) -> None:
    sign_in_as(client, NURSE, NURSE_PASSWORD)
    new = "lantern pebble orchard quill"
    answer = post(client, "/password", current=NURSE_PASSWORD, new=new, again=new)
    assert answer.location == "/"
    assert "パスワードを変更しました。" in client.get("/").get_data(as_text=True)
    assert sign_in_as(other, NURSE, NURSE_PASSWORD).status_code == 200  # refused
    assert sign_in_as(other, NURSE, new).location == "/"
    assert audited(desk_runtime, "password_change") == [
        (nurse, f"account {nurse} changed its own password", NOW.astimezone(UTC))
    ]


@pytest.mark.parametrize(
    ("current", "new", "again", "problem"),
    [
        (
            "not the password at all",
            "lantern pebble orchard",
            "lantern pebble orchard",
            "いまのパスワードが正しくありません。",
        ),
        (PASSWORD, "short one", "short one", "パスワードは12文字以上にしてください。"),
        (
            PASSWORD,
            "lantern pebble orchard",
            "lantern pebble orchid",
            "確認のために入力したものと違います。",
        ),
    ],
    ids=["wrong current", "short", "not repeated"],
)
def test_a_password_change_the_desk_cannot_accept_changes_nothing(
    client: FlaskClient,
    other: FlaskClient,
    desk_runtime: Runtime,
    current: str,
    new: str,
    again: str,
    problem: str,
) -> None:
    signed_in(client)
    answer = post(client, "/password", current=current, new=new, again=again)
    assert answer.status_code == 400
    assert problem in answer.get_data(as_text=True)
    assert sign_in(other).location == "/"
    assert audited(desk_runtime, "password_change") == []


def test_changing_the_password_signs_out_the_accounts_other_sessions(
    client: FlaskClient, other: FlaskClient
) -> None:
    signed_in(client)
    sign_in(other)
    new = "lantern pebble orchard quill"
    post(client, "/password", current=PASSWORD, new=new, again=new)
    assert client.get("/").status_code == 200
    assert other.get("/").location == "/login"


def test_guessing_the_current_password_is_limited_as_signing_in_is(
    client: FlaskClient, other: FlaskClient, desk_runtime: Runtime
) -> None:
    signed_in(client)
    new = "lantern pebble orchard quill"
    for _ in range(FAILURES_ALLOWED):
        post(client, "/password", current="a wrong password!", new=new, again=new)
    locked = post(client, "/password", current=PASSWORD, new=new, again=new)
    assert locked.status_code == 429
    assert "しばらく変更できません。" in locked.get_data(as_text=True)
    assert sign_in(other, address="127.0.0.1").status_code == 429  # the same count
    assert audited(desk_runtime, "password_change") == []


# --- in a real browser, against a real `tayori serve` ------------------------------------


def test_an_owner_adds_staff_who_cannot_manage_accounts_and_is_signed_out_when_disabled(
    site: Site, browser: Any, screenshots: Path
) -> None:
    emptied(site.runtime, datetime.now(UTC))
    owner = browser.new_page(viewport=PHONE)
    staff = browser.new_page(viewport=PHONE)  # a second context: its own cookies
    try:
        sign_in_with_browser(owner, site.base)
        owner.get_by_role("link", name="アカウント").click()
        owner.wait_for_load_state()
        assert owner.inner_text("h1") == "アカウント"
        owner.get_by_label("メールアドレス").fill(NURSE)
        owner.get_by_role("button", name="パスワードを自動で作って追加").click()
        owner.wait_for_load_state()
        generated = owner.inner_text(".secret code")
        assert f"{NURSE} をスタッフとして追加しました。" in owner.inner_text("body")
        assert fits_the_phone(owner) and fits_the_width(owner)
        owner.screenshot(path=str(screenshots / "desk-accounts-added-phone.png"), full_page=True)

        staff.goto(f"{site.base}/login")
        staff.get_by_label("メールアドレス").fill(NURSE)
        staff.get_by_label("パスワード").fill(generated)
        staff.get_by_role("button", name="ログイン").click()
        staff.wait_for_load_state()
        assert "の状況" in staff.inner_text("h1")
        assert staff.get_by_role("link", name="アカウント").count() == 0
        staff.goto(f"{site.base}/accounts")
        assert OWNERS_ONLY in staff.inner_text("h1")
        assert fits_the_phone(staff)
        staff.screenshot(path=str(screenshots / "desk-accounts-staff-refused-phone.png"))
        staff.get_by_role("link", name="パスワード変更").click()
        staff.wait_for_load_state()
        assert staff.inner_text("h1") == "パスワード変更"
        assert fits_the_phone(staff)
        staff.screenshot(path=str(screenshots / "desk-password-phone.png"), full_page=True)

        owner.goto(f"{site.base}/accounts")
        owner.get_by_role("button", name=f"無効にする（{NURSE}）").click()
        owner.wait_for_load_state()
        assert "アカウントを無効にしました。" in owner.inner_text("body")
        assert fits_the_phone(owner)
        owner.screenshot(path=str(screenshots / "desk-accounts-disabled-phone.png"), full_page=True)

        staff.goto(f"{site.base}/")
        assert staff.url == f"{site.base}/login"
    finally:
        owner.close()
        staff.close()
    with site.runtime.sessions() as session:
        actions = session.scalars(select(DeskAudit.action).order_by(DeskAudit.id)).all()
    assert actions == ["sign_in", "account_add", "sign_in", "account_disable"]


def test_the_accounts_and_password_pages_on_a_desktop(
    site: Site, browser: Any, screenshots: Path
) -> None:
    emptied(site.runtime, datetime.now(UTC))
    with transaction(site.runtime.sessions) as session:
        add_user(session, NURSE, NURSE_PASSWORD, datetime.now(UTC))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        sign_in_with_browser(page, site.base)
        page.goto(f"{site.base}/accounts")
        assert fits_the_phone(page)
        page.screenshot(path=str(screenshots / "desk-accounts-desktop.png"), full_page=True)
        page.get_by_role("link", name="パスワード変更").click()
        page.wait_for_load_state()
        assert page.inner_text("h1") == "パスワード変更"
        page.screenshot(path=str(screenshots / "desk-password-desktop.png"), full_page=True)
        new = "lantern pebble orchard quill"
        page.get_by_label("いまのパスワード").fill(PASSWORD)
        page.get_by_label("新しいパスワード（12文字以上）").fill(new)
        page.get_by_label("新しいパスワード（確認のため、もう一度）").fill(new)
        page.get_by_role("button", name="変更する").click()
        page.wait_for_load_state()
        assert "パスワードを変更しました。" in page.inner_text("body")
    finally:
        page.close()

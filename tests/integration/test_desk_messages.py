"""The desk's Messages page: the templates and tips listed, edited with a preview and
the lint's problems at their lines, saved only when the lint passes, every version
kept and restorable — through the Flask app against a real database (SQLite and
PostgreSQL), and a real `tayori serve` driven by a real Chromium."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from scheduler.clock import FixedClock
from scheduler.core.domain import Phase, Reason
from scheduler.messages.context import SAMPLE_PATIENT, sample_context
from scheduler.messages.files import template_files, tip_files
from scheduler.messages.lint import lint_template, lint_tip
from scheduler.messages.templates import Renderer
from scheduler.runtime import Runtime, open_runtime
from scheduler.settings import Settings, load_settings
from scheduler.store.db import transaction
from scheduler.store.desk import add_user
from scheduler.store.models import DeskAudit, TemplateVersion
from scheduler.store.template_versions import keep_version
from scheduler.web.app import create_app
from tests.conftest import ROOT
from tests.integration.browser import PHONE, fits_the_width
from tests.integration.clinic import add_patient
from tests.integration.desk import (
    NOW,
    STAFF,
    Site,
    add_staff_account,
    csrf_of,
    emptied,
    fits_the_phone,
    second_clinic,
    sign_in_with_browser,
    signed_in,
)

NUDGE_LINE = "cadence_nudge/line.j2"
EDITOR = f"/messages/edit/{NUDGE_LINE}"
# Line 5 of the shipped cadence_nudge/line.j2 is 「お体の調子はいかがですか。」.
MISTAKE_LINE = 5
# What the editor says of that mistake (the lint says "unknown variable 'patient_nmae'").
MISTAKE_SAID = "「patient_nmae」という名前は使えません（つづりを確かめてください）"


@pytest.fixture
def messages_dir(tmp_path: Path) -> Path:
    """A copy of the shipped messages: the desk writes these files."""
    copy = tmp_path / "messages"
    shutil.copytree(ROOT / "messages", copy)
    return copy


@pytest.fixture
def desk(
    desk_env: dict[str, str], messages_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Runtime]:
    """A clinic whose desk is on, with the staff account and its own messages."""
    monkeypatch.setenv("TAYORI_MESSAGES_DIR", str(messages_dir))
    opened = open_runtime(load_settings({**desk_env, "TAYORI_MESSAGES_DIR": str(messages_dir)}))
    with transaction(opened.sessions) as session:
        add_staff_account(session, NOW)
    yield opened
    opened.close()


@pytest.fixture
def client(desk: Runtime) -> FlaskClient:
    client = create_app(desk.settings, desk, FixedClock(NOW)).test_client()
    signed_in(client)
    return client


def with_a_mistake(text: str, line: int = MISTAKE_LINE) -> str:
    """`text` with an unknown variable on `line`."""
    lines = text.splitlines(keepends=True)
    lines[line - 1] = "{{ patient_nmae }}" + lines[line - 1]
    return "".join(lines)


def with_a_change(text: str) -> str:
    return text.replace("お体の調子はいかがですか。", "その後、お加減はいかがですか。")


def editor_form(client: FlaskClient, name: str = NUDGE_LINE) -> dict[str, str]:
    """The editor's form fields as the page fills them."""
    page = client.get(f"/messages/edit/{name}").get_data(as_text=True)
    base = re.search(r'name="base" value="([^"]+)"', page)
    assert base is not None
    return {"csrf_token": csrf_of(client, f"/messages/edit/{name}"), "base": base.group(1)}


def post(
    client: FlaskClient, text: str, action: str, name: str = NUDGE_LINE, **fields: str
) -> tuple[int, str]:
    form = editor_form(client, name) | {"text": text, "action": action} | fields
    answer = client.post(f"/messages/edit/{name}", data=form)
    if answer.status_code == 302:
        answer = client.get(answer.location)
    return answer.status_code, answer.get_data(as_text=True)


def page_text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


# --- the list ------------------------------------------------------------------------


def test_the_list_names_each_template_by_its_reason_and_channel(client: FlaskClient) -> None:
    page = client.get("/messages").get_data(as_text=True)
    assert 'aria-label="次回来院のおすすめ（LINE）を編集"' in page
    assert 'aria-label="次回来院のおすすめ（メール）を編集"' in page
    assert f'href="/messages/edit/{NUDGE_LINE}"' in page
    assert "季節のお便り：season_change" in page
    assert "友だち追加のあいさつ" in page
    assert "メールのフッター（医院名・連絡先・配信停止）" in page


def test_the_list_shows_the_tip_library_by_season(client: FlaskClient, messages_dir: Path) -> None:
    html = client.get("/messages").get_data(as_text=True)
    tips = len([p for p in (messages_dir / "tips").glob("*.md") if p.name != "README.md"])
    assert f"セルフケアのひとこと（{tips}件）" in html
    winter = re.search(r"<summary>冬（(\d+)件）</summary>(.*?)</details>", html, re.DOTALL)
    assert winter is not None and int(winter[1]) > 0
    assert "winter-warm-drinks" in winter[2]


# --- lint and preview ----------------------------------------------------------------


def test_a_mistake_is_shown_at_its_line_and_nothing_is_saved(
    client: FlaskClient, desk: Runtime, messages_dir: Path
) -> None:
    before = (messages_dir / NUDGE_LINE).read_text(encoding="utf-8")
    status, page = post(client, with_a_mistake(before), "save")
    assert status == 422
    assert f"{MISTAKE_LINE}行目：{MISTAKE_SAID}" in page
    assert "問題があるため保存していません。" in page
    assert (messages_dir / NUDGE_LINE).read_text(encoding="utf-8") == before
    with desk.sessions() as session:
        assert session.scalars(select(TemplateVersion)).all() == []


def test_the_preview_renders_the_edited_text_by_line_and_email_without_saving(
    client: FlaskClient, messages_dir: Path
) -> None:
    before = (messages_dir / NUDGE_LINE).read_text(encoding="utf-8")
    status, page = post(client, with_a_change(before), "preview")
    assert status == 200
    line, email = page.split('aria-label="LINEのプレビュー"')[1].split(
        'aria-label="メールのプレビュー"'
    )
    assert f"{SAMPLE_PATIENT}様" in line and "その後、お加減はいかがですか。" in line
    assert "件名：" in email and "その後" not in email  # the email's file is not edited
    assert "まだ保存していない変更があります。" in page
    assert (messages_dir / NUDGE_LINE).read_text(encoding="utf-8") == before


def test_the_preview_for_a_chosen_patient_is_composed_for_them(
    client: FlaskClient, desk: Runtime, messages_dir: Path
) -> None:
    with transaction(desk.sessions) as session:
        add_patient(session, NOW - timedelta(days=10), "P-7", Phase.REHAB, name="佐藤 一郎")
    text = (messages_dir / NUDGE_LINE).read_text(encoding="utf-8")
    _, page = post(client, text, "preview", patient="P-7")
    line = page.split('aria-label="LINEのプレビュー"')[1]
    assert "佐藤 一郎様" in line and "週に一度のペース" in line  # the rehab phase's words
    _, page = post(client, text, "preview", patient="NOBODY")
    assert "この患者番号の方は見つかりません。" in page


def test_every_template_opens_with_a_preview_of_each_of_its_channels(
    client: FlaskClient, messages_dir: Path
) -> None:
    for name in template_files(messages_dir):
        answer = client.get(f"/messages/edit/{name}")
        page = answer.get_data(as_text=True)
        assert answer.status_code == 200, name
        assert 'role="alert"' not in page and 'class="problem"' not in page, name
        assert "のプレビュー" in page, name
    page = client.get("/messages/edit/daily_digest/email.j2").get_data(as_text=True)
    assert "件名：" in page.split('aria-label="メールのプレビュー"')[1]


def test_the_live_preview_answers_with_the_results_and_saves_nothing(
    client: FlaskClient, desk: Runtime, messages_dir: Path
) -> None:
    before = (messages_dir / NUDGE_LINE).read_text(encoding="utf-8")
    answer = client.post(
        f"/messages/preview/{NUDGE_LINE}",
        data={"csrf_token": csrf_of(client, EDITOR), "text": with_a_mistake(before)},
    )
    part = answer.get_data(as_text=True)
    assert answer.status_code == 200
    assert "<html" not in part  # a part of the page, for the script to put in place
    assert f"{MISTAKE_LINE}行目：{MISTAKE_SAID}" in part
    assert 'aria-label="LINEのプレビュー"' in part
    assert (messages_dir / NUDGE_LINE).read_text(encoding="utf-8") == before
    with desk.sessions() as session:
        assert session.scalars(select(TemplateVersion)).all() == []


def test_only_the_editor_may_run_a_script_and_only_its_own(client: FlaskClient) -> None:
    editor = client.get(EDITOR)
    policy = editor.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    page = editor.get_data(as_text=True)
    assert '<script src="/messages/editor.js" defer></script>' in page
    assert page.count("<script") == 1  # once, at the end: none in the <title>
    script = client.get("/messages/editor.js")
    assert (script.status_code, script.mimetype) == (200, "text/javascript")
    assert "script-src" not in client.get("/messages").headers["Content-Security-Policy"]


def test_a_shared_part_is_checked_in_every_message_that_includes_it(
    client: FlaskClient, messages_dir: Path
) -> None:
    footer = (messages_dir / "_footer.j2").read_text(encoding="utf-8")
    without_link = footer.split("{% if unsubscribe_url %}")[0]
    status, page = post(client, without_link, "save", name="_footer.j2")
    assert status == 422
    assert (
        "このファイルを使うメッセージで：cadence_nudge/email.j2："
        "配信停止のリンクがありません（{{ unsubscribe_url }} が必要です）"
    ) in page
    assert (messages_dir / "_footer.j2").read_text(encoding="utf-8") == footer


# --- saving and restoring ------------------------------------------------------------


def test_saving_writes_the_file_and_keeps_the_original_and_the_new_version(
    client: FlaskClient, desk: Runtime, messages_dir: Path
) -> None:
    original = (messages_dir / NUDGE_LINE).read_text(encoding="utf-8")
    changed = with_a_change(original)
    status, page = post(client, changed.replace("\n", "\r\n"), "save")  # as browsers send it
    assert status == 200
    assert "保存しました。" in page
    assert (messages_dir / NUDGE_LINE).read_text(encoding="utf-8") == changed
    # No temporary file left behind.
    assert sorted(p.name for p in (messages_dir / "cadence_nudge").iterdir()) == [
        "email.j2",
        "line.j2",
    ]
    with desk.sessions() as session:
        kept = session.scalars(select(TemplateVersion).order_by(TemplateVersion.id)).all()
        [record] = session.scalars(select(DeskAudit).where(DeskAudit.action == "message_save"))
    assert [(v.path, v.content, v.saved_by is None) for v in kept] == [
        (NUDGE_LINE, original, True),
        (NUDGE_LINE, changed, False),
    ]
    assert record.detail == f"{NUDGE_LINE}: saved as version {kept[1].id}"


def test_past_twenty_versions_the_page_lists_the_newest_and_shows_all_on_asking(
    client: FlaskClient, desk: Runtime
) -> None:
    with transaction(desk.sessions) as session:
        keep_version(session, NUDGE_LINE, "the original", None, NOW)
        for n in range(1, 25):
            keep_version(session, NUDGE_LINE, f"version {n}", None, NOW)
    page = client.get(EDITOR).get_data(as_text=True)
    assert page.count("この版に戻す</button>") == 20
    assert "the original" not in page and "version 24" in page
    assert f"{EDITOR}?versions=all#versions" in page
    everything = client.get(f"{EDITOR}?versions=all").get_data(as_text=True)
    assert everything.count("この版に戻す</button>") == 25
    assert "the original" in everything and "すべての版を表示する" not in everything


def test_restoring_a_version_puts_its_text_back_and_is_kept_as_a_version(
    client: FlaskClient, desk: Runtime, messages_dir: Path
) -> None:
    original = (messages_dir / NUDGE_LINE).read_text(encoding="utf-8")
    post(client, with_a_change(original), "save")
    with desk.sessions() as session:
        first = session.scalars(select(TemplateVersion).order_by(TemplateVersion.id)).first()
    assert first is not None
    answer = client.post(
        f"/messages/restore/{NUDGE_LINE}",
        data={"csrf_token": csrf_of(client, EDITOR), "version": str(first.id)},
    )
    assert answer.location == EDITOR
    assert "選んだ版に戻しました。" in client.get(EDITOR).get_data(as_text=True)
    assert (messages_dir / NUDGE_LINE).read_text(encoding="utf-8") == original
    with desk.sessions() as session:
        kept = session.scalars(select(TemplateVersion).order_by(TemplateVersion.id)).all()
        [record] = session.scalars(select(DeskAudit).where(DeskAudit.action == "message_restore"))
    assert [v.content for v in kept] == [original, with_a_change(original), original]
    assert record.detail == f"{NUDGE_LINE}: version {first.id} restored as version {kept[2].id}"


def kept(runtime: Runtime, path: str, content: str) -> int:
    """A version kept as if saved earlier; its id."""
    with transaction(runtime.sessions) as session:
        version = TemplateVersion(path=path, content=content, saved_at=NOW)
        session.add(version)
        session.flush()
        return version.id


def test_a_version_the_lint_now_refuses_is_not_restored(
    client: FlaskClient, desk: Runtime, messages_dir: Path
) -> None:
    before = (messages_dir / NUDGE_LINE).read_text(encoding="utf-8")
    old = kept(desk, NUDGE_LINE, "{{ a_variable_since_removed }}\n")
    client.post(
        f"/messages/restore/{NUDGE_LINE}",
        data={"csrf_token": csrf_of(client, EDITOR), "version": str(old)},
    )
    assert "この版は今の設定では問題があるため、戻せません。" in client.get(EDITOR).get_data(
        as_text=True
    )
    assert (messages_dir / NUDGE_LINE).read_text(encoding="utf-8") == before


def test_a_version_of_another_file_is_not_restored_here(
    client: FlaskClient, desk: Runtime, messages_dir: Path
) -> None:
    before = (messages_dir / NUDGE_LINE).read_text(encoding="utf-8")
    other = kept(desk, "cadence_nudge/email.j2", "{{ clinic.name }}\n")
    answer = client.post(
        f"/messages/restore/{NUDGE_LINE}",
        data={"csrf_token": csrf_of(client, EDITOR), "version": str(other)},
    )
    assert answer.status_code == 404
    assert (messages_dir / NUDGE_LINE).read_text(encoding="utf-8") == before


def test_the_workers_renderer_uses_the_saved_file_without_a_restart(
    client: FlaskClient, desk: Runtime, messages_dir: Path
) -> None:
    worker = Renderer(messages_dir)  # made before the save, as a running worker's is
    values = sample_context(
        Reason.CADENCE_NUDGE, Phase.ACUTE, desk.settings.clinic, NOW, desk.settings.timezone
    )
    assert "その後、お加減" not in worker.render(NUDGE_LINE, values).text
    original = (messages_dir / NUDGE_LINE).read_text(encoding="utf-8")
    post(client, with_a_change(original), "save")
    assert "その後、お加減はいかがですか。" in worker.render(NUDGE_LINE, values).text


def test_a_save_over_a_change_made_elsewhere_is_refused(
    client: FlaskClient, messages_dir: Path
) -> None:
    original = (messages_dir / NUDGE_LINE).read_text(encoding="utf-8")
    form = editor_form(client)
    (messages_dir / NUDGE_LINE).write_text(original + "\n", encoding="utf-8")  # by hand
    answer = client.post(EDITOR, data=form | {"text": with_a_change(original), "action": "save"})
    assert answer.status_code == 409
    assert "ファイルがほかの場所で変更されました" in answer.get_data(as_text=True)
    assert (messages_dir / NUDGE_LINE).read_text(encoding="utf-8") == original + "\n"


def test_a_tip_is_checked_and_saved_the_same_way(client: FlaskClient, messages_dir: Path) -> None:
    name = "tips/winter-warm-drinks.md"
    original = (messages_dir / name).read_text(encoding="utf-8")
    broken = original.replace("phases:", "phase:", 1)
    status, page = post(client, broken, "save", name=name)
    assert status == 422
    assert "unknown key &#39;phase&#39;" in page
    assert (messages_dir / name).read_text(encoding="utf-8") == original
    edited = original.rstrip("\n") + "\n"
    edited = edited.replace("。", "ね。", 1)
    status, page = post(client, edited, "save", name=name)
    assert (status, "保存しました。" in page) == (200, True)
    assert (messages_dir / name).read_text(encoding="utf-8") == edited


@pytest.mark.parametrize(
    "name",
    [
        "../config/tayori.toml",
        "cadence_nudge/../../config/tayori.toml",
        "README.md",
        "tips/README.md",
        "cadence_nudge/line.txt",
        "nowhere/line.j2",
    ],
)
def test_only_the_folders_templates_and_tips_can_be_opened(client: FlaskClient, name: str) -> None:
    assert client.get(f"/messages/edit/{name}").status_code == 404


def test_a_link_out_of_the_messages_folder_cannot_be_opened(
    client: FlaskClient, messages_dir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "secret.j2"
    outside.write_text("{{ clinic.name }}", encoding="utf-8")
    (messages_dir / "cadence_nudge" / "linked.j2").symlink_to(outside)
    assert client.get("/messages/edit/cadence_nudge/linked.j2").status_code == 404


# --- many clinics --------------------------------------------------------------------

NORTH_PASSWORD = "another clinic, another password"


def test_a_folder_clinics_desk_edits_its_own_messages(
    client: FlaskClient, desk: Runtime, messages_dir: Path, tmp_path: Path
) -> None:
    north = second_clinic(desk, tmp_path / "north")
    with transaction(north.sessions) as session:
        add_user(session, STAFF, NORTH_PASSWORD, NOW)
    north_client = create_app(desk.settings, desk, FixedClock(NOW)).test_client()
    north_client.post(
        "/desk/north/login",
        data={
            "email": STAFF,
            "password": NORTH_PASSWORD,
            "csrf_token": csrf_of(north_client, "/desk/north/login"),
        },
    )
    original = (messages_dir / NUDGE_LINE).read_text(encoding="utf-8")
    page = north_client.get(f"/desk/north{EDITOR}").get_data(as_text=True)
    base = re.search(r'name="base" value="([^"]+)"', page)
    assert base is not None
    answer = north_client.post(
        f"/desk/north{EDITOR}",
        data={
            "csrf_token": csrf_of(north_client, f"/desk/north{EDITOR}"),
            "base": base.group(1),
            "text": with_a_change(original),
            "action": "save",
        },
    )
    assert answer.location == f"/desk/north{EDITOR}"
    north_messages = tmp_path / "north" / "messages"
    assert (north_messages / NUDGE_LINE).read_text(encoding="utf-8") == with_a_change(original)
    assert (messages_dir / NUDGE_LINE).read_text(encoding="utf-8") == original
    with desk.sessions() as session:
        kept = session.scalars(select(TemplateVersion)).all()
    assert {v.clinic_id for v in kept} == {north.settings.clinic_id}
    assert "まだ保存されていません。" in client.get(EDITOR).get_data(as_text=True)


# --- in a real browser, against a real `tayori serve` ------------------------------


def site_messages(site: Site) -> Path:
    return site.runtime.settings.messages_dir


def test_edit_a_template_see_the_mistake_fix_it_save_and_restore(
    site: Site, browser: Any, screenshots: Path
) -> None:
    emptied(site.runtime, datetime.now(UTC))
    file = site_messages(site) / NUDGE_LINE
    original = file.read_text(encoding="utf-8")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        sign_in_with_browser(page, site.base)
        page.get_by_role("link", name="メッセージ").first.click()
        page.get_by_role("link", name="次回来院のおすすめ（LINE）を編集").click()
        page.wait_for_load_state()
        assert page.inner_text("h1") == "次回来院のおすすめ（LINE）"
        editor = page.get_by_label("本文", exact=True)
        assert editor.input_value() == original
        editor.fill(with_a_mistake(original))
        page.get_by_role("button", name="保存する").click()
        page.wait_for_load_state()
        alert = page.get_by_role("alert").inner_text()
        assert f"{MISTAKE_LINE}行目：{MISTAKE_SAID}" in alert
        page.screenshot(path=str(screenshots / "desk-message-mistake-desktop.png"), full_page=True)
        assert file.read_text(encoding="utf-8") == original

        page.get_by_label("本文", exact=True).fill(with_a_change(original))
        page.get_by_role("button", name="プレビュー").click()
        page.wait_for_load_state()
        assert page.get_by_role("alert").count() == 0
        assert (
            "その後、お加減はいかがですか。" in page.get_by_label("LINEのプレビュー").inner_text()
        )
        assert "件名：" in page.get_by_label("メールのプレビュー").inner_text()
        page.screenshot(path=str(screenshots / "desk-message-preview-desktop.png"), full_page=True)

        page.get_by_role("button", name="保存する").click()
        page.wait_for_load_state()
        assert "保存しました。" in page.inner_text("body")
        assert file.read_text(encoding="utf-8") == with_a_change(original)

        page.get_by_role("button", name=re.compile("の版に戻す$")).first.click()
        page.wait_for_load_state()
        assert "選んだ版に戻しました。" in page.inner_text("body")
        assert file.read_text(encoding="utf-8") == original
        assert page.get_by_label("本文", exact=True).input_value() == original
        assert fits_the_phone(page)
    finally:
        page.close()
        file.write_text(original, encoding="utf-8")


def test_the_list_and_the_editor_fit_a_phone(site: Site, browser: Any, screenshots: Path) -> None:
    emptied(site.runtime, datetime.now(UTC))
    page = browser.new_page(viewport=PHONE)
    try:
        sign_in_with_browser(page, site.base)
        page.goto(f"{site.base}/messages")
        assert fits_the_phone(page) and fits_the_width(page)
        page.screenshot(path=str(screenshots / "desk-messages-phone.png"), full_page=True)
        page.goto(f"{site.base}/messages/edit/cadence_nudge/email.j2")
        assert "件名：" in page.get_by_label("メールのプレビュー").inner_text()
        assert fits_the_phone(page) and fits_the_width(page)
        page.screenshot(path=str(screenshots / "desk-message-edit-phone.png"), full_page=True)
        editor = page.get_by_label("本文", exact=True)
        editor.fill(with_a_mistake(editor.input_value(), line=3))
        page.get_by_role("button", name="プレビュー").click()
        page.wait_for_load_state()
        assert f"3行目：{MISTAKE_SAID}" in page.get_by_role("alert").inner_text()
        assert fits_the_phone(page) and fits_the_width(page)
        page.screenshot(path=str(screenshots / "desk-message-mistake-phone.png"), full_page=True)
        page.goto(f"{site.base}/messages/edit/tips/winter-warm-drinks.md")
        assert fits_the_phone(page) and fits_the_width(page)
        page.screenshot(path=str(screenshots / "desk-tip-edit-phone.png"), full_page=True)
    finally:
        page.close()


def test_the_preview_follows_the_typing_without_a_button(
    site: Site, browser: Any, screenshots: Path
) -> None:
    emptied(site.runtime, datetime.now(UTC))
    original = (site_messages(site) / NUDGE_LINE).read_text(encoding="utf-8")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        sign_in_with_browser(page, site.base)
        page.goto(f"{site.base}{EDITOR}")
        page.get_by_label("本文", exact=True).fill(with_a_change(original))
        # Waits for the script's answer (Playwright watches the page), not for a time.
        page.locator("#results", has_text="その後、お加減").wait_for()
        page.get_by_label("本文", exact=True).fill(with_a_mistake(original))
        page.locator("#results", has_text="patient_nmae").wait_for()
        assert f"{MISTAKE_LINE}行目" in page.get_by_role("alert").inner_text()
        page.screenshot(path=str(screenshots / "desk-message-live-desktop.png"), full_page=True)
        assert page.url == f"{site.base}{EDITOR}"  # nothing was posted as a page
    finally:
        page.close()
    assert (site_messages(site) / NUDGE_LINE).read_text(encoding="utf-8") == original


def test_the_live_preview_says_when_the_session_has_ended(site: Site, browser: Any) -> None:
    emptied(site.runtime, datetime.now(UTC))
    original = (site_messages(site) / NUDGE_LINE).read_text(encoding="utf-8")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        sign_in_with_browser(page, site.base)
        page.goto(f"{site.base}{EDITOR}")
        context.clear_cookies()  # the session ends while the practitioner types
        page.get_by_label("本文", exact=True).fill(with_a_change(original))
        page.locator("#results", has_text="ログインが切れています").wait_for()
        assert page.url == f"{site.base}{EDITOR}"  # the typed text is still on the page
    finally:
        context.close()


def test_the_list_on_a_desktop(site: Site, browser: Any, screenshots: Path) -> None:
    emptied(site.runtime, datetime.now(UTC))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        sign_in_with_browser(page, site.base)
        page.goto(f"{site.base}/messages")
        assert fits_the_width(page)
        page.screenshot(path=str(screenshots / "desk-messages-desktop.png"), full_page=True)
    finally:
        page.close()


# --- the checks the editor runs, on the text being edited --------------------------


def test_the_lint_of_an_edited_text_names_the_file_and_the_line_of_the_mistake(
    repo_settings: Settings,
) -> None:
    text = with_a_mistake((ROOT / "messages" / NUDGE_LINE).read_text(encoding="utf-8"))
    problems = lint_template(repo_settings, NOW, NUDGE_LINE, text)
    path = repo_settings.messages_dir / NUDGE_LINE
    assert f"{path}:{MISTAKE_LINE}: unknown variable 'patient_nmae'" in problems[0]


def test_a_render_error_of_an_edited_text_is_at_its_line(repo_settings: Settings) -> None:
    text = "{{ clinic.name }}\n{{ 1 // 0 }}\n"
    problems = lint_template(repo_settings, NOW, NUDGE_LINE, text)
    path = repo_settings.messages_dir / NUDGE_LINE
    assert f"{path}:2: division by zero (ZeroDivisionError)" in problems


def test_the_shipped_templates_and_tips_pass_the_editors_lint(repo_settings: Settings) -> None:
    folder = repo_settings.messages_dir
    for name in template_files(folder):
        text = (folder / name).read_text(encoding="utf-8")
        assert lint_template(repo_settings, NOW, name, text) == [], name
    for name in tip_files(folder):
        assert lint_tip(folder / name, (folder / name).read_text(encoding="utf-8")) == [], name

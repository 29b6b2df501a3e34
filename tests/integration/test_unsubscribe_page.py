"""The unsubscribe page over real HTTP: a real `tayori serve` and a real database
(SQLite and PostgreSQL), driven as a browser and a mail client drive it.

One web process per database engine serves the whole module (starting one takes
about a second); each test empties the database first and makes its own patient, so
tests do not see each other's changes.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, select, update

from scheduler.core.domain import ConsentKind, DeliveryState, Reason
from scheduler.core.unsubscribe import unsubscribe_token
from scheduler.outbox.planner import plan
from scheduler.runtime import Runtime, open_runtime
from scheduler.settings import load_settings
from scheduler.store.consent import ConsentSource
from scheduler.store.db import transaction
from scheduler.store.facts import current_consent
from scheduler.store.models import (
    Base,
    ConsentChange,
    Delivery,
    Patient,
    Replan,
    new_public_id,
)
from scheduler.store.replan import mark_for_planning, patients_to_plan
from scheduler.web.app import create_app, runtime_of
from tests.conftest import DATABASES, ROOT, clinic_variables, empty_database
from tests.integration.browser import PHONE, fits_the_width
from tests.integration.channel_env import PUBLIC_URL, SECRET_KEY
from tests.integration.clinic import add_patient, visited
from tests.integration.locks import wait_until_a_lock_is_awaited
from tests.integration.web import web_process

JST = ZoneInfo("Asia/Tokyo")
BEFORE = datetime(2026, 11, 20, 12, 0, tzinfo=JST)  # when the clinic's facts are known
YEAR_END = datetime(2026, 12, 1, 10, 0, tzinfo=JST)  # the year_end newsletter's moment
CLINIC = "たより整体院"  # config/tayori.toml
NEWSLETTERS = "季節のお便り"
REMINDERS = "ご来院のおすすめ・ご予約前日のお知らせ"
ONE_CLICK = "List-Unsubscribe=One-Click"


@dataclass
class Site:
    base: str
    runtime: Runtime  # the same database, for the tests' own reads and writes


@pytest.fixture(scope="module", params=DATABASES)
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("unsubscribe")
    env = clinic_variables(empty_database(request, request.param, folder), folder) | {
        "TAYORI_PUBLIC_URL": PUBLIC_URL,
        "TAYORI_SECRET_KEY": SECRET_KEY,
    }
    runtime = open_runtime(load_settings(env))
    with web_process(env, folder / "web.log") as base:
        yield Site(base, runtime)
    runtime.close()


@dataclass
class Reader:
    """A patient who wants both kinds of message and has both planned."""

    id: int
    public_id: str


@pytest.fixture
def reader(site: Site) -> Reader:
    """The only patient in an emptied database, with a newsletter and a cadence
    follow-up planned by the planner."""
    with transaction(site.runtime.sessions) as session:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name != "clinics":  # the first is the installation's own
                session.execute(table.delete())
    with transaction(site.runtime.sessions) as session:
        patient = add_patient(session, BEFORE, email="hanako@example.jp", newsletter=True)
        visited(session, BEFORE, days_ago=30)
        reader = Reader(patient.id, patient.public_id)
    with transaction(site.runtime.sessions) as session:
        plan(session, YEAR_END, site.runtime.settings.rules, site.runtime.settings)
    assert _planned(site, reader) == {Reason.NEWSLETTER, Reason.CADENCE_FOLLOW_UP}
    return reader


# --- HTTP, as a browser and a mail client speak it --------------------------------


@dataclass
class Answer:
    status: int
    headers: Message
    body: str


def _request(request: urllib.request.Request) -> Answer:
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Answer(response.status, response.headers, response.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        with e:
            return Answer(e.code, e.headers, e.read().decode("utf-8"))


def _get(url: str) -> Answer:
    return _request(urllib.request.Request(url))


def _post_form(url: str, fields: dict[str, str]) -> Answer:
    """What a browser sends when a button of the page's form is pressed."""
    body = urlencode(fields).encode("ascii")
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    return _request(urllib.request.Request(url, data=body, headers=headers, method="POST"))


def _post_multipart(url: str, name: str, value: str) -> Answer:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        f"{value}\r\n--{boundary}--\r\n"
    ).encode("ascii")
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return _request(urllib.request.Request(url, data=body, headers=headers, method="POST"))


def _url(site: Site, public_id: str, kind: ConsentKind, key: str = SECRET_KEY) -> str:
    return f"{site.base}/unsubscribe/{unsubscribe_token(key, 'default', public_id, kind)}"


# --- what the database holds --------------------------------------------------------


def _consent(site: Site, reader: Reader) -> dict[ConsentKind, bool]:
    with site.runtime.sessions() as session:
        given = current_consent(session, [reader.id]).get(reader.id, {})
    return {kind: given.get(kind, False) for kind in ConsentKind}


def _link_changes(site: Site, reader: Reader) -> list[tuple[ConsentKind, bool]]:
    with site.runtime.sessions() as session:
        rows = session.execute(
            select(ConsentChange.kind, ConsentChange.granted)
            .where(
                ConsentChange.patient_id == reader.id,
                ConsentChange.source == ConsentSource.UNSUBSCRIBE_LINK,
            )
            .order_by(ConsentChange.id)
        )
        return [(kind, granted) for kind, granted in rows]


def _deliveries(site: Site, reader: Reader) -> dict[Reason, DeliveryState]:
    with site.runtime.sessions() as session:
        rows = session.execute(
            select(Delivery.reason, Delivery.state).where(Delivery.patient_id == reader.id)
        )
        return {reason: state for reason, state in rows}


def _planned(site: Site, reader: Reader) -> set[Reason]:
    return {r for r, s in _deliveries(site, reader).items() if s is DeliveryState.PLANNED}


BOTH_ON = {ConsentKind.REMINDERS: True, ConsentKind.NEWSLETTER: True}
NEWSLETTER_OFF = {ConsentKind.REMINDERS: True, ConsentKind.NEWSLETTER: False}
BOTH_OFF = {ConsentKind.REMINDERS: False, ConsentKind.NEWSLETTER: False}


# --- the page -------------------------------------------------------------------------


def test_the_page_names_the_clinic_and_what_stops_and_changes_nothing(
    site: Site, reader: Reader
) -> None:
    answer = _get(_url(site, reader.public_id, ConsentKind.NEWSLETTER))
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert CLINIC in answer.body
    assert f"「{NEWSLETTERS}」の配信を停止します" in answer.body
    assert '<form method="post">' in answer.body
    assert 'name="scope" value="kind"' in answer.body
    assert 'name="scope" value="all"' in answer.body  # the choice to stop everything
    assert f"「{REMINDERS}」も停止します" in answer.body
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in answer.body
    # Looking is not unsubscribing: mail clients and link scanners fetch links.
    assert _consent(site, reader) == BOTH_ON
    assert _planned(site, reader) == {Reason.NEWSLETTER, Reason.CADENCE_FOLLOW_UP}


def test_the_page_sets_no_cookie_and_allows_only_its_own_style_and_form(
    site: Site, reader: Reader
) -> None:
    url = _url(site, reader.public_id, ConsentKind.NEWSLETTER)
    for answer in (_get(url), _post_form(url, {"scope": "kind"})):
        assert answer.headers.get("Set-Cookie") is None
        policy = answer.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy
        assert "form-action 'self'" in policy
        assert "script-src" not in policy  # nothing runs: the page has no script
        assert "<script" not in answer.body
        assert "http" not in answer.body.replace(site.base, "")  # no external assets


def test_the_form_stops_newsletters_only_and_withdraws_the_planned_ones(
    site: Site, reader: Reader
) -> None:
    answer = _post_form(_url(site, reader.public_id, ConsentKind.NEWSLETTER), {"scope": "kind"})
    assert answer.status == 200
    assert f"「{NEWSLETTERS}」の配信を停止しました" in answer.body
    # How to start again: ask the clinic, or 「配信再開」 on LINE.
    assert "配信を再開したいときは" in answer.body and "「配信再開」" in answer.body
    assert "03-0000-0000" in answer.body
    assert _consent(site, reader) == NEWSLETTER_OFF
    assert _link_changes(site, reader) == [(ConsentKind.NEWSLETTER, False)]
    assert _deliveries(site, reader) == {
        Reason.NEWSLETTER: DeliveryState.WITHDRAWN,
        Reason.CADENCE_FOLLOW_UP: DeliveryState.PLANNED,
    }


def test_the_everything_choice_stops_both_kinds(site: Site, reader: Reader) -> None:
    answer = _post_form(_url(site, reader.public_id, ConsentKind.NEWSLETTER), {"scope": "all"})
    assert answer.status == 200
    assert f"「{REMINDERS}」「{NEWSLETTERS}」の配信を停止しました" in answer.body
    assert _consent(site, reader) == BOTH_OFF
    assert sorted(_link_changes(site, reader)) == [
        (ConsentKind.NEWSLETTER, False),
        (ConsentKind.REMINDERS, False),
    ]
    assert _planned(site, reader) == set()
    assert set(_deliveries(site, reader).values()) == {DeliveryState.WITHDRAWN}


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_a_mail_clients_one_click_post_stops_the_tokens_kind(
    site: Site, reader: Reader, encoding: str
) -> None:
    """RFC 8058: the mail client POSTs `List-Unsubscribe=One-Click` to the link in
    List-Unsubscribe, with no page, cookie or other context."""
    url = _url(site, reader.public_id, ConsentKind.REMINDERS)
    name, value = ONE_CLICK.split("=")
    answer = (
        _post_form(url, {name: value})
        if encoding == "urlencoded"
        else _post_multipart(url, name, value)
    )
    assert answer.status == 200
    assert _consent(site, reader) == {ConsentKind.REMINDERS: False, ConsentKind.NEWSLETTER: True}
    assert _planned(site, reader) == {Reason.NEWSLETTER}


def test_unsubscribing_twice_leaves_the_same_state_and_one_change(
    site: Site, reader: Reader
) -> None:
    url = _url(site, reader.public_id, ConsentKind.NEWSLETTER)
    first = _post_form(url, {"scope": "kind"})
    again = _post_form(url, {"scope": "kind"})
    one_click = _post_form(url, {"List-Unsubscribe": "One-Click"})
    assert first.status == again.status == one_click.status == 200
    assert first.body == again.body == one_click.body
    assert _consent(site, reader) == NEWSLETTER_OFF
    assert _link_changes(site, reader) == [(ConsentKind.NEWSLETTER, False)]


@pytest.mark.parametrize(
    "site", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_a_click_while_the_patient_is_planned_waits_and_marks_them_for_the_next_cycle(
    site: Site, reader: Reader
) -> None:
    """The click locks the patient's row, then waits to mark them until the plan
    commits; the plan meanwhile writes the patient's messages, whose foreign key
    takes a key-share lock on that row. Neither may wait for the other."""
    settings = site.runtime.settings
    with transaction(site.runtime.sessions) as session:  # to be planned afresh
        session.execute(delete(Delivery).where(Delivery.patient_id == reader.id))
        mark_for_planning(session, [reader.id])
    url = _url(site, reader.public_id, ConsentKind.REMINDERS)
    answers: list[Answer] = []
    click = threading.Thread(target=lambda: answers.append(_post_form(url, {"scope": "kind"})))
    with transaction(site.runtime.sessions) as planning:
        assert patients_to_plan(planning, YEAR_END) == [reader.id]  # its row now locked
        click.start()
        wait_until_a_lock_is_awaited(planning)
        plan(planning, YEAR_END, settings.rules, settings)
    click.join(timeout=30)
    assert [answer.status for answer in answers] == [200]
    with site.runtime.sessions() as session:
        assert session.get_one(Replan, reader.id).replan_at is None
    with transaction(site.runtime.sessions) as session:  # the next cycle
        plan(session, YEAR_END + timedelta(minutes=1), settings.rules, settings)
    assert _planned(site, reader) == {Reason.NEWSLETTER}


def test_the_page_shows_what_is_stopped_already(site: Site, reader: Reader) -> None:
    url = _url(site, reader.public_id, ConsentKind.NEWSLETTER)
    _post_form(url, {"scope": "kind"})
    page = _get(url)
    assert page.status == 200
    assert f"「{NEWSLETTERS}」の配信は、停止しています" in page.body
    assert 'value="kind"' not in page.body  # nothing left to stop of this kind
    assert 'value="all"' in page.body  # but the reminders still come
    _post_form(url, {"scope": "all"})
    page = _get(url)
    assert "<form" not in page.body
    assert "「配信再開」" in page.body


# --- refused: one answer for every token that is not a patient's ---------------------


def _flip(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


def test_a_bad_token_or_a_missing_patient_gets_one_404_with_no_hint(
    site: Site, reader: Reader
) -> None:
    token = unsubscribe_token(SECRET_KEY, "default", reader.public_id, ConsentKind.NEWSLETTER)
    payload, signature = token.split(".")
    other_key = "another-installation-key-of-32-chars!"
    refused = {
        "payload changed": f"{_flip(payload, 3)}.{signature}",
        "signature changed": f"{payload}.{_flip(signature, 3)}",
        "truncated": token[:-5],
        "made up": "bm9ib2R5.c2lnbmF0dXJl",
        "not a token": "hello",
        "another key": unsubscribe_token(
            other_key, "default", reader.public_id, ConsentKind.NEWSLETTER
        ),
        "nobody's public id": unsubscribe_token(
            SECRET_KEY, "default", new_public_id(), ConsentKind.NEWSLETTER
        ),
    }
    answers = {}
    for what, bad in refused.items():
        url = f"{site.base}/unsubscribe/{bad}"
        answers[what] = _get(url)
        answers[f"{what} (POST)"] = _post_form(url, {"scope": "all"})
    assert {what: a.status for what, a in answers.items()} == dict.fromkeys(answers, 404)
    bodies = {a.body for a in answers.values()}
    assert len(bodies) == 1  # the same page, whatever the reason
    [body] = bodies
    assert "ページが見つかりません" in body
    assert "山田" not in body and "<form" not in body
    assert not any(bad in body for bad in refused.values())
    assert _consent(site, reader) == BOTH_ON
    assert _link_changes(site, reader) == []


def test_a_forgotten_patients_token_gets_the_same_404(site: Site, reader: Reader) -> None:
    url = _url(site, reader.public_id, ConsentKind.NEWSLETTER)
    made_up = _get(f"{site.base}/unsubscribe/bm9ib2R5.c2lnbmF0dXJl")
    with transaction(site.runtime.sessions) as session:
        session.execute(
            update(Patient).where(Patient.id == reader.id).values(forgotten_at=datetime.now(UTC))
        )
    for answer in (_get(url), _post_form(url, {"scope": "kind"}), _post_form(url, {})):
        assert (answer.status, answer.body) == (404, made_up.body)
    assert _link_changes(site, reader) == []


def test_a_token_is_refused_by_an_installation_without_a_secret_key(
    site: Site, reader: Reader
) -> None:
    """Without TAYORI_SECRET_KEY no link can be ours: the page is one 404 too."""
    settings = load_settings(
        {
            "DATABASE_URL": site.runtime.settings.database_url,
            "TAYORI_CONFIG": str(ROOT / "config" / "tayori.toml"),
        }
    )
    app = create_app(settings)
    token = unsubscribe_token(SECRET_KEY, "default", reader.public_id, ConsentKind.NEWSLETTER)
    try:
        client = app.test_client()
        assert client.get(f"/unsubscribe/{token}").status_code == 404
        assert client.post(f"/unsubscribe/{token}", data={"scope": "all"}).status_code == 404
    finally:
        runtime_of(app).close()
    assert _consent(site, reader) == BOTH_ON


# --- in a real browser, at a phone's width ---------------------------------------------


def test_a_patient_stops_the_newsletter_on_a_phone_in_a_real_browser(
    site: Site, reader: Reader, browser: Any, screenshots: Path
) -> None:
    page = browser.new_page(viewport=PHONE)
    try:
        page.goto(_url(site, reader.public_id, ConsentKind.NEWSLETTER))
        assert CLINIC in page.inner_text("body")
        assert fits_the_width(page)
        page.screenshot(path=str(screenshots / "unsubscribe-page.png"), full_page=True)
        page.get_by_role("button", name=f"「{NEWSLETTERS}」を停止する").click()
        page.wait_for_load_state()
        assert "配信を停止しました" in page.inner_text("h1")
        assert fits_the_width(page)
        page.screenshot(path=str(screenshots / "unsubscribe-done.png"), full_page=True)
    finally:
        page.close()
    assert _consent(site, reader) == {ConsentKind.REMINDERS: True, ConsentKind.NEWSLETTER: False}

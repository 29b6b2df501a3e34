"""What the desk's tests share: the staff account, signing in (with the Flask test
client, or in a real browser), and the phone-width check. The fixtures that open a
desk (`desk_env`, `desk_runtime`, `site`) are in `tests/integration/conftest.py`."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from argon2 import PasswordHasher
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from scheduler.commands import main
from scheduler.outbox import transitions
from scheduler.outbox.transitions import Claimed
from scheduler.runtime import Clinics, Runtime, open_runtime
from scheduler.settings import load_settings
from scheduler.store.db import reading, transaction
from scheduler.store.desk import Role, find_user, session_stamp
from scheduler.store.models import Base, DeskUser
from scheduler.web.app import runtime_of
from scheduler.web.desk import open_session
from tests.conftest import ROOT, empty_database
from tests.integration.channel_env import SECRET_KEY
from tests.integration.web import web_process

PASSWORD = "correct horse battery staple"
STAFF = "reception@clinic.example"
JST = ZoneInfo("Asia/Tokyo")
NOW = datetime(2026, 11, 25, 9, 30, tzinfo=JST)  # a Wednesday, the send window open
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(client: FlaskClient, page: str = "/login") -> str:
    """The session's CSRF token, as `page` carries it in its forms."""
    match = CSRF.search(client.get(page).get_data(as_text=True))
    assert match is not None, f"no CSRF token on {page}"
    return match.group(1)


def text_of(html: str) -> str:
    """A page's text, tags dropped and spaces squeezed, for comparing what it says."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def sign_in(
    client: FlaskClient, password: str = PASSWORD, address: str = "192.0.2.10"
) -> TestResponse:
    """Sign in through the form, as a person does: for the tests of signing in."""
    return client.post(
        "/login",
        data={"email": STAFF, "password": password, "csrf_token": csrf_of(client)},
        environ_base={"REMOTE_ADDR": address},
    )


def signed_in(client: FlaskClient) -> FlaskClient:
    """`client` with the session a sign-in of the staff account leaves, without the
    form: checking the password costs Argon2 a fifth of a second by design, and most
    desk tests are about a page, not about signing in (`sign_in` is)."""
    runtime = runtime_of(client.application)
    with reading(runtime.sessions) as session:
        user = find_user(session, STAFF)
        assert user is not None, "no staff account: see add_staff_account"
        user_id, stamp = user.id, session_stamp(user)
    with client.session_transaction() as cookie:
        open_session(cookie, runtime.settings.clinic_id, user_id, stamp)
    return client


@dataclass
class Site:
    """A real `tayori serve`, and a runtime on its database for the tests' own reads
    and writes. The web process runs on the real clock."""

    base: str
    runtime: Runtime


@contextmanager
def serving_desk(request: Any, folder: Path, config: Path) -> Iterator[Site]:
    """A real `tayori serve` of one clinic with the settings file `config`, on
    SQLite, with a copy of the messages in `folder` (the desk's editor writes them)."""
    shutil.copytree(ROOT / "messages", folder / "messages")
    env = {
        "DATABASE_URL": empty_database(request, "sqlite", folder),
        "TAYORI_CONFIG": str(config),
        "TAYORI_MESSAGES_DIR": str(folder / "messages"),
        "TAYORI_OUTBOX_DIR": str(folder / "outbox"),
        # Plain http, as the browser reaches the test server: an https public URL
        # would make the session cookie Secure, which a browser keeps only over https.
        "TAYORI_PUBLIC_URL": "http://127.0.0.1",
        "TAYORI_SECRET_KEY": SECRET_KEY,
    }
    runtime = open_runtime(load_settings(env))
    try:
        with web_process(env, folder / "web.log") as base:
            yield Site(base, runtime)
    finally:
        runtime.close()


@cache
def _password_hash(password: str) -> str:
    # Argon2 spends a fifth of a second by design: once per run, not per test.
    return PasswordHasher().hash(password)


def add_account(session: Session, email: str, password: str, role: Role, now: datetime) -> DeskUser:
    """An account as `tayori user add` would make it; `add_user` itself is tested on
    its own (test_desk, test_desk_accounts)."""
    user = DeskUser(email=email, password_hash=_password_hash(password), role=role, created_at=now)
    session.add(user)
    session.flush()
    return user


def add_staff_account(session: Session, now: datetime) -> DeskUser:
    """The staff account (the clinic's owner)."""
    return add_account(session, STAFF, PASSWORD, Role.OWNER, now)


def claim_due(session: Session, at: datetime, limit: int = 10) -> list[Claimed]:
    """What a worker would claim at `at`: for a test to end it as sent or failed."""
    return transitions.claim(
        session, now=at, db_now=at, lease=timedelta(minutes=5), limit=limit, max_attempts=5
    ).claimed


def second_clinic(
    runtime: Runtime, folder: Path, files: Iterable[str] = ("tayori.toml",)
) -> Runtime:
    """Another clinic of the installation, `north`, with these of the shipped settings
    files in `folder`."""
    folder.mkdir()
    for name in files:
        shutil.copy(ROOT / "config" / name, folder / name)
    assert main(["clinic", "add", "north", "--config", str(folder)]) == 0
    north = Clinics(runtime, os.environ).find("north")
    assert north is not None
    return north


def emptied(runtime: Runtime, now: datetime) -> None:
    """The site's clinic emptied of everything but itself, with the staff account:
    the site is shared by the tests of a module, each starts from here."""
    with transaction(runtime.sessions) as session:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name != "clinics":  # the first is the installation's own
                session.execute(table.delete())
    with transaction(runtime.sessions) as session:
        add_staff_account(session, now)


def sign_in_with_browser(page: Any, base: str) -> None:
    """Sign in as the staff account on the site at `base`, as a person would."""
    page.goto(f"{base}/login")
    page.get_by_label("メールアドレス").fill(STAFF)
    page.get_by_label("パスワード").fill(PASSWORD)
    page.get_by_role("button", name="ログイン").click()
    page.wait_for_load_state()


def fits_the_phone(page: Any) -> bool:
    """No horizontal scrolling: the document is no wider than the viewport."""
    return bool(
        page.evaluate(
            "document.scrollingElement.scrollWidth <= document.documentElement.clientWidth"
        )
    )

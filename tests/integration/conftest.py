"""Fixtures of the integration tests that more than one module needs: a desk, and a
place for the browser tests' screenshots."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from scheduler.clock import FixedClock
from scheduler.runtime import Runtime, open_runtime
from scheduler.settings import load_settings
from scheduler.store.db import transaction
from scheduler.web.app import create_app
from tests.conftest import ROOT
from tests.integration.channel_env import PUBLIC_URL, SECRET_KEY
from tests.integration.desk import NOW, Site, add_staff_account, serving_desk

# The browser tests' screenshots are the run's artefacts: kept after it, for a person
# to look at the pages (CI can publish the folder).
SCREENSHOTS = Path(os.environ.get("TAYORI_SCREENSHOTS", ROOT / "var" / "screenshots"))


@pytest.fixture
def desk_env(clinic_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A clinic whose desk is on: a public URL and a secret key."""
    env = {**clinic_env, "TAYORI_PUBLIC_URL": PUBLIC_URL, "TAYORI_SECRET_KEY": SECRET_KEY}
    for key in ("TAYORI_PUBLIC_URL", "TAYORI_SECRET_KEY"):
        monkeypatch.setenv(key, env[key])
    return env


@pytest.fixture
def desk_runtime(desk_env: dict[str, str]) -> Iterator[Runtime]:
    """The clinic of `desk_env`, with the staff account."""
    opened = open_runtime(load_settings(desk_env))
    with transaction(opened.sessions) as session:
        add_staff_account(session, NOW)
    yield opened
    opened.close()


@pytest.fixture
def clock() -> FixedClock:
    """The desk's clock, pinned at NOW (tests move it)."""
    return FixedClock(NOW)


@pytest.fixture
def client(desk_runtime: Runtime, clock: FixedClock) -> FlaskClient:
    """A browser of the desk of `desk_runtime`, signed in as nobody yet."""
    return create_app(desk_runtime.settings, desk_runtime, clock).test_client()


@pytest.fixture(scope="module")
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """A real `tayori serve` of one clinic, for a module's browser tests.

    On SQLite only: a browser test checks what a person sees and does on the pages;
    what the pages read and write is checked on both databases by each page's tests
    with Flask's client, which cost a fraction of a browser's (`make test` must stay
    within five minutes on two cores)."""
    folder = tmp_path_factory.mktemp("desk")
    with serving_desk(request, folder, ROOT / "config" / "tayori.toml") as served:
        yield served


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Path:
    """This test's folder of screenshots, emptied: SCREENSHOTS/<module>/<test>/."""
    test = re.sub(r"[^\w.-]+", "_", request.node.name)
    folder = SCREENSHOTS / request.node.module.__name__.rpartition(".")[2] / test
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder

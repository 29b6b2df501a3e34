"""The web process itself: it starts as `tayori serve`, answers its health check,
and every response carries strict security headers."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.commands import main
from scheduler.settings import load_settings
from scheduler.web.app import create_app
from tests.integration.web import web_process


@pytest.fixture
def web(clinic_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    assert main(["db", "upgrade"]) == 0
    with web_process(clinic_env, tmp_path / "web.log") as base:
        yield base


def test_the_health_check_answers_200_while_the_database_answers(web: str) -> None:
    with urllib.request.urlopen(f"{web}/healthz") as response:
        assert response.status == 200
        assert json.load(response) == {"status": "ok", "database": "ok"}


def test_every_response_carries_strict_security_headers(web: str) -> None:
    with urllib.request.urlopen(f"{web}/healthz") as response:
        headers = response.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'none'" in headers["Content-Security-Policy"]


def test_the_health_check_answers_503_when_the_database_does_not(
    clinic_env: dict[str, str],
) -> None:
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=1"
    settings = load_settings({**clinic_env, "DATABASE_URL": unreachable})
    response = create_app(settings).test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "database": "unreachable"}

"""The web process itself: it starts as `tayori serve`, answers its health check,
and every response carries strict security headers."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from scheduler.clock import FixedClock, SystemClock
from scheduler.runtime import Runtime
from scheduler.settings import load_settings
from scheduler.web.app import create_app
from scheduler.worker import Worker
from tests.integration.web import web_process

NOW = datetime(2026, 11, 25, 1, 30, tzinfo=UTC)


@pytest.fixture
def web(clinic_env: dict[str, str], runtime: Runtime, tmp_path: Path) -> Iterator[str]:
    """`tayori serve`, beside a worker that has just completed a cycle."""
    Worker([runtime], SystemClock()).run_once()
    with web_process(clinic_env, tmp_path / "web.log") as base:
        yield base


def _app_at(runtime: Runtime, moment: datetime) -> FlaskClient:
    return create_app(runtime.settings, runtime, FixedClock(moment)).test_client()


def test_the_health_check_answers_200_while_the_database_answers_and_a_worker_cycles(
    web: str,
) -> None:
    with urllib.request.urlopen(f"{web}/healthz") as response:
        assert response.status == 200
        assert json.load(response) == {"status": "ok", "database": "ok", "worker": "ok"}


def test_the_web_process_serves_its_metrics_in_prometheus_text_format(web: str) -> None:
    with urllib.request.urlopen(f"{web}/metrics") as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        families = {f.name for f in text_string_to_metric_families(response.read().decode())}
    assert {"tayori_deliveries", "tayori_worker_last_cycle_timestamp_seconds"} <= families


def test_the_health_check_answers_503_before_any_worker_has_completed_a_cycle(
    runtime: Runtime,
) -> None:
    response = _app_at(runtime, NOW).get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {
        "status": "unavailable",
        "database": "ok",
        "worker": "no cycle yet",
    }


def test_the_health_check_answers_503_when_no_worker_has_completed_a_cycle_for_5_minutes(
    runtime: Runtime,
) -> None:
    Worker([runtime], FixedClock(NOW)).run_once()

    response = _app_at(runtime, NOW + timedelta(minutes=5, seconds=1)).get("/healthz")
    assert response.status_code == 503
    assert response.get_json() == {
        "status": "unavailable",
        "database": "ok",
        "worker": "no cycle since 2026-11-25T01:30:00+00:00",
    }


def test_the_health_check_answers_200_while_the_last_cycle_is_at_most_5_minutes_old(
    runtime: Runtime,
) -> None:
    Worker([runtime], FixedClock(NOW)).run_once()

    assert _app_at(runtime, NOW + timedelta(minutes=5)).get("/healthz").status_code == 200


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

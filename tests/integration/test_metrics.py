"""GET /metrics: the outbox, LINE's quota, the workers' cycles and the webhook inbox,
in Prometheus's text format, read from the database at each scrape."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from scheduler.clock import FixedClock
from scheduler.core.quota import month_of
from scheduler.outbox.budget import open_month, record_reading
from scheduler.outbox.planner import plan
from scheduler.runtime import Runtime
from scheduler.store import inbox
from scheduler.store.db import transaction
from scheduler.store.heartbeats import record_cycle
from scheduler.store.models import WebhookEvent
from scheduler.web.app import create_app
from tests.integration.clinic import add_appointment, add_patient, visited
from tests.integration.dispatching import NUDGE_TIME, PLANNED_AT, nudged_patients
from tests.integration.line_webhook import follow, new_event_id, new_user_id, unfollow

CLINIC = "default"
TOKEN = "a-token-for-prometheus"


def _scrape(runtime: Runtime, now: datetime, **headers: str) -> str:
    client = create_app(runtime.settings, runtime, FixedClock(now)).test_client()
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.content_type.startswith("text/plain; version=")
    return response.text


def _values(text: str, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """The samples of the metric `name`, by the values of `labels` (clinic first
    unless named)."""
    labels = labels or ("clinic",)
    return {
        tuple(sample.labels[label] for label in labels): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def _a_small_clinic(runtime: Runtime) -> None:
    """Two patients nudged by LINE and one who cannot be reached, all due at
    NUDGE_TIME, and a reminder of an appointment three days later."""
    nudged_patients(runtime, 2)
    with transaction(runtime.sessions) as session:
        add_patient(session, PLANNED_AT, "NOCONTACT", line_user_id=None)
        visited(session, PLANNED_AT, days_ago=1, external_id="NOCONTACT")
        add_patient(session, PLANNED_AT, "BOOKED")
        add_appointment(session, PLANNED_AT, NUDGE_TIME + timedelta(days=3), external_id="BOOKED")
        plan(session, PLANNED_AT, runtime.settings.rules)


def test_deliveries_are_counted_by_clinic_state_reason_and_channel(runtime: Runtime) -> None:
    _a_small_clinic(runtime)
    runtime.dispatcher.dispatch_due(NUDGE_TIME)

    assert _values(
        _scrape(runtime, NUDGE_TIME), "tayori_deliveries", "clinic", "state", "reason", "channel"
    ) == {
        (CLINIC, "sent", "cadence_nudge", "line"): 2,
        (CLINIC, "skipped", "cadence_nudge", "none"): 1,
        # Planned with the nudges, for the days after them.
        (CLINIC, "planned", "cadence_follow_up", "line"): 2,
        (CLINIC, "planned", "cadence_follow_up", "none"): 1,
        (CLINIC, "planned", "appointment_reminder", "line"): 1,
    }


def test_the_oldest_due_delivery_is_aged_by_how_long_it_has_waited_unsent(
    runtime: Runtime,
) -> None:
    _a_small_clinic(runtime)

    text = _scrape(runtime, NUDGE_TIME + timedelta(seconds=90))
    assert _values(text, "tayori_oldest_due_delivery_age_seconds") == {(CLINIC,): 90}


def test_with_nothing_due_the_oldest_due_age_is_zero(runtime: Runtime) -> None:
    _a_small_clinic(runtime)
    runtime.dispatcher.dispatch_due(NUDGE_TIME)

    text = _scrape(runtime, NUDGE_TIME + timedelta(seconds=90))
    assert _values(text, "tayori_oldest_due_delivery_age_seconds") == {(CLINIC,): 0}


def test_line_quota_used_this_month_and_its_limit(runtime: Runtime) -> None:
    _a_small_clinic(runtime)
    runtime.dispatcher.dispatch_due(NUDGE_TIME)

    text = _scrape(runtime, NUDGE_TIME)
    assert _values(text, "tayori_line_quota_used_messages") == {(CLINIC,): 2}
    assert _values(text, "tayori_line_quota_limit_messages") == {(CLINIC,): 200}


def test_line_quota_is_read_as_line_last_reported_it(runtime: Runtime) -> None:
    tz = runtime.settings.timezone
    with transaction(runtime.sessions) as session:
        month = open_month(session, NUDGE_TIME, tz, 200)
        record_reading(session, month, 1000, 321, NUDGE_TIME)

    text = _scrape(runtime, NUDGE_TIME)
    assert _values(text, "tayori_line_quota_used_messages") == {(CLINIC,): 321}
    assert _values(text, "tayori_line_quota_limit_messages") == {(CLINIC,): 1000}


def test_a_line_plan_without_a_monthly_limit_has_an_infinite_limit(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        open_month(session, NUDGE_TIME, runtime.settings.timezone, 200)
        record_reading(
            session, month_of(NUDGE_TIME, runtime.settings.timezone), None, 5, NUDGE_TIME
        )

    text = _scrape(runtime, NUDGE_TIME)
    assert _values(text, "tayori_line_quota_limit_messages") == {(CLINIC,): math.inf}


def test_each_workers_last_cycle_is_given_with_its_time_and_duration(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        record_cycle(session, "host-a:10", NUDGE_TIME - timedelta(seconds=30), 1.25)
        record_cycle(session, "host-b:20", NUDGE_TIME, 0.5)

    text = _scrape(runtime, NUDGE_TIME)
    assert _values(text, "tayori_worker_last_cycle_duration_seconds", "worker") == {
        ("host-a:10",): 1.25,
        ("host-b:20",): 0.5,
    }
    assert _values(text, "tayori_worker_last_cycle_timestamp_seconds", "worker") == {
        ("host-a:10",): NUDGE_TIME.timestamp() - 30,
        ("host-b:20",): NUDGE_TIME.timestamp(),
    }


def test_webhook_events_are_counted_by_type_and_outcome(runtime: Runtime) -> None:
    user = new_user_id()
    with transaction(runtime.sessions) as session:
        inbox.store(session, [follow(user, "a-reply-token"), unfollow(user)], NUDGE_TIME)
        # What no code of ours can read: its processing fails every time.
        session.add(
            WebhookEvent(
                id=new_event_id(),
                event_type="message",
                body="{not json",
                received_at=NUDGE_TIME,
                attempts=0,
            )
        )
    for cycle in range(inbox.MAX_ATTEMPTS):
        runtime.events.process_pending(NUDGE_TIME + timedelta(minutes=cycle))
    with transaction(runtime.sessions) as session:
        inbox.store(session, [follow(new_user_id(), "another-reply-token")], NUDGE_TIME)

    assert _values(
        _scrape(runtime, NUDGE_TIME), "tayori_webhook_events", "clinic", "type", "outcome"
    ) == {
        (CLINIC, "follow", "processed"): 1,
        (CLINIC, "follow", "pending"): 1,
        (CLINIC, "unfollow", "processed"): 1,
        (CLINIC, "message", "failed"): 1,
    }


def test_the_metrics_name_no_patient(runtime: Runtime) -> None:
    _a_small_clinic(runtime)
    runtime.dispatcher.dispatch_due(NUDGE_TIME)

    text = _scrape(runtime, NUDGE_TIME)
    for private in ("山田", "NOCONTACT", "BOOKED", "P1", "U0123456789abcdef"):
        assert private not in text


def _guarded(runtime: Runtime) -> Runtime:
    return replace(runtime, settings=replace(runtime.settings, metrics_token=TOKEN))


def test_with_a_token_set_the_metrics_answer_a_request_bearing_it(runtime: Runtime) -> None:
    text = _scrape(_guarded(runtime), NUDGE_TIME, Authorization=f"Bearer {TOKEN}")
    assert "tayori_deliveries" in text


def test_with_a_token_set_the_metrics_refuse_a_request_without_it(runtime: Runtime) -> None:
    client = create_app(runtime.settings, _guarded(runtime), FixedClock(NUDGE_TIME)).test_client()
    for headers in ({}, {"Authorization": "Bearer a-wrong-token"}, {"Authorization": TOKEN}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "tayori" not in response.text

"""A patient message's idempotency key, read back into what it names (the desk's
Upcoming page holds messages and sends copies by their keys)."""

from __future__ import annotations

from datetime import date

import pytest

from scheduler.core.domain import Reason, idempotency_key
from scheduler.outbox.manual import MessageKey, parse_key


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        pytest.param(
            idempotency_key(Reason.CADENCE_NUDGE, "2026-11-22", 12),
            MessageKey(Reason.CADENCE_NUDGE, 12),
            id="nudge",
        ),
        pytest.param(
            idempotency_key(Reason.APPOINTMENT_REMINDER, "a7", 3),
            MessageKey(Reason.APPOINTMENT_REMINDER, 3, appointment_id=7),
            id="reminder",
        ),
        pytest.param(
            idempotency_key(Reason.NEWSLETTER, "year-end:2026-12-01", 5),
            MessageKey(
                Reason.NEWSLETTER, 5, campaign_id="year-end", campaign_day=date(2026, 12, 1)
            ),
            id="newsletter",
        ),
    ],
)
def test_a_key_names_its_reason_patient_and_occurrence(key: str, expected: MessageKey) -> None:
    assert parse_key(key) == expected


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("daily_digest:2026-11-25:line", id="the-clinics-digest"),
        pytest.param("nonsense", id="no-parts"),
        pytest.param("cadence_nudge::3", id="no-occurrence"),
        pytest.param("cadence_nudge:2026-11-22:P001", id="an-external-id"),
        pytest.param("appointment_reminder:7:3", id="no-appointment"),
        pytest.param("newsletter:year-end:someday:5", id="no-campaign-day"),
        pytest.param("cadence_nudge:2026-11-22:" + "9" * 19, id="a-patient-id-too-long"),
        pytest.param("appointment_reminder:a" + "9" * 19 + ":3", id="an-appointment-id-too-long"),
    ],
)
def test_anything_else_is_not_a_patients_message(key: str) -> None:
    with pytest.raises(ValueError):
        parse_key(key)

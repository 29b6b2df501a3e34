"""Builders for integration tests: facts go in through the importer's own save
functions, the same path a CSV import takes."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from scheduler.core.domain import AppointmentStatus, ChannelName, Phase
from scheduler.store.importer import AppointmentRow, PatientRow, save_appointments, save_patients
from scheduler.store.models import Patient
from scheduler.store.patients import find_patient

LINE_ID = "U" + "0123456789abcdef" * 2


def add_patient(
    session: Session,
    now: datetime,
    external_id: str = "P1",
    phase: Phase | None = Phase.ACUTE,
    *,
    name: str = "山田 花子",
    email: str | None = None,
    line_user_id: str | None = LINE_ID,
    preferred: ChannelName = ChannelName.LINE,
    reminders: bool = True,
    newsletter: bool = False,
) -> Patient:
    row = PatientRow(
        1, external_id, name, phase, email, line_user_id, preferred, reminders, newsletter
    )
    save_patients(session, [row], now)
    session.flush()
    patient = find_patient(session, external_id)
    assert patient is not None
    return patient


def add_appointment(
    session: Session,
    now: datetime,
    starts_at: datetime,
    status: AppointmentStatus = AppointmentStatus.BOOKED,
    external_id: str = "P1",
) -> None:
    save_appointments(
        session, Path("test.csv"), [AppointmentRow(1, external_id, starts_at, status)], now
    )
    session.flush()


def visited(session: Session, now: datetime, days_ago: int, external_id: str = "P1") -> None:
    """A visit `days_ago` days before `now`, at the same time of day."""
    add_appointment(
        session, now, now - timedelta(days=days_ago), AppointmentStatus.VISITED, external_id
    )

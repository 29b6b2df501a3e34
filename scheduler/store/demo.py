"""The demo clinic in `config/demo/` (beside the settings file): its patients, and
visits dated relative to today so a newcomer's first run has something due.

`appointments.csv` there has the columns `external_id,days_from_today,time,status`;
each row becomes an ordinary appointment and goes through the normal import.
"""

from __future__ import annotations

import csv
from datetime import datetime, time, timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from scheduler.core.config import Rules
from scheduler.core.domain import AppointmentStatus
from scheduler.core.window import at_local, local_date
from scheduler.store.importer import (
    AppointmentRow,
    ImportResult,
    read_patients,
    save_appointments,
    save_patients,
)


def demo_appointments(path: Path, now: datetime, rules: Rules) -> list[AppointmentRow]:
    today = local_date(now, rules.timezone)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        return [
            AppointmentRow(
                line=reader.line_num,
                external_id=row["external_id"],
                starts_at=at_local(
                    today + timedelta(days=int(row["days_from_today"])),
                    time.fromisoformat(row["time"]),
                    rules.timezone,
                ),
                status=AppointmentStatus(row["status"]),
            )
            for row in reader
        ]


def load_demo(
    session: Session, now: datetime, rules: Rules, directory: Path
) -> tuple[ImportResult, ImportResult]:
    patients_path = directory / "patients.csv"
    patients = save_patients(session, read_patients(patients_path), now, "demo", path=patients_path)
    appointments_path = directory / "appointments.csv"
    appointments = save_appointments(
        session, appointments_path, demo_appointments(appointments_path, now, rules), now
    )
    return patients, appointments

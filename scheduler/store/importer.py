"""CSV import of patients and appointments.

A file is checked whole before anything is written: one bad row and nothing is
imported, and every bad row is reported as `FILE:LINE: column: problem`.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.clock import parse_moment
from scheduler.core.domain import (
    EMAIL_ADDRESS,
    LINE_USER_ID,
    AppointmentStatus,
    ChannelName,
    ConsentKind,
    Phase,
)
from scheduler.store.facts import current_consent
from scheduler.store.models import Appointment, ConsentChange, Patient
from scheduler.store.patients import record_cadence

PATIENT_COLUMNS = (
    "external_id",
    "name",
    "phase",
    "email",
    "line_user_id",
    "preferred_channel",
    "reminders_opt_in",
    "newsletter_opt_in",
)
# Optional: the patient's own cadence (whole days, 1–90; an empty cell means the
# phase default). A file without these columns leaves each patient's as it is.
PATIENT_CADENCE_COLUMNS = ("nudge_after_days", "follow_up_days")
APPOINTMENT_COLUMNS = ("external_id", "starts_at", "status")


class ImportRejected(Exception):
    """The file was refused; `problems` lists every bad row."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Keep(Enum):
    """An optional column the file does not have: keep what the patient has."""

    KEEP = "keep"


@dataclass(frozen=True)
class PatientRow:
    line: int
    external_id: str
    name: str
    phase: Phase | None
    email: str | None
    line_user_id: str | None
    preferred_channel: ChannelName
    reminders_opt_in: bool
    newsletter_opt_in: bool
    nudge_after_days: int | Keep | None = Keep.KEEP
    follow_up_days: int | Keep | None = Keep.KEEP


@dataclass(frozen=True)
class AppointmentRow:
    line: int
    external_id: str
    starts_at: datetime
    status: AppointmentStatus


@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int
    unchanged: int


class _Invalid(ValueError):
    pass


E = TypeVar("E", Phase, ChannelName, AppointmentStatus)
T = TypeVar("T")


def _choice(enum: type[E]) -> Callable[[str], E]:
    def parse(value: str) -> E:
        try:
            return enum(value.strip().lower())
        except ValueError:
            allowed = "|".join(m.value for m in enum)
            raise _Invalid(f"expected one of {allowed}, got {value!r}") from None

    return parse


def _yes_no(value: str) -> bool:
    answer = value.strip().lower()
    if answer not in ("yes", "no"):
        raise _Invalid(f"expected yes or no, got {value!r}")
    return answer == "yes"


def _required(value: str) -> str:
    if not value.strip():
        raise _Invalid("must not be empty")
    return value.strip()


def _optional(pattern: re.Pattern[str], what: str) -> Callable[[str], str | None]:
    def parse(value: str) -> str | None:
        value = value.strip()
        if not value:
            return None
        if not pattern.match(value):
            raise _Invalid(f"expected {what}, got {value!r}")
        return value

    return parse


_phase = _choice(Phase)
_channel = _choice(ChannelName)
_status = _choice(AppointmentStatus)
_email = _optional(EMAIL_ADDRESS, "an email address")
_line_user_id = _optional(LINE_USER_ID, "a LINE user id (U followed by 32 hex digits)")


def _rows(
    path: Path, columns: tuple[str, ...], optional: tuple[str, ...] = ()
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row) from a UTF-8 CSV (a BOM is allowed)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImportRejected([f"{path}: cannot read: {e.strerror}"]) from None
    # Decoded whole, so a byte that is not UTF-8 is reported on its own line (a text
    # stream decodes in chunks and would name the line where its chunk began).
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ImportRejected(
            [f'{path}:{line}: not UTF-8 text (in Excel, save as "CSV UTF-8")']
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in columns if c not in header]
    unknown = [c for c in header if c not in columns and c not in optional]
    if missing or unknown:
        problems = [f"{path}:1: {c}: missing column" for c in missing]
        problems += [f"{path}:1: {c}: unknown column" for c in unknown]
        raise ImportRejected(problems)
    reader.fieldnames = header
    try:
        for row in reader:
            wrong_size = None in row or any(v is None for v in row.values())
            # An empty dict tells the caller the row has the wrong number of cells.
            yield reader.line_num, {} if wrong_size else row
    except csv.Error as e:
        raise ImportRejected([f"{path}:{reader.line_num}: {e}"]) from None


class _RowReader:
    """Reads the cells of one row, collecting every problem instead of stopping."""

    def __init__(self, path: Path, line: int, row: dict[str, str], problems: list[str]) -> None:
        self.path, self.line, self.row, self.problems = path, line, row, problems
        self.ok = True

    def cell(self, column: str, parse: Callable[[str], T]) -> T | None:
        try:
            return parse(self.row[column])
        except _Invalid as e:
            self.problems.append(f"{self.path}:{self.line}: {column}: {e}")
            self.ok = False
            return None


def _cadence_days(value: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not value.isdigit() or not 1 <= int(value) <= 90:
        raise _Invalid(f"expected a whole number of days from 1 to 90, or empty, got {value!r}")
    return int(value)


def read_patients(path: Path) -> list[PatientRow]:
    problems: list[str] = []
    rows: list[PatientRow] = []
    first_line: dict[str, int] = {}
    for line, raw in _rows(path, PATIENT_COLUMNS, PATIENT_CADENCE_COLUMNS):
        if not raw:
            problems.append(f"{path}:{line}: row: wrong number of cells")
            continue
        r = _RowReader(path, line, raw, problems)
        external_id = r.cell("external_id", _required)
        name = r.cell("name", _required)
        phase = r.cell("phase", lambda v: _phase(v) if v.strip() else None)
        email = r.cell("email", _email)
        line_user_id = r.cell("line_user_id", _line_user_id)
        preferred = r.cell("preferred_channel", _channel)
        reminders = r.cell("reminders_opt_in", _yes_no)
        newsletter = r.cell("newsletter_opt_in", _yes_no)
        own_cadence: dict[str, int | Keep | None] = {
            column: r.cell(column, _cadence_days) if column in raw else Keep.KEEP
            for column in PATIENT_CADENCE_COLUMNS
        }
        if external_id is not None:
            if external_id in first_line:
                problems.append(
                    f"{path}:{line}: external_id: {external_id!r} already on line "
                    f"{first_line[external_id]}"
                )
                r.ok = False
            first_line.setdefault(external_id, line)
        if r.ok:
            assert external_id and name and preferred is not None
            assert reminders is not None and newsletter is not None
            rows.append(
                PatientRow(
                    line,
                    external_id,
                    name,
                    phase,
                    email,
                    line_user_id,
                    preferred,
                    reminders,
                    newsletter,
                    own_cadence["nudge_after_days"],
                    own_cadence["follow_up_days"],
                )
            )
    if problems:
        raise ImportRejected(problems)
    return rows


def read_appointments(
    path: Path, tz: ZoneInfo, known_patients: Container[str] | None = None
) -> list[AppointmentRow]:
    """Check an appointments file; with `known_patients`, unknown patients are listed
    together with every other bad row."""
    problems: list[str] = []
    rows: list[AppointmentRow] = []
    first_line: dict[tuple[str, datetime], int] = {}

    def starts_at(value: str) -> datetime:
        try:
            return parse_moment(value, tz, require_time=True)
        except ValueError as e:
            raise _Invalid(str(e)) from None

    for line, raw in _rows(path, APPOINTMENT_COLUMNS):
        if not raw:
            problems.append(f"{path}:{line}: row: wrong number of cells")
            continue
        r = _RowReader(path, line, raw, problems)
        external_id = r.cell("external_id", _required)
        moment = r.cell("starts_at", starts_at)
        status = r.cell("status", _status)
        if external_id and known_patients is not None and external_id not in known_patients:
            problems.append(_unknown_patient(path, line, external_id))
            r.ok = False
        if external_id is not None and moment is not None:
            key = (external_id, moment)
            if key in first_line:
                problems.append(
                    f"{path}:{line}: starts_at: same patient and time as line {first_line[key]}"
                )
                r.ok = False
            first_line.setdefault(key, line)
        if r.ok:
            assert external_id and moment and status
            rows.append(AppointmentRow(line, external_id, moment, status))
    if problems:
        raise ImportRejected(problems)
    return rows


def _unknown_patient(path: Path, line: int, external_id: str) -> str:
    return f"{path}:{line}: external_id: no patient {external_id!r} (import patients first)"


def save_patients(
    session: Session,
    rows: Iterable[PatientRow],
    now: datetime,
    source: str = "import",
    progress: Callable[[Iterable[PatientRow]], Iterable[PatientRow]] = lambda rows: rows,
    *,
    path: Path | None = None,
) -> ImportResult:
    """Upsert patients by external_id; a consent that changed is appended to its history.

    A row for a patient who was forgotten (`tayori forget`) refuses the file, naming
    the row: importing it would bring back what the patient asked to be erased."""
    rows = list(rows)
    known = {
        p.external_id: p
        for p in session.scalars(
            select(Patient).where(Patient.external_id.in_([r.external_id for r in rows]))
        )
    }
    forgotten = [
        f"{path or 'patients'}:{row.line}: external_id: patient {row.external_id!r} was "
        "forgotten at their request (tayori forget) and is not imported again: remove the row"
        for row in rows
        if row.external_id in known and known[row.external_id].forgotten_at is not None
    ]
    if forgotten:
        raise ImportRejected(forgotten)
    consent = current_consent(session, [p.id for p in known.values()])
    created = updated = 0
    for row in progress(rows):
        patient = known.get(row.external_id)
        is_new = patient is None
        contact = {
            "name": row.name,
            "email": row.email,
            "line_user_id": row.line_user_id,
            "preferred_channel": row.preferred_channel,
        }
        if patient is None:
            patient = Patient(
                external_id=row.external_id, created_at=now, updated_at=now, **contact
            )
            session.add(patient)
            session.flush()
        else:
            if patient.email != row.email:
                patient.email_unusable_reason = None  # a new address gets a fresh start
            if patient.line_user_id != row.line_user_id:
                patient.line_unusable_reason = None
        changed = any(getattr(patient, k) != v for k, v in contact.items())
        for key, value in contact.items():
            setattr(patient, key, value)
        changed |= record_cadence(
            session,
            patient,
            now,
            source,
            phase=row.phase,
            nudge_after_days=_kept(row.nudge_after_days, patient.nudge_after_days),
            follow_up_days=_kept(row.follow_up_days, patient.follow_up_days),
            is_new=is_new,
        )
        wanted = {
            ConsentKind.REMINDERS: row.reminders_opt_in,
            ConsentKind.NEWSLETTER: row.newsletter_opt_in,
        }
        for kind, granted in wanted.items():
            if consent.get(patient.id, {}).get(kind) != granted:
                session.add(
                    ConsentChange(
                        patient_id=patient.id,
                        kind=kind,
                        granted=granted,
                        changed_at=now,
                        source=source,
                    )
                )
                changed = True
        if is_new:
            created += 1
        elif changed:
            patient.updated_at = now
            updated += 1
    return ImportResult(created, updated, len(rows) - created - updated)


def _kept(value: int | Keep | None, current: int | None) -> int | None:
    return current if value is Keep.KEEP else value


def save_appointments(
    session: Session,
    path: Path,
    rows: Iterable[AppointmentRow],
    now: datetime,
    progress: Callable[[Iterable[AppointmentRow]], Iterable[AppointmentRow]] = lambda rows: rows,
) -> ImportResult:
    """Upsert appointments by (patient, starts_at). Every patient must already exist."""
    rows = list(rows)
    patients = {
        external_id: patient_id
        for external_id, patient_id in session.execute(
            select(Patient.external_id, Patient.id).where(
                Patient.external_id.in_({r.external_id for r in rows})
            )
        )
    }
    unknown = [
        _unknown_patient(path, r.line, r.external_id) for r in rows if r.external_id not in patients
    ]
    if unknown:
        raise ImportRejected(unknown)
    existing = {
        (a.patient_id, a.starts_at): a
        for a in session.scalars(
            select(Appointment).where(Appointment.patient_id.in_(set(patients.values())))
        )
    }
    created = updated = 0
    for row in progress(rows):
        patient_id = patients[row.external_id]
        appointment = existing.get((patient_id, row.starts_at))
        if appointment is None:
            appointment = Appointment(
                patient_id=patient_id,
                starts_at=row.starts_at,
                status=row.status,
                created_at=now,
                updated_at=now,
            )
            session.add(appointment)
            existing[(patient_id, row.starts_at)] = appointment
            created += 1
        elif appointment.status != row.status:
            appointment.status = row.status
            appointment.updated_at = now
            updated += 1
    return ImportResult(created, updated, len(rows) - created - updated)

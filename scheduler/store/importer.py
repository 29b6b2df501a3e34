"""CSV import of patients and appointments.

A file is checked whole before anything is written: one bad row and nothing is
imported, and every bad row is reported as `FILE:LINE: column: problem`, LINE being
where the row starts. The file is read as a stream and each good row kept as a
small tuple, so a million appointments fit in little memory. The rows are then
compared with plain rows read from the database and written in bulk, in batches,
inside the caller's one transaction; unchanged rows are not written, and the
patients whose facts changed are marked for planning.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from functools import lru_cache
from itertools import groupby
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Table, select, update
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
from scheduler.store.batches import batches
from scheduler.store.bulk import DriverRows, copy_rows, executemany
from scheduler.store.clinics import clinic_of
from scheduler.store.db import among, refresh_statistics
from scheduler.store.facts import current_consent
from scheduler.store.models import (
    Appointment,
    CadenceChange,
    ConsentChange,
    Patient,
    Replan,
    new_public_id,
)
from scheduler.store.replan import add_replans, mark_for_planning

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

# Limits on what a patient's cells may hold: the columns' lengths (external_id,
# email), and for a name what fits a message's greeting and an email's Subject.
EXTERNAL_ID_MAX = 64
NAME_MAX = 100
EMAIL_MAX = 320
# C0 and C1 control characters (NUL, tab, line breaks, escape…): never part of a
# name, an id or an address, and PostgreSQL refuses NUL in text outright.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Rows per bulk statement: large enough that the per-statement cost vanishes, small
# enough that the parameters of one batch stay a few megabytes.
WRITE_BATCH = 5000
# A cell longer than this is not repeated in a problem, only its length given.
_SHOWN_MAX = 40

# The tables themselves: their Core statements skip the ORM's bookkeeping per row,
# which costs more than the database's own work at these numbers of rows.
_TABLES = Patient.metadata.tables
_PATIENTS: Table = _TABLES[Patient.__tablename__]
_APPOINTMENTS: Table = _TABLES[Appointment.__tablename__]
_CADENCE_CHANGES: Table = _TABLES[CadenceChange.__tablename__]
_CONSENT_CHANGES: Table = _TABLES[ConsentChange.__tablename__]


class ImportRejected(Exception):
    """The file was refused; `problems` lists every bad row."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Keep(Enum):
    """An optional column the file does not have: keep what the patient has."""

    KEEP = "keep"


class PatientRow(NamedTuple):
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


class AppointmentRow(NamedTuple):
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


def _shown(value: str) -> str:
    """A cell as a problem repeats it: quoted, or only its length when it is long."""
    return repr(value) if len(value) <= _SHOWN_MAX else f"a text of {len(value)} characters"


def _choice(enum: type[E]) -> Callable[[str], E]:
    def parse(value: str) -> E:
        try:
            return enum(value.strip().lower())
        except ValueError:
            allowed = "|".join(m.value for m in enum)
            raise _Invalid(f"expected one of {allowed}, got {_shown(value)}") from None

    return parse


def _yes_no(value: str) -> bool:
    answer = value.strip().lower()
    if answer not in ("yes", "no"):
        raise _Invalid(f"expected yes or no, got {_shown(value)}")
    return answer == "yes"


def _required(longest: int) -> Callable[[str], str]:
    def parse(value: str) -> str:
        value = value.strip()
        if not value:
            raise _Invalid("must not be empty")
        if len(value) > longest:
            raise _Invalid(f"must be at most {longest} characters, got {len(value)}")
        return value

    return parse


def _optional(pattern: re.Pattern[str], what: str, longest: int) -> Callable[[str], str | None]:
    def parse(value: str) -> str | None:
        value = value.strip()
        if not value:
            return None
        if len(value) > longest:
            raise _Invalid(f"must be at most {longest} characters, got {len(value)}")
        if not pattern.match(value):
            raise _Invalid(f"expected {what}, got {_shown(value)}")
        return value

    return parse


def _cadence_days(value: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not value.isdigit() or not 1 <= int(value) <= 90:
        raise _Invalid(
            f"expected a whole number of days from 1 to 90, or empty, got {_shown(value)}"
        )
    return int(value)


_external_id = _required(EXTERNAL_ID_MAX)
_name = _required(NAME_MAX)
_phase = _choice(Phase)
_channel = _choice(ChannelName)
_status = _choice(AppointmentStatus)
_email = _optional(EMAIL_ADDRESS, "an email address", EMAIL_MAX)
_line_user_id = _optional(
    LINE_USER_ID, "a LINE user id (U followed by 32 hex digits)", len("U") + 32
)


@dataclass
class _Problems:
    """The problems found so far, reported in the order of their lines."""

    path: Path
    found: list[tuple[int, str]] = field(default_factory=list)

    def add(self, line: int, column: str, problem: str) -> None:
        self.found.append((line, f"{self.path}:{line}: {column}: {problem}"))

    def raise_any(self) -> None:
        if self.found:
            # Stable: one line's problems keep the order of its columns.
            raise ImportRejected([problem for _, problem in sorted(self.found, key=itemgetter(0))])


class _Row:
    """The cells of one row, read one column at a time, each problem noted."""

    def __init__(
        self, problems: _Problems, line: int, cells: list[str], index: dict[str, int]
    ) -> None:
        self.problems, self.line, self.cells, self.index = problems, line, cells, index
        self.ok = True

    def has(self, column: str) -> bool:
        return column in self.index

    def cell(self, column: str, parse: Callable[[str], T]) -> T | None:
        value = self.cells[self.index[column]]
        try:
            if _CONTROL.search(value):
                _refuse_control_characters(value.strip())
            return parse(value)
        except _Invalid as e:
            self.problem(column, str(e))
            return None

    def problem(self, column: str, problem: str) -> None:
        self.problems.add(self.line, column, problem)
        self.ok = False


def _refuse_control_characters(value: str) -> None:
    found = _CONTROL.search(value)
    if found:
        raise _Invalid(
            f"must not contain control characters (found U+{ord(found.group()):04X} "
            f"at character {found.start() + 1})"
        )


def _rows(
    path: Path, problems: _Problems, columns: tuple[str, ...], optional: tuple[str, ...] = ()
) -> Iterator[_Row]:
    """Stream the rows of a UTF-8 CSV (a BOM is allowed) after checking its header.

    A row with the wrong number of cells is noted as a problem and not yielded."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as e:
        raise ImportRejected([f"{path}: cannot read: {e.strerror}"]) from None
    with handle:
        reader = csv.reader(handle)
        line = 1
        try:
            header = _header(path, reader, columns, optional)
            index = {column: n for n, column in enumerate(header)}
            while True:
                line = reader.line_num + 1  # where the next row starts
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                if not cells:
                    continue  # a blank line
                if len(cells) != len(header):
                    problems.add(line, "row", "wrong number of cells")
                    continue
                yield _Row(problems, line, cells, index)
        except csv.Error as e:
            raise ImportRejected([f"{path}:{line}: {e}"]) from None
        except UnicodeDecodeError:
            # The stream decodes in blocks: find the line of the first bad byte.
            bad = _undecodable_line(path)
            raise ImportRejected(
                [f'{path}:{bad}: not UTF-8 text (in Excel, save as "CSV UTF-8")']
            ) from None


def _header(
    path: Path, reader: Any, columns: tuple[str, ...], optional: tuple[str, ...]
) -> list[str]:
    """The header's columns, or ImportRejected naming every problem with it."""
    cells: list[str] = []
    while not cells:  # blank lines before the header are skipped
        row = next(reader, None)
        if row is None:
            raise ImportRejected(
                [
                    f"{path}: the file is empty: the first line must name the columns "
                    f"({','.join(columns)})"
                ]
            )
        cells = row
    line = reader.line_num
    header = [c.strip() for c in cells]
    problems = [f"{path}:{line}: {c}: missing column" for c in columns if c not in header]
    problems += [
        f"{path}:{line}: {c}: unknown column"
        for c in header
        if c not in columns and c not in optional
    ]
    twice = sorted({c for c in header if header.count(c) > 1}, key=header.index)
    problems += [f"{path}:{line}: {c}: column appears more than once" for c in twice]
    if problems:
        raise ImportRejected(problems)
    return header


def _undecodable_line(path: Path) -> int:
    """The line of the first byte that is not UTF-8 (counted as the lines of the file)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with path.open("rb") as handle:
        while block := handle.read(1 << 16):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as e:
                # e.object holds the block and any bytes kept from the one before; those
                # are part of one character, never a line break.
                return line + e.object.count(b"\n", 0, e.start)
            line += block.count(b"\n")
    return line


def read_patients(path: Path) -> list[PatientRow]:
    problems = _Problems(path)
    rows: list[PatientRow] = []
    first_line: dict[str, int] = {}
    for r in _rows(path, problems, PATIENT_COLUMNS, PATIENT_CADENCE_COLUMNS):
        external_id = r.cell("external_id", _external_id)
        name = r.cell("name", _name)
        phase = r.cell("phase", lambda v: _phase(v) if v.strip() else None)
        email = r.cell("email", _email)
        line_user_id = r.cell("line_user_id", _line_user_id)
        preferred = r.cell("preferred_channel", _channel)
        reminders = r.cell("reminders_opt_in", _yes_no)
        newsletter = r.cell("newsletter_opt_in", _yes_no)
        own_cadence: dict[str, int | Keep | None] = {
            column: r.cell(column, _cadence_days) if r.has(column) else Keep.KEEP
            for column in PATIENT_CADENCE_COLUMNS
        }
        if external_id is not None:
            if external_id in first_line:
                r.problem(
                    "external_id", f"{external_id!r} already on line {first_line[external_id]}"
                )
            first_line.setdefault(external_id, r.line)
        if r.ok:
            assert external_id and name and preferred is not None
            assert reminders is not None and newsletter is not None
            rows.append(
                PatientRow(
                    r.line,
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
    problems.raise_any()
    return rows


def read_appointments(
    path: Path, tz: ZoneInfo, known_patients: Container[str] | None = None
) -> list[AppointmentRow]:
    """Check an appointments file; with `known_patients`, unknown patients are listed
    together with every other bad row. The rows come back in the order of their
    patients (the file's order for each patient's)."""
    problems = _Problems(path)
    rows: list[AppointmentRow] = []
    # Rows refused for another reason still count as taken when finding duplicates.
    refused: list[AppointmentRow] = []
    ids: dict[str, str] = {}

    # A clinic's appointments share a few thousand slots: each text is parsed once,
    # and equal moments share one datetime.
    @lru_cache(maxsize=1 << 16)
    def starts_at(value: str) -> datetime:
        try:
            return parse_moment(value, tz, require_time=True)
        except ValueError as e:
            if len(value) > _SHOWN_MAX:
                raise _Invalid(f"expected an ISO 8601 date-time, got {_shown(value)}") from None
            raise _Invalid(str(e)) from None

    for r in _rows(path, problems, APPOINTMENT_COLUMNS):
        external_id = r.cell("external_id", _external_id)
        moment = r.cell("starts_at", starts_at)
        status = r.cell("status", _status)
        if external_id is None:
            continue
        if known_patients is not None and external_id not in known_patients:
            r.problem("external_id", _unknown_patient(external_id))
        if moment is None:
            continue
        # One string per patient rather than one per row.
        external_id = ids.setdefault(external_id, external_id)
        if r.ok and status is not None:
            rows.append(AppointmentRow(r.line, external_id, moment, status))
        else:
            refused.append(AppointmentRow(r.line, external_id, moment, AppointmentStatus.BOOKED))
    candidates = sorted([*rows, *refused], key=attrgetter("line")) if refused else rows
    candidates.sort(key=attrgetter("external_id"))  # stable: each patient's in line order
    for _, same_patient in groupby(candidates, key=attrgetter("external_id")):
        first_line: dict[datetime, int] = {}
        for row in same_patient:
            first = first_line.setdefault(row.starts_at, row.line)
            if first != row.line:
                problems.add(row.line, "starts_at", f"same patient and time as line {first}")
    problems.raise_any()
    return candidates


def _unknown_patient(external_id: str) -> str:
    return f"no patient {_shown(external_id)} (import patients first)"


def save_patients(
    session: Session,
    rows: Iterable[PatientRow],
    now: datetime,
    source: str = "import",
    progress: Callable[[Iterable[PatientRow]], Iterable[PatientRow]] = lambda rows: rows,
    *,
    path: Path | None = None,
) -> ImportResult:
    """Upsert patients by external_id; a consent that changed is appended to its
    history, and so is a phase or cadence that changed (a new patient's first entry
    is their starting point). Patients whose facts changed are marked for planning.

    A row for a patient who was forgotten (`tayori forget`) refuses the file, naming
    the row: importing it would bring back what the patient asked to be erased."""
    rows = list(rows)
    session.flush()  # what the session holds is written before it is compared
    # Every patient, as plain rows, in one query: a file usually names most of the
    # clinic's patients, and a query per thousand of them costs more.
    existing = {
        p.external_id: p
        for p in session.execute(
            select(
                Patient.id,
                Patient.external_id,
                Patient.name,
                Patient.email,
                Patient.line_user_id,
                Patient.preferred_channel,
                Patient.phase,
                Patient.nudge_after_days,
                Patient.follow_up_days,
                Patient.forgotten_at,
            ).where(Patient.clinic_id == clinic_of(session))
        )
    }
    refused = [
        f"{path or 'patients'}:{row.line}: external_id: patient {row.external_id!r} was "
        "forgotten at their request (tayori forget) and is not imported again: remove the row"
        for row in rows
        if row.external_id in existing and existing[row.external_id].forgotten_at is not None
    ]
    if refused:
        raise ImportRejected(refused)
    writes = _PatientWrites(session, now, source)
    new = [row for row in rows if row.external_id not in existing]
    new_ids = writes.new_patients(new)
    # Every patient's consent in one query, when the file has any known patient.
    consent = current_consent(session) if len(new) < len(rows) else {}
    saved = _Saved()
    updates: list[dict[str, object]] = []
    for row in progress(rows):
        old = existing.get(row.external_id)
        patient_id = new_ids[row.external_id] if old is None else old.id
        changes: dict[str, object] = {}
        old_cadence: _Cadence | None = None
        cadence: _Cadence = (row.phase, _kept(row.nudge_after_days), _kept(row.follow_up_days))
        if old is not None:
            old_cadence = (old.phase, old.nudge_after_days, old.follow_up_days)
            cadence = (
                row.phase,
                _kept(row.nudge_after_days, old.nudge_after_days),
                _kept(row.follow_up_days, old.follow_up_days),
            )
        # A new patient's first entry is their starting point.
        if cadence != old_cadence:
            writes.cadence_changed(patient_id, cadence)
            changes.update(
                zip(("phase", "nudge_after_days", "follow_up_days"), cadence, strict=True)
            )
        for kind, granted in (
            (ConsentKind.REMINDERS, row.reminders_opt_in),
            (ConsentKind.NEWSLETTER, row.newsletter_opt_in),
        ):
            if consent.get(patient_id, {}).get(kind) != granted:
                writes.consent_changed(patient_id, kind, granted)
                changes["updated_at"] = now
        if old is None:
            saved.created += 1
            continue
        changes.update(
            {key: value for key, value in _contact(row).items() if getattr(old, key) != value}
        )
        if "email" in changes:
            changes["email_unusable_reason"] = None  # a new address gets a fresh start
        if "line_user_id" in changes:
            changes["line_unusable_reason"] = None
        if changes:
            updates.append({"id": patient_id, **changes, "updated_at": now})
            saved.patients.add(patient_id)
    writes.flush()
    for batch in batches(updates, WRITE_BATCH):
        session.execute(update(Patient), batch)
    # New patients are marked from the start (`new_patients`); the changed ones here.
    mark_for_planning(session, saved.patients)
    saved.updated = len(saved.patients)
    saved.expire_loaded(session)
    refresh_statistics(
        session,
        [
            Patient.__tablename__,
            Replan.__tablename__,
            ConsentChange.__tablename__,
            CadenceChange.__tablename__,
        ],
        saved.created + saved.updated,
    )
    return saved.result(len(rows))


@dataclass
class _Saved:
    """What an import wrote: the counts, and the patients whose facts changed."""

    created: int = 0
    updated: int = 0
    patients: set[int] = field(default_factory=set)

    def result(self, rows: int) -> ImportResult:
        return ImportResult(self.created, self.updated, rows - self.created - self.updated)

    def expire_loaded(self, session: Session) -> None:
        """Bulk statements bypass the session: objects it had loaded of the patients
        written would keep their old values (their collections too)."""
        for instance in list(session.identity_map.values()):
            if (isinstance(instance, Patient) and instance.id in self.patients) or (
                isinstance(instance, Appointment) and instance.patient_id in self.patients
            ):
                session.expire(instance)


_Cadence = tuple[Phase | None, int | None, int | None]  # phase, nudge, follow-up days


class _PatientWrites:
    """The rows a patients import adds: new patients, and the entries it appends to
    their cadence and consent histories (as `record_cadence` and a consent change
    through the ORM would)."""

    def __init__(self, session: Session, now: datetime, source: str) -> None:
        self.session, self.now, self.source = session, now, source
        self.patients = _BulkInsert(
            session,
            _PATIENTS,
            (
                "clinic_id",
                "external_id",
                "name",
                "email",
                "line_user_id",
                "preferred_channel",
                "phase",
                "nudge_after_days",
                "follow_up_days",
                "public_id",
                "created_at",
                "updated_at",
            ),
        )
        self.cadence = _BulkInsert(
            session,
            _CADENCE_CHANGES,
            ("patient_id", "phase", "nudge_after_days", "follow_up_days", "changed_at", "source"),
        )
        self.consent = _BulkInsert(
            session, _CONSENT_CHANGES, ("patient_id", "kind", "granted", "changed_at", "source")
        )

    def new_patients(self, rows: list[PatientRow]) -> dict[str, int]:
        """Insert new patients, marked to be planned at the next cycle; every
        patient's id by external_id, theirs included."""
        if not rows:
            return {}
        for row in rows:
            self.patients.add(
                clinic_of(self.session),
                row.external_id,
                row.name,
                row.email,
                row.line_user_id,
                row.preferred_channel,
                row.phase,
                _kept(row.nudge_after_days),
                _kept(row.follow_up_days),
                new_public_id(),
                self.now,
                self.now,
            )
        self.patients.flush()
        add_replans(self.session)
        # Every patient's id in one query, rather than one per thousand new ones.
        return _patient_ids(self.session)

    def cadence_changed(self, patient_id: int, cadence: _Cadence) -> None:
        self.cadence.add(patient_id, *cadence, self.now, self.source)

    def consent_changed(self, patient_id: int, kind: ConsentKind, granted: bool) -> None:
        self.consent.add(patient_id, kind, granted, self.now, self.source)

    def flush(self) -> None:
        self.cadence.flush()
        self.consent.flush()


def _patient_ids(session: Session) -> dict[str, int]:
    """The clinic's patients' ids by external_id."""
    found = session.execute(
        select(Patient.external_id, Patient.id).where(Patient.clinic_id == clinic_of(session))
    )
    return {external_id: patient_id for external_id, patient_id in found}


def _contact(row: PatientRow) -> dict[str, object]:
    return {
        "name": row.name,
        "email": row.email,
        "line_user_id": row.line_user_id,
        "preferred_channel": row.preferred_channel,
    }


def _kept(value: int | Keep | None, current: int | None = None) -> int | None:
    return current if value is Keep.KEEP else value


def save_appointments(
    session: Session,
    path: Path,
    rows: Iterable[AppointmentRow],
    now: datetime,
    progress: Callable[[Iterable[AppointmentRow]], Iterable[AppointmentRow]] = lambda rows: rows,
) -> ImportResult:
    """Upsert appointments by (patient, starts_at). Every patient must already exist.
    Patients with an appointment added or changed are marked for planning."""
    by_patient = sorted(rows, key=attrgetter("external_id"))
    session.flush()  # what the session holds is written before it is compared
    # Every patient's id in one query: a file usually names most of the clinic's
    # patients, and a query per thousand of them costs more.
    patient_ids = _patient_ids(session)
    problems = _Problems(path)
    for row in by_patient:
        if row.external_id not in patient_ids:
            problems.add(row.line, "external_id", _unknown_patient(row.external_id))
    problems.raise_any()
    saved = _Saved()
    writes = _AppointmentWrites(session, now)
    patients = (
        (external_id, list(appointments))
        for external_id, appointments in groupby(progress(by_patient), attrgetter("external_id"))
    )
    for batch in batches(patients):
        ids = [patient_ids[external_id] for external_id, _ in batch]
        existing = {
            (patient_id, starts_at): (appointment_id, status)
            for patient_id, starts_at, appointment_id, status in session.execute(
                select(
                    Appointment.patient_id,
                    Appointment.starts_at,
                    Appointment.id,
                    Appointment.status,
                ).where(among(session, Appointment.patient_id, ids))
            )
        }
        changed: list[int] = []
        for patient_id, (_, appointments) in zip(ids, batch, strict=True):
            wrote = False
            for row in appointments:
                found = existing.get((patient_id, row.starts_at))
                if found is None:
                    writes.insert(patient_id, row)
                    saved.created += 1
                    wrote = True
                elif found[1] != row.status:
                    writes.update(found[0], row.status)
                    saved.updated += 1
                    wrote = True
            if wrote:
                changed.append(patient_id)
        writes.flush()
        mark_for_planning(session, changed)
        saved.patients.update(changed)
    saved.expire_loaded(session)
    refresh_statistics(session, [Appointment.__tablename__], saved.created + saved.updated)
    return saved.result(len(by_patient))


class _BulkInsert:
    """Rows for one table, inserted WRITE_BATCH at a time: by the driver's executemany
    on SQLite, by COPY on PostgreSQL (see `store/bulk.py`)."""

    def __init__(self, session: Session, table: Table, columns: tuple[str, ...]) -> None:
        self.session = session
        dialect = session.get_bind().dialect
        self.copy = dialect.name == "postgresql"
        self.values = DriverRows(dialect, table, columns)
        self.sql = (
            f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({self.values.placeholders()})"
        )
        self.rows: list[tuple[object, ...]] = []

    def add(self, *values: object) -> None:
        self.rows.append(self.values.row(*values))
        if len(self.rows) >= WRITE_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        if self.copy:
            copy_rows(self.session, self.values, self.rows)
        else:
            executemany(self.session, self.sql, self.rows)
        self.rows = []


class _AppointmentWrites:
    """Appointments to insert or update, sent in batches of WRITE_BATCH rows."""

    def __init__(self, session: Session, now: datetime) -> None:
        self.session, self.now = session, now
        self.inserts = _BulkInsert(
            session,
            _APPOINTMENTS,
            ("patient_id", "starts_at", "status", "created_at", "updated_at"),
        )
        self.updates: list[dict[str, object]] = []

    def insert(self, patient_id: int, row: AppointmentRow) -> None:
        self.inserts.add(patient_id, row.starts_at, row.status, self.now, self.now)

    def update(self, appointment_id: int, status: AppointmentStatus) -> None:
        self.updates.append({"id": appointment_id, "status": status, "updated_at": self.now})
        if len(self.updates) >= WRITE_BATCH:
            self.flush()

    def flush(self) -> None:
        self.inserts.flush()
        if self.updates:
            self.session.execute(update(Appointment), self.updates)
            self.updates = []

"""Reading patients' facts out of the database into the plain values the rules use."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple, Protocol, TypeVar

from sqlalchemy import (
    ColumnClause,
    ColumnElement,
    CompoundSelect,
    ScalarSelect,
    Select,
    String,
    and_,
    literal_column,
    or_,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.orm import Session

from scheduler.core.domain import (
    AppointmentFact,
    AppointmentStatus,
    CadenceChangeFact,
    ChannelName,
    ConsentKind,
    Contacts,
    PatientFacts,
    Phase,
)
from scheduler.store.batches import batches
from scheduler.store.clinics import clinic_of
from scheduler.store.db import among
from scheduler.store.models import Appointment, CadenceChange, ConsentChange, Patient


class PatientRow(Protocol):
    """What the facts need of a patient's row: a `Patient`, or a plain row of
    `PATIENT_COLUMNS` (whose enums are their stored text)."""

    @property
    def id(self) -> int: ...
    @property
    def phase(self) -> Phase | str | None: ...
    @property
    def nudge_after_days(self) -> int | None: ...
    @property
    def follow_up_days(self) -> int | None: ...
    @property
    def preferred_channel(self) -> ChannelName | str: ...
    @property
    def email(self) -> str | None: ...
    @property
    def line_user_id(self) -> str | None: ...
    @property
    def email_unusable_reason(self) -> str | None: ...
    @property
    def line_unusable_reason(self) -> str | None: ...


_E = TypeVar("_E", bound=StrEnum)


def _members(enum: type[_E]) -> dict[str, _E]:
    """`enum`'s members by their stored value. The facts read enum columns as their
    plain text and look them up here: SQLAlchemy's Enum type converts each value
    through several calls, and a clinic's facts hold hundreds of thousands. A member
    is found under itself too (a StrEnum equals its value), so rows of ORM objects
    and of plain text read the same."""
    return {member.value: member for member in enum}


_PHASES = _members(Phase)
_CHANNELS = _members(ChannelName)
_STATUSES = _members(AppointmentStatus)
_KINDS = _members(ConsentKind)


def consent_now(kind: ConsentKind) -> ScalarSelect[bool]:
    """Of the patient in the enclosing query, the latest change of this consent:
    whether it is given now (NULL: never asked, which is not given). Read through the
    consent changes' index by patient: as `id = (SELECT max(id) …)`, PostgreSQL made
    it a join that read every consent change of the clinic for each batch."""
    return (
        select(ConsentChange.granted)
        .where(ConsentChange.patient_id == Patient.id, ConsentChange.kind == kind)
        .order_by(ConsentChange.id.desc())
        .limit(1)
        .scalar_subquery()
    )


# With each patient's consent now: one row a patient, not one a change of consent.
PATIENT_COLUMNS = (
    Patient.id,
    type_coerce(Patient.phase, String).label("phase"),
    Patient.nudge_after_days,
    Patient.follow_up_days,
    type_coerce(Patient.preferred_channel, String).label("preferred_channel"),
    Patient.email,
    Patient.line_user_id,
    Patient.email_unusable_reason,
    Patient.line_unusable_reason,
    consent_now(ConsentKind.REMINDERS).label("reminders_opt_in"),
    consent_now(ConsentKind.NEWSLETTER).label("newsletter_opt_in"),
)

# The four answers there are: every patient shares one of them.
_CONTACTS = {
    (line, email): Contacts(line=line, email=email)
    for line in (False, True)
    for email in (False, True)
}


def contacts_of(patient: PatientRow) -> Contacts:
    return _contacts(
        patient.line_user_id,
        patient.line_unusable_reason,
        patient.email,
        patient.email_unusable_reason,
    )


def _contacts(
    line_user_id: str | None,
    line_unusable_reason: str | None,
    email: str | None,
    email_unusable_reason: str | None,
) -> Contacts:
    return _CONTACTS[
        bool(line_user_id) and line_unusable_reason is None,
        bool(email) and email_unusable_reason is None,
    ]


def _clinic_patients(session: Session) -> Select[int]:
    return select(Patient.id).where(Patient.clinic_id == clinic_of(session))


def current_consent(
    session: Session, patient_ids: Iterable[int] | None = None
) -> dict[int, dict[ConsentKind, bool]]:
    """Each patient's consent now: the latest change of each kind (absent = not given)."""
    query = select(
        ConsentChange.patient_id, type_coerce(ConsentChange.kind, String), ConsentChange.granted
    ).order_by(ConsentChange.id)
    query = query.where(
        among(session, ConsentChange.patient_id, list(patient_ids))
        if patient_ids is not None
        else ConsentChange.patient_id.in_(_clinic_patients(session))
    )
    consent: dict[int, dict[ConsentKind, bool]] = defaultdict(dict)
    for patient_id, kind, granted in session.connection().execute(query).all():
        consent[patient_id][_KINDS[kind]] = granted
    return consent


class _Dated(Protocol):
    @property
    def changed_at(self) -> datetime: ...


_Change = TypeVar("_Change", bound=_Dated)


def cadence_in_force(history: Sequence[_Change], now: datetime) -> _Change | None:
    """The latest change made up to `now` (history in the order it was written);
    before the first one, the starting point itself."""
    return _cadence_at(history, now)[0]


def _cadence_at(
    history: Sequence[_Change], now: datetime
) -> tuple[_Change | None, datetime | None]:
    """`cadence_in_force`, and the first change after `now`, in one pass over the
    history."""
    in_force = None
    ahead: datetime | None = None
    for change in history:
        if change.changed_at <= now:
            in_force = change
        elif ahead is None or change.changed_at < ahead:
            ahead = change.changed_at
    if in_force is None and history:
        in_force = history[0]
    return in_force, ahead


def load_facts_of(session: Session, now: datetime, ids: Sequence[int]) -> list[PatientFacts]:
    """The facts the rules read of the patients with these ids, at `now` or later
    (the dry run's moments): only the appointments they can still read (see
    `_relevant_appointments`)."""
    facts: list[PatientFacts] = []
    for chunk in batches(ids):
        patients = session.connection().execute(
            select(*PATIENT_COLUMNS).where(among(session, Patient.id, chunk)).order_by(Patient.id)
        )
        facts += _facts(session, now, patients.all(), relevant_only=True)
    return facts


# An appointment's status as its stored text (see `_members`).
_APPOINTMENT_COLUMNS = (
    Appointment.patient_id,
    Appointment.id,
    Appointment.starts_at,
    type_coerce(Appointment.status, String).label("status"),
)


# `status = 'booked'` as the bookings index's own condition reads (store/models.py).
_BOOKED: ColumnClause[str] = literal_column(f"'{AppointmentStatus.BOOKED.value}'")


def _relevant_appointments(
    session: Session, ids: list[int], now: datetime
) -> CompoundSelect[int, int, datetime, str]:
    """The appointments of these patients that the rules can read at `now` or later.

    The rest are past visits before the latest one, and cancellations and no-shows
    before it: at any moment from `now` on, the latest visit says all that
    `last_visit` and a campaign's `visited_within_days` need, and a no-show before it
    gets no follow-up (the patient has moved on). Kept: every appointment ahead,
    every booking (one past and not yet marked counts as a visit, and excludes the
    patient from some campaigns), the latest visit and whatever came after it; of a
    patient who never visited, the no-shows too.

    Each part is found through an index rather than by reading every past
    appointment: the latest visit from the end of the patient's appointments, what
    came after it from there on, and earlier bookings in the bookings index.
    """
    latest_visit = (
        select(Appointment.starts_at)
        .where(
            Appointment.patient_id == Patient.id,
            Appointment.starts_at <= now,
            Appointment.status == AppointmentStatus.VISITED,
        )
        .order_by(Appointment.starts_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    latest = (
        select(Patient.id.label("patient_id"), latest_visit.label("at"))
        .where(among(session, Patient.id, ids))
        .cte("latest")
    )

    def appointments_where(*conditions: ColumnElement[bool]) -> Select[int, int, datetime, str]:
        of_patient = Appointment.patient_id == latest.c.patient_id
        return (
            select(*_APPOINTMENT_COLUMNS)
            .select_from(latest)
            .join(Appointment, and_(of_patient, *conditions))
        )

    relevant = union_all(
        appointments_where(Appointment.starts_at >= latest.c.at),
        appointments_where(Appointment.status == _BOOKED, Appointment.starts_at < latest.c.at),
        appointments_where(
            latest.c.at.is_(None),
            or_(
                Appointment.starts_at > now,
                Appointment.status.in_([AppointmentStatus.BOOKED, AppointmentStatus.NO_SHOW]),
            ),
        ),
    )
    return relevant.order_by(relevant.selected_columns.starts_at)


def load_facts(
    session: Session,
    now: datetime,
    patients: Iterable[PatientRow] | None = None,
    *,
    relevant_only: bool = False,
) -> list[PatientFacts]:
    """The facts of `patients` (by default every patient) as they stand at `now`,
    with every appointment, or only those the rules can still read."""
    if patients is None:
        # Plain rows rather than ORM objects: the planner reads many patients' histories.
        everyone = session.connection().execute(
            select(*PATIENT_COLUMNS)
            .where(Patient.clinic_id == clinic_of(session))
            .order_by(Patient.id)
        )
        return _facts(session, now, everyone.all(), everyone=True)
    patients = list(patients)
    consent = current_consent(session, [patient.id for patient in patients])
    values = [_values(patient, consent.get(patient.id, {})) for patient in patients]
    return _facts(session, now, values, relevant_only)


# A patient's `PATIENT_COLUMNS`, in their order.
_PatientValues = tuple[
    int,
    Phase | str | None,
    int | None,
    int | None,
    ChannelName | str,
    str | None,
    str | None,
    str | None,
    str | None,
    bool | None,
    bool | None,
]


def _values(patient: PatientRow, consent: dict[ConsentKind, bool]) -> _PatientValues:
    return (
        patient.id,
        patient.phase,
        patient.nudge_after_days,
        patient.follow_up_days,
        patient.preferred_channel,
        patient.email,
        patient.line_user_id,
        patient.email_unusable_reason,
        patient.line_unusable_reason,
        consent.get(ConsentKind.REMINDERS),
        consent.get(ConsentKind.NEWSLETTER),
    )


class _Cadence(NamedTuple):
    """One row of a patient's cadence history."""

    id: int
    phase: str | None
    nudge_after_days: int | None
    follow_up_days: int | None
    changed_at: datetime


def _facts(
    session: Session,
    now: datetime,
    patients: Sequence[_PatientValues],
    relevant_only: bool = False,
    *,
    everyone: bool = False,
) -> list[PatientFacts]:
    """The facts of these patients (the clinic's every patient if `everyone`).

    The rows are read by position, never by name: a hundred thousand patients' rows
    read by name cost the planner a second."""
    every_appointment = select(*_APPOINTMENT_COLUMNS).order_by(Appointment.starts_at)
    appointment_query: Select[int, int, datetime, str] | CompoundSelect[int, int, datetime, str]
    history_query = select(
        CadenceChange.patient_id,
        CadenceChange.id,
        type_coerce(CadenceChange.phase, String),
        CadenceChange.nudge_after_days,
        CadenceChange.follow_up_days,
        CadenceChange.changed_at,
    ).order_by(CadenceChange.id)
    ids = None if everyone else [patient[0] for patient in patients]
    if ids is None:
        clinic_patients = _clinic_patients(session)
        appointment_query = every_appointment.where(Appointment.patient_id.in_(clinic_patients))
        history_query = history_query.where(CadenceChange.patient_id.in_(clinic_patients))
    else:
        appointment_query = (
            _relevant_appointments(session, ids, now)
            if relevant_only
            else every_appointment.where(among(session, Appointment.patient_id, ids))
        )
        history_query = history_query.where(among(session, CadenceChange.patient_id, ids))
    # Core rather than ORM execution: these are plain rows, and many of them.
    connection = session.connection()
    appointments: dict[int, list[AppointmentFact]] = defaultdict(list)
    for patient_id, appointment_id, starts_at, status in connection.execute(
        appointment_query
    ).all():
        appointments[patient_id].append(
            AppointmentFact(appointment_id, starts_at, _STATUSES[status])
        )
    histories: dict[int, list[_Cadence]] = defaultdict(list)
    for patient_id, change_id, phase, nudge, follow_up, changed_at in connection.execute(
        history_query
    ).all():
        histories[patient_id].append(_Cadence(change_id, phase, nudge, follow_up, changed_at))
    no_history: list[_Cadence] = []

    def facts(patient: _PatientValues) -> PatientFacts:
        (
            patient_id,
            phase,
            nudge,
            follow_up,
            channel,
            email,
            line,
            email_unusable,
            line_unusable,
            reminders,
            newsletter,
        ) = patient
        history = histories.get(patient_id, no_history)
        in_force, next_change_at = _cadence_at(history, now)
        # Without a history (never expected after migration 0002), the row is the truth.
        if in_force is not None:
            phase, nudge, follow_up = (
                in_force.phase,
                in_force.nudge_after_days,
                in_force.follow_up_days,
            )
        return PatientFacts(
            id=patient_id,
            phase=None if phase is None else _PHASES[phase],
            reminders_opt_in=bool(reminders),
            newsletter_opt_in=bool(newsletter),
            preferred_channel=_CHANNELS[channel],
            contacts=_contacts(line, line_unusable, email, email_unusable),
            appointments=tuple(appointments.get(patient_id, ())),
            nudge_after_days=nudge,
            follow_up_days=follow_up,
            cadence_change=(
                CadenceChangeFact(in_force.id, in_force.changed_at)
                if in_force is not None and in_force is not history[0]
                else None
            ),
            next_change_at=next_change_at,
        )

    return [facts(patient) for patient in patients]

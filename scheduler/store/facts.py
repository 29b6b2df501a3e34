"""Reading patients' facts out of the database into the plain values the rules use."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

from sqlalchemy import Row, Select, and_, func, or_, select
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
    `PATIENT_COLUMNS`."""

    @property
    def id(self) -> int: ...
    @property
    def phase(self) -> Phase | None: ...
    @property
    def nudge_after_days(self) -> int | None: ...
    @property
    def follow_up_days(self) -> int | None: ...
    @property
    def preferred_channel(self) -> ChannelName: ...
    @property
    def email(self) -> str | None: ...
    @property
    def line_user_id(self) -> str | None: ...
    @property
    def email_unusable_reason(self) -> str | None: ...
    @property
    def line_unusable_reason(self) -> str | None: ...


PATIENT_COLUMNS = (
    Patient.id,
    Patient.phase,
    Patient.nudge_after_days,
    Patient.follow_up_days,
    Patient.preferred_channel,
    Patient.email,
    Patient.line_user_id,
    Patient.email_unusable_reason,
    Patient.line_unusable_reason,
)


def contacts_of(patient: PatientRow) -> Contacts:
    return Contacts(
        line=bool(patient.line_user_id) and patient.line_unusable_reason is None,
        email=bool(patient.email) and patient.email_unusable_reason is None,
    )


def _clinic_patients(session: Session) -> Select[int]:
    return select(Patient.id).where(Patient.clinic_id == clinic_of(session))


def current_consent(
    session: Session, patient_ids: Iterable[int] | None = None
) -> dict[int, dict[ConsentKind, bool]]:
    """Each patient's consent now: the latest change of each kind (absent = not given)."""
    query = select(ConsentChange.patient_id, ConsentChange.kind, ConsentChange.granted).order_by(
        ConsentChange.id
    )
    query = query.where(
        among(session, ConsentChange.patient_id, list(patient_ids))
        if patient_ids is not None
        else ConsentChange.patient_id.in_(_clinic_patients(session))
    )
    consent: dict[int, dict[ConsentKind, bool]] = defaultdict(dict)
    for patient_id, kind, granted in session.connection().execute(query).all():
        consent[patient_id][kind] = granted
    return consent


class _Dated(Protocol):
    @property
    def changed_at(self) -> datetime: ...


_Change = TypeVar("_Change", bound=_Dated)
_HistoryRow = Row[int, int, Phase | None, int | None, int | None, datetime]


def cadence_in_force(history: Sequence[_Change], now: datetime) -> _Change | None:
    """The latest change made up to `now` (history in the order it was written);
    before the first one, the starting point itself."""
    in_force = [c for c in history if c.changed_at <= now]
    if in_force:
        return in_force[-1]
    return history[0] if history else None


def load_facts_of(session: Session, now: datetime, ids: Sequence[int]) -> list[PatientFacts]:
    """The facts the rules read of the patients with these ids, at `now` or later
    (the dry run's moments): only the appointments they can still read (see
    `_relevant_appointments`)."""
    facts: list[PatientFacts] = []
    for chunk in batches(ids):
        patients = session.connection().execute(
            select(*PATIENT_COLUMNS).where(among(session, Patient.id, chunk)).order_by(Patient.id)
        )
        facts += load_facts(session, now, list(patients), relevant_only=True)
    return facts


def _relevant_appointments(
    session: Session, ids: list[int], now: datetime
) -> Select[int, int, datetime, AppointmentStatus]:
    """The appointments of these patients that the rules can read at `now` or later.

    The rest are past visits before the latest one, and cancellations and no-shows
    before it: at any moment from `now` on, the latest visit says all that
    `last_visit` and a campaign's `visited_within_days` need, and a no-show before it
    gets no follow-up (the patient has moved on). Kept: every appointment ahead,
    every booking (one past and not yet marked counts as a visit, and excludes the
    patient from some campaigns), the latest visit and whatever came after it.
    """
    latest = (
        select(Appointment.patient_id, func.max(Appointment.starts_at).label("at"))
        .where(
            among(session, Appointment.patient_id, ids),
            Appointment.status == AppointmentStatus.VISITED,
            Appointment.starts_at <= now,
        )
        .group_by(Appointment.patient_id)
        .subquery()
    )
    return (
        select(Appointment.patient_id, Appointment.id, Appointment.starts_at, Appointment.status)
        .outerjoin(latest, latest.c.patient_id == Appointment.patient_id)
        .where(
            among(session, Appointment.patient_id, ids),
            or_(
                Appointment.starts_at > now,
                Appointment.status == AppointmentStatus.BOOKED,
                Appointment.starts_at >= latest.c.at,
                and_(Appointment.status == AppointmentStatus.NO_SHOW, latest.c.at.is_(None)),
            ),
        )
        .order_by(Appointment.starts_at)
    )


def load_facts(
    session: Session,
    now: datetime,
    patients: Iterable[PatientRow] | None = None,
    *,
    relevant_only: bool = False,
) -> list[PatientFacts]:
    """The facts of `patients` (by default every patient) as they stand at `now`,
    with every appointment, or only those the rules can still read."""
    # Plain rows rather than ORM objects: the planner reads many patients' histories.
    rows: list[PatientRow] = list(
        session.connection().execute(
            select(*PATIENT_COLUMNS)
            .where(Patient.clinic_id == clinic_of(session))
            .order_by(Patient.id)
        )
        if patients is None
        else patients
    )
    ids = None if patients is None else [patient.id for patient in rows]
    appointment_query = select(
        Appointment.patient_id, Appointment.id, Appointment.starts_at, Appointment.status
    ).order_by(Appointment.starts_at)
    history_query = select(
        CadenceChange.patient_id,
        CadenceChange.id,
        CadenceChange.phase,
        CadenceChange.nudge_after_days,
        CadenceChange.follow_up_days,
        CadenceChange.changed_at,
    ).order_by(CadenceChange.id)
    if ids is None:
        everyone = _clinic_patients(session)
        appointment_query = appointment_query.where(Appointment.patient_id.in_(everyone))
        history_query = history_query.where(CadenceChange.patient_id.in_(everyone))
    else:
        appointment_query = (
            _relevant_appointments(session, ids, now)
            if relevant_only
            else appointment_query.where(among(session, Appointment.patient_id, ids))
        )
        history_query = history_query.where(among(session, CadenceChange.patient_id, ids))
    # Core rather than ORM execution: these are plain rows, and many of them.
    connection = session.connection()
    appointments: dict[int, list[AppointmentFact]] = defaultdict(list)
    for patient_id, appointment_id, starts_at, status in connection.execute(
        appointment_query
    ).all():
        appointments[patient_id].append(AppointmentFact(appointment_id, starts_at, status))
    histories: dict[int, list[_HistoryRow]] = defaultdict(list)
    for change in connection.execute(history_query).all():
        histories[change.patient_id].append(change)
    consent = current_consent(session, ids)

    def facts(patient: PatientRow) -> PatientFacts:
        history = histories[patient.id]
        in_force = cadence_in_force(history, now)
        # Without a history (never expected after migration 0002), the row is the truth.
        phase, nudge, follow_up = (
            (in_force.phase, in_force.nudge_after_days, in_force.follow_up_days)
            if in_force
            else (patient.phase, patient.nudge_after_days, patient.follow_up_days)
        )
        is_change = in_force is not None and in_force is not history[0]
        return PatientFacts(
            id=patient.id,
            phase=phase,
            reminders_opt_in=consent[patient.id].get(ConsentKind.REMINDERS, False),
            newsletter_opt_in=consent[patient.id].get(ConsentKind.NEWSLETTER, False),
            preferred_channel=patient.preferred_channel,
            contacts=contacts_of(patient),
            appointments=tuple(appointments[patient.id]),
            nudge_after_days=nudge,
            follow_up_days=follow_up,
            cadence_change=(
                CadenceChangeFact(in_force.id, in_force.changed_at)
                if in_force is not None and is_change
                else None
            ),
            next_change_at=min((c.changed_at for c in history if c.changed_at > now), default=None),
        )

    return [facts(patient) for patient in rows]

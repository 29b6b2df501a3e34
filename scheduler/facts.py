"""Reading patients' facts out of the database into the plain values the rules use."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.domain import (
    AppointmentFact,
    CadenceChangeFact,
    ConsentKind,
    Contacts,
    PatientFacts,
)
from scheduler.models import Appointment, CadenceChange, ConsentChange, Patient


def contacts_of(patient: Patient) -> Contacts:
    return Contacts(
        line=bool(patient.line_user_id) and patient.line_unusable_reason is None,
        email=bool(patient.email) and patient.email_unusable_reason is None,
    )


def current_consent(
    session: Session, patient_ids: Iterable[int] | None = None
) -> dict[int, dict[ConsentKind, bool]]:
    """Each patient's consent now: the latest change of each kind (absent = not given)."""
    query = select(ConsentChange).order_by(ConsentChange.id)
    if patient_ids is not None:
        query = query.where(ConsentChange.patient_id.in_(list(patient_ids)))
    consent: dict[int, dict[ConsentKind, bool]] = defaultdict(dict)
    for change in session.scalars(query):
        consent[change.patient_id][change.kind] = change.granted
    return consent


def cadence_in_force(history: Sequence[CadenceChange], now: datetime) -> CadenceChange | None:
    """The latest change made up to `now` (history in the order it was written);
    before the first one, the starting point itself."""
    in_force = [c for c in history if c.changed_at <= now]
    if in_force:
        return in_force[-1]
    return history[0] if history else None


def load_facts(
    session: Session, now: datetime, patient_ids: Iterable[int] | None = None
) -> list[PatientFacts]:
    """Every patient's facts as they stand at `now`."""
    patient_query = select(Patient).order_by(Patient.id)
    appointment_query = select(Appointment).order_by(Appointment.starts_at)
    history_query = select(CadenceChange).order_by(CadenceChange.id)
    ids = None if patient_ids is None else list(patient_ids)
    if ids is not None:
        patient_query = patient_query.where(Patient.id.in_(ids))
        appointment_query = appointment_query.where(Appointment.patient_id.in_(ids))
        history_query = history_query.where(CadenceChange.patient_id.in_(ids))
    appointments: dict[int, list[AppointmentFact]] = defaultdict(list)
    for appointment in session.scalars(appointment_query):
        appointments[appointment.patient_id].append(
            AppointmentFact(appointment.id, appointment.starts_at, appointment.status)
        )
    histories: dict[int, list[CadenceChange]] = defaultdict(list)
    for change in session.scalars(history_query):
        histories[change.patient_id].append(change)
    consent = current_consent(session, ids)

    def facts(patient: Patient) -> PatientFacts:
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
        )

    return [facts(patient) for patient in session.scalars(patient_query)]

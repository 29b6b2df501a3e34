"""Reading patients' facts out of the database into the plain values the rules use."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.domain import AppointmentFact, ConsentKind, Contacts, PatientFacts
from scheduler.models import Appointment, ConsentChange, Patient


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


def load_facts(session: Session, patient_ids: Iterable[int] | None = None) -> list[PatientFacts]:
    patient_query = select(Patient).order_by(Patient.id)
    appointment_query = select(Appointment).order_by(Appointment.starts_at)
    ids = None if patient_ids is None else list(patient_ids)
    if ids is not None:
        patient_query = patient_query.where(Patient.id.in_(ids))
        appointment_query = appointment_query.where(Appointment.patient_id.in_(ids))
    appointments: dict[int, list[AppointmentFact]] = defaultdict(list)
    for appointment in session.scalars(appointment_query):
        appointments[appointment.patient_id].append(
            AppointmentFact(appointment.id, appointment.starts_at, appointment.status)
        )
    consent = current_consent(session, ids)
    return [
        PatientFacts(
            id=patient.id,
            phase=patient.phase,
            reminders_opt_in=consent[patient.id].get(ConsentKind.REMINDERS, False),
            newsletter_opt_in=consent[patient.id].get(ConsentKind.NEWSLETTER, False),
            preferred_channel=patient.preferred_channel,
            contacts=contacts_of(patient),
            appointments=tuple(appointments[patient.id]),
        )
        for patient in session.scalars(patient_query)
    ]

"""Changing and reading one patient: phase and cadence (with their history), and
what `tayori patient show` prints."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import case, or_, select, update
from sqlalchemy.orm import Session

from scheduler.core.cadence import EffectiveCadence, effective_cadence, is_lapsed, last_visit
from scheduler.core.config import Rules
from scheduler.core.domain import ChannelName, ConsentKind, DeliveryState, Phase
from scheduler.store.clinics import clinic_of
from scheduler.store.facts import load_facts
from scheduler.store.models import CadenceChange, ConsentChange, Delivery, Patient
from scheduler.store.replan import mark_for_planning

CADENCE_DAYS = range(1, 91)


def record_cadence(
    session: Session,
    patient: Patient,
    now: datetime,
    source: str,
    *,
    phase: Phase | None,
    nudge_after_days: int | None,
    follow_up_days: int | None,
    is_new: bool = False,
) -> bool:
    """Set the patient's phase and own cadence, appending to the history when they
    change (a new patient's first entry is their starting point). Returns whether
    anything changed."""
    wanted = (phase, nudge_after_days, follow_up_days)
    for days in wanted[1:]:
        if days is not None and days not in CADENCE_DAYS:
            raise ValueError(f"cadence days must be 1 to 90, got {days}")
    if not is_new and (patient.phase, patient.nudge_after_days, patient.follow_up_days) == wanted:
        return False
    patient.phase, patient.nudge_after_days, patient.follow_up_days = wanted
    session.add(
        CadenceChange(
            patient_id=patient.id,
            phase=phase,
            nudge_after_days=nudge_after_days,
            follow_up_days=follow_up_days,
            changed_at=now,
            source=source,
        )
    )
    return True


def mark_contact_unusable(
    session: Session,
    patient_id: int,
    channel: ChannelName,
    reason: str,
    now: datetime,
    tz: ZoneInfo,
) -> None:
    """A channel said this contact cannot receive: keep it (the clinic can ask the
    patient) but use it no more, and say why and since which (clinic-local) day."""
    note = f"{reason} (since {now.astimezone(tz):%Y-%m-%d})"
    column = "line_unusable_reason" if channel is ChannelName.LINE else "email_unusable_reason"
    session.execute(
        update(Patient).where(Patient.id == patient_id).values({column: note, "updated_at": now})
    )
    mark_for_planning(session, [patient_id])


def find_patient(session: Session, external_id: str) -> Patient | None:
    """The clinic's patient with this number."""
    return session.scalars(
        select(Patient).where(
            Patient.clinic_id == clinic_of(session), Patient.external_id == external_id
        )
    ).first()


@dataclass(frozen=True)
class PatientView:
    patient: Patient
    cadence: EffectiveCadence | None
    last_visit: datetime | None
    lapsed: bool
    consent: dict[ConsentKind, bool]
    consent_history: list[ConsentChange]
    cadence_history: list[CadenceChange]
    upcoming: list[Delivery]
    history: list[Delivery]


def view_patient(session: Session, patient: Patient, now: datetime, rules: Rules) -> PatientView:
    [facts] = load_facts(session, now, [patient])
    deliveries = list(
        session.scalars(
            select(Delivery)
            .where(Delivery.patient_id == patient.id)
            .order_by(Delivery.send_after, Delivery.id)
        )
    )
    return PatientView(
        patient=patient,
        cadence=effective_cadence(facts, rules),
        last_visit=last_visit(facts, now),
        lapsed=is_lapsed(facts, now, rules),
        consent={
            ConsentKind.REMINDERS: facts.reminders_opt_in,
            ConsentKind.NEWSLETTER: facts.newsletter_opt_in,
        },
        consent_history=list(patient.consent_changes),
        cadence_history=list(patient.cadence_changes),
        upcoming=[d for d in deliveries if d.state is DeliveryState.PLANNED],
        history=[d for d in deliveries if d.state is not DeliveryState.PLANNED],
    )


def search_patients(session: Session, text: str, limit: int, offset: int = 0) -> list[Patient]:
    """The clinic's patients whose number or name holds `text` (letters in any
    case; also as NFKC folds it, so a number typed in full-width digits is found),
    the patient whose number it is first, then by number; at most `limit` from
    `offset`. An empty `text` lists every patient by number."""
    query = select(Patient).where(Patient.clinic_id == clinic_of(session))
    wanted = text.strip()
    if wanted:
        variants = {wanted, unicodedata.normalize("NFKC", wanted)}
        query = query.where(
            or_(
                *(Patient.external_id.icontains(v, autoescape=True) for v in variants),
                *(Patient.name.icontains(v, autoescape=True) for v in variants),
            )
        )
        exact = case((Patient.external_id.in_(variants), 0), else_=1)
        query = query.order_by(exact, Patient.external_id)
    else:
        query = query.order_by(Patient.external_id)
    return list(session.scalars(query.limit(limit).offset(offset)))

"""Forgetting a patient at their request (`tayori forget`): what identifies them is
erased; what can be counted without them stays.

Erased: the name (a placeholder takes its place), the email address, the LINE user
id, the notes on why a contact was unusable, when LINE was linked, the link code,
the wrong link codes counted against their LINE user id, and the bodies of the LINE
webhook events their LINE sent that have been dealt with.

Kept, without anything that names the patient: the record itself under the
clinic's patient number (so that a later import of the same number is refused
rather than bringing the data back), phase and cadence history, appointments, the
consent history (with the withdrawal, source `forget`), and the delivery log (no
message text is ever stored; its errors quote no contact).

Every consent is withdrawn, and every planned message withdrawn through the outbox,
so nothing more is planned or sent for the patient.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from scheduler.core.domain import PATIENT_REASONS, ConsentKind, Reason
from scheduler.store.clinics import clinic_of
from scheduler.store.consent import ConsentSource, record_consent, withdraw_planned
from scheduler.store.models import Delivery, LinkCode, LinkFailure, Patient, WebhookEvent

FORGOTTEN_NAME = "(forgotten)"
REDACTED_EVENT = '{"redacted": "the patient was forgotten"}'
# Every message a patient can be sent: newsletters have no folder of their own.
_PATIENT_MESSAGES: tuple[Reason, ...] = (*PATIENT_REASONS, Reason.NEWSLETTER)


@dataclass(frozen=True)
class Forgotten:
    consent_withdrawn: int  # kinds of consent that were in force
    withdrawn: int  # planned messages withdrawn
    delivery_ids: list[str]  # every delivery of the patient's (their preview files go too)


def forget_patient(session: Session, patient: Patient, now: datetime) -> Forgotten:
    if patient.forgotten_at is not None:
        raise ValueError(f"patient {patient.external_id} was forgotten already")
    # Every planned message first, so that each says why it was withdrawn; the
    # consent withdrawn next then finds none left to withdraw.
    withdrawn = withdraw_planned(session, patient.id, _PATIENT_MESSAGES, "patient forgotten", now)
    consent_withdrawn = sum(
        record_consent(session, patient.id, kind, False, ConsentSource.FORGET, now)
        for kind in ConsentKind
    )
    session.execute(delete(LinkCode).where(LinkCode.patient_id == patient.id))
    if patient.line_user_id:
        _forget_line_user(session, patient.line_user_id)
    patient.name = FORGOTTEN_NAME
    patient.email = None
    patient.line_user_id = None
    patient.email_unusable_reason = None
    patient.line_unusable_reason = None
    patient.line_linked_at = None
    patient.forgotten_at = now
    patient.updated_at = now
    delivery_ids = list(
        session.scalars(select(Delivery.id).where(Delivery.patient_id == patient.id))
    )
    return Forgotten(consent_withdrawn, withdrawn, delivery_ids)


def _forget_line_user(session: Session, line_user_id: str) -> None:
    """What the LINE side holds of the patient: wrong codes counted against their
    LINE user id, and the events their LINE sent. An event not yet dealt with is
    left to the webhook's processing (it finds no patient with that id any more)."""
    clinic_id = clinic_of(session)
    session.execute(
        delete(LinkFailure).where(
            LinkFailure.clinic_id == clinic_id, LinkFailure.line_user_id == line_user_id
        )
    )
    session.execute(
        update(WebhookEvent)
        .where(
            WebhookEvent.clinic_id == clinic_id,
            WebhookEvent.processed_at.is_not(None),
            WebhookEvent.body.contains(line_user_id, autoescape=True),
        )
        .values(body=REDACTED_EVENT),
        execution_options={"synchronize_session": False},
    )

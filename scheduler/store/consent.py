"""Consent: an append-only record of each patient's changes, by kind; what is in
force is the latest change of each kind (absent: not given).

Every source records here: an import, the CLI, LINE (「配信停止」, linking), an
unsubscribe link, the desk. A withdrawal withdraws at once, through the outbox, the
planned messages it no longer allows; a grant lets the next cycle plan them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.core.domain import ConsentKind, DeliveryState, Reason
from scheduler.outbox import transitions
from scheduler.store.facts import current_consent
from scheduler.store.models import ConsentChange, Delivery


class ConsentSource(StrEnum):
    IMPORT = "import"
    DEMO = "demo"
    CLI = "cli"
    LINE = "line"
    UNSUBSCRIBE_LINK = "unsubscribe link"
    DESK = "desk"
    FORGET = "forget"  # the patient's data erased on request


# The messages each kind of consent allows.
ALLOWS: dict[ConsentKind, tuple[Reason, ...]] = {
    ConsentKind.REMINDERS: (
        Reason.CADENCE_NUDGE,
        Reason.CADENCE_FOLLOW_UP,
        Reason.APPOINTMENT_REMINDER,
        Reason.NO_SHOW_FOLLOW_UP,
    ),
    ConsentKind.NEWSLETTER: (Reason.NEWSLETTER,),
}


def record_consent(
    session: Session,
    patient_id: int,
    kind: ConsentKind,
    granted: bool,
    source: ConsentSource,
    now: datetime,
) -> bool:
    """Append a change of consent, unless it is already so; whether it changed."""
    in_force = current_consent(session, [patient_id]).get(patient_id, {}).get(kind, False)
    if in_force == granted:
        return False
    session.add(
        ConsentChange(
            patient_id=patient_id, kind=kind, granted=granted, changed_at=now, source=source
        )
    )
    if not granted:
        withdraw_planned(session, patient_id, ALLOWS[kind], f"consent withdrawn ({source})", now)
    return True


def withdraw_planned(
    session: Session, patient_id: int, reasons: tuple[Reason, ...], why: str, now: datetime
) -> int:
    """Withdraw a patient's planned messages of these reasons, through the outbox."""
    planned = session.scalars(
        select(Delivery.id).where(
            Delivery.patient_id == patient_id,
            Delivery.state == DeliveryState.PLANNED,
            Delivery.reason.in_(reasons),
        )
    ).all()
    return transitions.withdraw(session, planned, now, why)

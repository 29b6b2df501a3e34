"""What the practitioner or the operator does by hand: send one sample message now,
or queue a failed message again. Both go through the outbox like every message."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.db import transaction
from scheduler.domain import AppointmentStatus, ChannelName, DeliveryState, Reason
from scheduler.models import Appointment, Delivery, new_delivery_id
from scheduler.patients import find_patient
from scheduler.runtime import Runtime
from scheduler.templates import template_name

SAMPLE_NOT_RETRIED = "a sample is not retried: fix the cause and send it again"
# The appointment a sample reminder or no-show follow-up talks about.
SAMPLE_APPOINTMENT = {
    Reason.APPOINTMENT_REMINDER: AppointmentStatus.BOOKED,
    Reason.NO_SHOW_FOLLOW_UP: AppointmentStatus.NO_SHOW,
}


def send_sample(
    runtime: Runtime, external_id: str, reason: Reason, channel: ChannelName, now: datetime
) -> tuple[str, str]:
    """Send `reason`'s message to one patient by `channel` at once; the delivery id
    and its outcome ("sent", "failed", "skipped"). Counts against LINE's quota."""
    delivery_id = new_delivery_id()
    with transaction(runtime.sessions) as session:
        patient = find_patient(session, external_id)
        if patient is None:
            raise LookupError(f"no patient with external_id {external_id!r}")
        appointment_id = None
        if reason in SAMPLE_APPOINTMENT:
            status = SAMPLE_APPOINTMENT[reason]
            appointment_id = session.scalar(
                select(Appointment.id)
                .where(Appointment.patient_id == patient.id, Appointment.status == status)
                .order_by(Appointment.starts_at.desc())
                .limit(1)
            )
            if appointment_id is None:
                raise LookupError(
                    f"patient {external_id!r} has no {status.value} appointment for a "
                    f"sample {reason.value}"
                )
        # Already claimed, so no worker picks it up: it is sent here and now.
        session.add(
            Delivery(
                id=delivery_id,
                idempotency_key=f"sample:{delivery_id}",
                patient_id=patient.id,
                appointment_id=appointment_id,
                reason=reason,
                channel=channel,
                template=template_name(reason, channel),
                send_after=now,
                state=DeliveryState.SENDING,
                attempts=1,
                claimed_at=now,
                first_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
        )
    dispatcher = runtime.dispatcher
    try:
        outcome = dispatcher.deliver(delivery_id, dispatcher.start_cycle(now), channel=channel)
    finally:
        dispatcher.close_transports()
    if outcome in ("sent", "skipped"):
        return delivery_id, outcome
    with transaction(runtime.sessions) as session:
        delivery = session.get_one(Delivery, delivery_id)
        delivery.state = DeliveryState.FAILED
        delivery.last_error = f"{delivery.last_error}; {SAMPLE_NOT_RETRIED}"
    return delivery_id, "failed"


def requeue(session: Session, delivery_id: str, now: datetime) -> Delivery:
    """Put a failed or skipped delivery back in the outbox, due now, with fresh
    attempts. It keeps its id, so LINE and mail clients still recognise it."""
    delivery = session.get(Delivery, delivery_id)
    if delivery is None:
        raise LookupError(f"no delivery {delivery_id!r}")
    if delivery.state not in (DeliveryState.FAILED, DeliveryState.SKIPPED):
        raise LookupError(
            f"delivery {delivery_id} is {delivery.state.value}: only failed or skipped "
            "deliveries can be queued again"
        )
    delivery.state = DeliveryState.PLANNED
    delivery.send_after = now
    delivery.attempts = 0
    delivery.first_attempt_at = None
    delivery.last_error = f"queued again by hand; before: {delivery.last_error or '-'}"
    delivery.updated_at = now
    return delivery

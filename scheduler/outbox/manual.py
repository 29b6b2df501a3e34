"""What the practitioner or the operator does by hand: see a message as a patient
would, send one sample now, or queue a failed message again. Each goes through the
same composing and rendering as the worker's messages."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.channels import OutgoingMessage
from scheduler.core.domain import (
    AppointmentStatus,
    ChannelName,
    ConsentKind,
    DeliveryState,
    Phase,
    Reason,
)
from scheduler.messages.context import sample_context
from scheduler.messages.templates import template_name
from scheduler.outbox.dispatcher import RETRY_KEY_WINDOW
from scheduler.runtime import Runtime
from scheduler.store.db import transaction
from scheduler.store.facts import current_consent
from scheduler.store.models import Appointment, Delivery, Patient, new_delivery_id
from scheduler.store.patients import find_patient

SAMPLE_NOT_RETRIED = "a sample is not retried: fix the cause and send it again"
# The appointment a sample reminder or no-show follow-up talks about.
SAMPLE_APPOINTMENT = {
    Reason.APPOINTMENT_REMINDER: AppointmentStatus.BOOKED,
    Reason.NO_SHOW_FOLLOW_UP: AppointmentStatus.NO_SHOW,
}


def preview_message(
    runtime: Runtime,
    reason: Reason,
    channel: ChannelName,
    now: datetime,
    external_id: str | None = None,
) -> OutgoingMessage:
    """What a patient (or, without `external_id`, a made-up one) would receive."""
    settings = runtime.settings
    delivery = Delivery(id=f"preview-{new_delivery_id()}", reason=reason, channel=channel)
    if external_id is None:
        context = sample_context(reason, Phase.ACUTE, settings.clinic, now, settings.timezone)
        return runtime.dispatcher.render_message(
            delivery, channel, "(sample)", context, context["unsubscribe_url"]
        )
    with runtime.sessions() as session:
        patient = _patient(session, external_id)
        delivery.patient_id = patient.id
        delivery.appointment_id = _appointment_for(session, patient.id, reason)
        try:
            return runtime.dispatcher.preview(session, delivery, channel, now)
        finally:
            session.rollback()  # a preview changes nothing


def send_sample(
    runtime: Runtime, external_id: str, reason: Reason, channel: ChannelName, now: datetime
) -> tuple[str, str]:
    """Send `reason`'s message to one patient by `channel` at once; the delivery id
    and its outcome ("sent", "failed", "skipped"). Counts against LINE's quota."""
    delivery_id = new_delivery_id()
    with transaction(runtime.sessions) as session:
        patient = _patient(session, external_id)
        consent = current_consent(session, [patient.id]).get(patient.id, {})
        if not consent.get(ConsentKind.REMINDERS):
            raise LookupError(
                f"patient {external_id!r} has not agreed to receive reminders: "
                "use a record with your own contact for samples"
            )
        appointment_id = _appointment_for(session, patient.id, reason)
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


def _patient(session: Session, external_id: str) -> Patient:
    patient = find_patient(session, external_id)
    if patient is None:
        raise LookupError(f"no patient with external_id {external_id!r}")
    return patient


def _appointment_for(session: Session, patient_id: int, reason: Reason) -> int | None:
    """The appointment a reminder or no-show follow-up talks about: the patient's
    latest one in that state."""
    status = SAMPLE_APPOINTMENT.get(reason)
    if status is None:
        return None
    appointment_id = session.scalar(
        select(Appointment.id)
        .where(Appointment.patient_id == patient_id, Appointment.status == status)
        .order_by(Appointment.starts_at.desc())
        .limit(1)
    )
    if appointment_id is None:
        raise LookupError(f"the patient has no {status.value} appointment for a {reason.value}")
    return appointment_id


def requeue(session: Session, delivery_id: str, now: datetime) -> Delivery:
    """Put a failed or skipped delivery back in the outbox, due now, with fresh
    attempts. It keeps its id, so LINE (for 24 hours) and mail clients still
    recognise it. A message the rules no longer want (its appointment passed, its
    campaign ended) is withdrawn again by the next cycle."""
    delivery = session.get(Delivery, delivery_id)
    if delivery is None:
        raise LookupError(f"no delivery {delivery_id!r}")
    if delivery.state not in (DeliveryState.FAILED, DeliveryState.SKIPPED):
        raise LookupError(
            f"delivery {delivery_id} is {delivery.state.value}: only failed or skipped "
            "deliveries can be queued again"
        )
    if delivery.line_uncertain_since and now - delivery.line_uncertain_since >= RETRY_KEY_WINDOW:
        raise LookupError(
            f"delivery {delivery_id} may have reached the patient by LINE already, and "
            "LINE no longer recognises its retry key: it is not queued again (send a new "
            "message with `tayori send-test` if one is needed)"
        )
    delivery.state = DeliveryState.PLANNED
    delivery.send_after = now
    delivery.attempts = 0
    delivery.last_error = f"queued again by hand; before: {delivery.last_error or '-'}"
    delivery.updated_at = now
    return delivery

"""What the practitioner or the operator does by hand: see a message as a patient
would, send one sample now, send a coming message to oneself, or queue a failed
message again. Each goes through the same composing and rendering as the worker's
messages."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.channels import OutgoingMessage
from scheduler.core.domain import (
    AppointmentStatus,
    ChannelName,
    ConsentKind,
    Phase,
    Reason,
    member,
)
from scheduler.core.failure_policy import retry_key_expired
from scheduler.core.routing import choose_channel
from scheduler.messages.context import sample_context
from scheduler.messages.template_names import template_name
from scheduler.messages.templates import Renderer
from scheduler.outbox import transitions
from scheduler.outbox.composer import Composer, read_batch
from scheduler.outbox.recorder import SAMPLE_NOT_RETRIED
from scheduler.outbox.transitions import Claim, Claimed
from scheduler.runtime import Runtime
from scheduler.store.clinics import clinic_of
from scheduler.store.db import reading, transaction
from scheduler.store.facts import current_consent
from scheduler.store.models import (
    Appointment,
    Delivery,
    Patient,
    new_delivery_id,
    new_public_id,
)
from scheduler.store.patients import find_patient

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
    renderer: Renderer | None = None,
) -> OutgoingMessage:
    """What a patient (or, without `external_id`, a made-up one) would receive,
    rendered by `renderer` (the desk's editor passes one with the text being edited
    in its file's place) or else the worker's own."""
    settings = runtime.settings
    dispatcher = runtime.dispatcher
    if external_id is None:
        context = sample_context(reason, Phase.ACUTE, settings.clinic, now, settings.timezone)
        claimed = _unsaved(f"preview-{new_delivery_id()}", reason, None, None)
        composer = dispatcher.composer if renderer is None else Composer(settings, renderer)
        return composer.render(
            claimed, channel, "(sample)", context, context["unsubscribe_url"], now
        )
    with reading(runtime.sessions) as session:
        patient = _patient(session, external_id)
        appointment_id = _appointment_for(session, patient.id, reason)
        claimed = _unsaved(f"preview-{new_delivery_id()}", reason, patient.id, appointment_id)
        return dispatcher.preview(session, claimed, channel, now, renderer)


def send_sample(
    runtime: Runtime, external_id: str, reason: Reason, channel: ChannelName, now: datetime
) -> tuple[str, str]:
    """Send `reason`'s message to one patient by `channel` at once; the delivery id
    and its outcome ("sent", "failed", "skipped"). Counts against LINE's quota."""
    dispatcher = runtime.dispatcher
    delivery_id = new_delivery_id()
    claimed_at = time.monotonic()
    with transaction(runtime.sessions) as session:
        patient = _patient(session, external_id)
        consent = current_consent(session, [patient.id]).get(patient.id, {})
        if not consent.get(ConsentKind.REMINDERS):
            raise LookupError(
                f"patient {external_id!r} has not agreed to receive reminders: "
                "use a record with your own contact for samples"
            )
        appointment_id = _appointment_for(session, patient.id, reason)
        db_now = dispatcher.database_clock.read(session)
        # Already claimed, so no worker picks it up: it is sent here and now.
        claim = transitions.claim_new(
            session,
            {
                "id": delivery_id,
                "idempotency_key": f"sample:{delivery_id}",
                "patient_id": patient.id,
                "appointment_id": appointment_id,
                "reason": reason,
                "channel": channel,
                "template": template_name(reason, channel),
                "send_after": now,
                "created_at": now,
                "updated_at": now,
            },
            db_now=db_now,
            lease=dispatcher.lease,
        )
    claimed = replace(_unsaved(delivery_id, reason, patient.id, appointment_id), claim=claim)
    try:
        return delivery_id, dispatcher.send_now(claimed, channel, now, db_now, claimed_at)
    except BaseException:
        # Not left for a worker to send later: a sample goes now or not at all.
        with transaction(runtime.sessions) as session:
            transitions.fail(session, claim, f"could not be sent; {SAMPLE_NOT_RETRIED}", now)
        raise


def _unsaved(
    delivery_id: str, reason: Reason, patient_id: int | None, appointment_id: int | None
) -> Claimed:
    """A delivery as if claimed: for a preview, or a sample sent at once."""
    return Claimed(
        claim=Claim(delivery_id, token=""),
        patient_id=patient_id,
        appointment_id=appointment_id,
        reason=reason,
        channel=None,
        campaign_id=None,
        campaign_day=None,
        tip_id=None,
        attempts=1,
        line_first_request_at=None,
    )


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


def requeue(session: Session, delivery_id: str, now: datetime, db_now: datetime) -> Delivery:
    """Put a failed or skipped delivery back in the outbox, due now, with fresh
    attempts. It keeps its id, so LINE (for 24 hours) and mail clients still
    recognise it. A message the rules no longer want (its appointment passed, its
    campaign ended) is withdrawn again by the next cycle. `db_now` is the database's
    time, on which LINE's retry-key window is measured."""
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or delivery.clinic_id != clinic_of(session):
        raise LookupError(f"no delivery {delivery_id!r}")
    first_request = delivery.line_first_request_at
    if delivery.maybe_sent and first_request and retry_key_expired(db_now - first_request):
        raise LookupError(
            f"delivery {delivery_id} may have reached the patient by LINE already, and "
            "LINE no longer recognises its retry key: it is not queued again (send a new "
            "message with `tayori send-test` if one is needed)"
        )
    note = f"queued again by hand; before: {delivery.last_error or '-'}"
    if not transitions.requeue(session, delivery_id, now, note):
        raise LookupError(
            f"delivery {delivery_id} is {delivery.state.value}: only failed or skipped "
            "deliveries can be queued again"
        )
    session.refresh(delivery)
    return delivery


@dataclass(frozen=True)
class MessageKey:
    """What a patient message's idempotency key (`reason:occurrence:patient`) names."""

    reason: Reason
    patient_id: int
    appointment_id: int | None = None  # occurrence "a<id>"
    campaign_id: str | None = None  # occurrence "<campaign>:<day>"
    campaign_day: date | None = None


def parse_key(key: str) -> MessageKey:
    """The parts of a patient message's key; ValueError for anything else."""
    first, _, rest = key.partition(":")
    occurrence, _, patient = rest.rpartition(":")
    reason = member(Reason, first)
    if reason is None or reason is Reason.DAILY_DIGEST or not occurrence or not _row_id(patient):
        raise ValueError(f"{key!r} is not the key of a patient's message")
    parts = MessageKey(reason, int(patient))
    if reason in SAMPLE_APPOINTMENT:
        if not (occurrence.startswith("a") and _row_id(occurrence[1:])):
            raise ValueError(f"{key!r} names no appointment")
        return replace(parts, appointment_id=int(occurrence[1:]))
    if reason is Reason.NEWSLETTER:
        campaign, _, day = occurrence.rpartition(":")
        try:
            return replace(parts, campaign_id=campaign, campaign_day=date.fromisoformat(day))
        except ValueError:
            raise ValueError(f"{key!r} names no campaign day") from None
    return parts


def _row_id(text: str) -> bool:
    """A row id the databases can hold (a 64-bit integer: 18 digits at most)."""
    return text.isdigit() and len(text) <= 18


COPY_SUBJECT = "【確認用】"


def send_copy(runtime: Runtime, key: str, address: str, now: datetime) -> str:
    """Send the coming message of `key`, composed for its patient as it would be now,
    to `address` (a staff member's own) by email, or to the preview folder when the
    clinic has no SMTP; the id the copy went under. Never to the patient, and not a
    delivery: no outbox row (nothing of the patient's record changes, no tip is
    spent), no LINE message counted. LookupError if the key names no patient of the
    clinic; TemplateError, DeliveryError as composing and sending raise them."""
    parts = parse_key(key)
    dispatcher = runtime.dispatcher
    copy_id = f"copy-{new_delivery_id()}"
    claimed = replace(
        _unsaved(copy_id, parts.reason, parts.patient_id, parts.appointment_id),
        campaign_id=parts.campaign_id,
        campaign_day=parts.campaign_day,
    )
    with reading(runtime.sessions) as session:
        patient = session.get(Patient, parts.patient_id)
        if patient is None or patient.clinic_id != clinic_of(session):
            raise LookupError(f"no patient of this clinic for {key!r}")
        batch = read_batch(session, [claimed], now, runtime.settings)
    # A fresh random public id in place of the patient's: the copy's unsubscribe link
    # then stops no one's messages, whoever clicks it.
    recipient = replace(
        batch.recipients[parts.patient_id], email=address, public_id=new_public_id()
    )
    batch = replace(batch, recipients={parts.patient_id: recipient})
    day = dispatcher.day(now)
    if choose_channel(recipient.preferred_channel, recipient.contacts) is ChannelName.LINE:
        # The patient will read it on LINE: the copy carries the LINE text, by mail.
        line, _ = dispatcher.composer.message(claimed, ChannelName.LINE, batch, day)
        message = OutgoingMessage(
            delivery_id=copy_id,
            channel=ChannelName.EMAIL,
            reason=line.reason,
            to=address,
            text=line.text,
            date=line.date,
            subject=f"{COPY_SUBJECT}LINEでお送りする内容",
        )
    else:
        message, _ = dispatcher.composer.message(claimed, ChannelName.EMAIL, batch, day)
        message = replace(message, subject=COPY_SUBJECT + (message.subject or ""))
    dispatcher.transports[ChannelName.EMAIL].send(message)
    return copy_id

"""The dispatcher: claims due deliveries, renders them, sends them through a
channel and records the outcome, one delivery at a time, each step committed.

A delivery moves planned → sending → sent | failed | skipped. A worker that dies
while `sending` leaves a row whose lease runs out; the next worker takes it again
with the same delivery id, which the channel uses to recognise the resend.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from scheduler.cadence import last_visit
from scheduler.channels import DeliveryError, Failure, OutgoingMessage, Transport
from scheduler.context import message_context
from scheduler.db import transaction
from scheduler.digest import build_digest, digest_context
from scheduler.domain import AppointmentStatus, ChannelName, DeliveryState, Reason
from scheduler.facts import contacts_of, load_facts
from scheduler.models import Appointment, Delivery, Patient
from scheduler.retry import retry_at
from scheduler.routing import NO_USABLE_CONTACT, choose_channel
from scheduler.settings import Settings
from scheduler.templates import Renderer, TemplateError, template_name
from scheduler.window import is_open

log = logging.getLogger(__name__)


@dataclass
class DispatchSummary:
    counts: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, outcome: str) -> None:
        with self._lock:
            self.counts[outcome] = self.counts.get(outcome, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class _Skip(Exception):
    """The delivery cannot go anywhere; it is recorded as skipped with the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Dispatcher:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        renderer: Renderer,
        transports: Mapping[ChannelName, Transport],
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.renderer = renderer
        self.transports = transports

    def dispatch_due(
        self, now: datetime, should_stop: Callable[[], bool] = lambda: False
    ) -> DispatchSummary:
        """Send everything due at `now` (to patients only inside the send window),
        `dispatch.concurrency` messages at a time so network waits overlap."""
        summary = DispatchSummary()

        def send_until_done() -> None:
            while not should_stop():
                outcome = self.handle_one(now)
                if outcome is None:
                    return
                summary.add(outcome)

        lanes = self.settings.dispatch.concurrency
        try:
            if lanes == 1:
                send_until_done()
            else:
                with ThreadPoolExecutor(lanes, thread_name_prefix="dispatch") as pool:
                    for lane in [pool.submit(send_until_done) for _ in range(lanes)]:
                        lane.result()
        finally:
            # One transport may serve both channels (the preview): close it once.
            for transport in {id(t): t for t in self.transports.values()}.values():
                transport.close()
        return summary

    def handle_one(self, now: datetime) -> str | None:
        """Claim, send and record one due delivery; None when nothing is due."""
        delivery_id = self._claim(now)
        if delivery_id is None:
            return None
        failure: DeliveryError | None = None
        with transaction(self.sessions) as session:
            delivery = session.get_one(Delivery, delivery_id)
            try:
                message = self._compose(session, delivery, now)
            except _Skip as skip:
                return self._finish(session, delivery, DeliveryState.SKIPPED, now, skip.reason)
            except TemplateError as e:
                # The practitioner can mend a template: retry like a passing failure
                # rather than give up on the message at once.
                log.error("template problem: %s", e)
                failure = DeliveryError(str(e), Failure.TRANSIENT)
        if failure is not None:
            return self._record_failure(delivery_id, failure, now)
        # The network call happens outside any transaction: the claim is committed,
        # and the outcome is recorded in a transaction of its own.
        try:
            receipt = self.transports[message.channel].send(message)
        except DeliveryError as e:
            return self._record_failure(delivery_id, e, now)
        with transaction(self.sessions) as session:
            delivery = session.get_one(Delivery, delivery_id)
            delivery.provider_message_id = receipt.provider_message_id
            delivery.sent_at = now
            return self._finish(session, delivery, DeliveryState.SENT, now, None)

    def _claim(self, now: datetime) -> str | None:
        lease_expired = now - timedelta(seconds=self.settings.dispatch.lease_seconds)
        claimable = or_(
            and_(Delivery.state == DeliveryState.PLANNED, Delivery.send_after <= now),
            and_(Delivery.state == DeliveryState.SENDING, Delivery.claimed_at < lease_expired),
        )
        rules = self.settings.rules
        if not is_open(now, rules.window, rules.timezone):
            # Outside the send window only the clinic's own digest may go.
            claimable = and_(claimable, Delivery.reason == Reason.DAILY_DIGEST)
        while True:
            with transaction(self.sessions) as session:
                candidate = session.execute(
                    select(Delivery.id, Delivery.state, Delivery.claimed_at)
                    .where(claimable)
                    .order_by(Delivery.send_after, Delivery.id)
                    .limit(1)
                    .with_for_update(skip_locked=True)  # PostgreSQL; SQLite locks the file
                ).first()
                if candidate is None:
                    return None
                # Conditional update: if another worker took the row between our read
                # and this write, nothing changes and we look for the next one.
                taken = session.execute(
                    update(Delivery)
                    .where(
                        Delivery.id == candidate.id,
                        Delivery.state == candidate.state,
                        _same_claim(candidate.claimed_at),
                    )
                    .values(
                        state=DeliveryState.SENDING,
                        claimed_at=now,
                        attempts=Delivery.attempts + 1,
                        updated_at=now,
                    )
                )
                if taken.rowcount == 1:  # type: ignore[attr-defined]
                    return str(candidate.id)

    def _compose(self, session: Session, delivery: Delivery, now: datetime) -> OutgoingMessage:
        if delivery.patient_id is None:
            return self._compose_digest(session, delivery, now)
        patient = session.get_one(Patient, delivery.patient_id)
        # Chosen again at sending: a contact may have been blocked since planning.
        channel = choose_channel(patient.preferred_channel, contacts_of(patient))
        if channel is None:
            raise _Skip(NO_USABLE_CONTACT)
        facts = load_facts(session, now, [patient.id])[0]
        upcoming = [
            a.starts_at
            for a in facts.appointments
            if a.status is AppointmentStatus.BOOKED and a.starts_at > now
        ]
        appointment = (
            session.get(Appointment, delivery.appointment_id) if delivery.appointment_id else None
        )
        context = message_context(
            reason=delivery.reason,
            patient_name=patient.name,
            phase=facts.phase,
            last_visit=last_visit(facts, now),
            next_visit=min(upcoming, default=None),
            appointment_at=appointment.starts_at if appointment else None,
            clinic=self.settings.clinic,
            now=now,
            tz=self.settings.timezone,
        )
        delivery.channel = channel
        delivery.template = template_name(delivery.reason, channel)
        address = patient.line_user_id if channel is ChannelName.LINE else patient.email
        assert address is not None  # choose_channel only picks a present contact
        return self._message(delivery, channel, address, context)

    def _compose_digest(
        self, session: Session, delivery: Delivery, now: datetime
    ) -> OutgoingMessage:
        channel = delivery.channel
        assert channel is not None  # digest rows are planned with their channel
        digest = self.settings.digest
        address = digest.line_user_id if channel is ChannelName.LINE else digest.email
        if not address:
            raise _Skip(f"no digest {channel.value} address in the settings any more")
        context = digest_context(build_digest(session, now, self.settings), self.settings)
        return self._message(delivery, channel, address, context)

    def _message(
        self, delivery: Delivery, channel: ChannelName, address: str, context: dict[str, Any]
    ) -> OutgoingMessage:
        rendered = self.renderer.render(template_name(delivery.reason, channel), context)
        return OutgoingMessage(
            delivery_id=delivery.id,
            channel=channel,
            reason=delivery.reason,
            to=address,
            text=rendered.text,
            subject=rendered.subject,
        )

    def _record_failure(self, delivery_id: str, error: DeliveryError, now: datetime) -> str:
        with transaction(self.sessions) as session:
            delivery = session.get_one(Delivery, delivery_id)
            next_try = (
                None
                if not error.retryable
                else retry_at(delivery.id, delivery.attempts, now, self.settings.dispatch)
            )
            if next_try is None:
                return self._finish(session, delivery, DeliveryState.FAILED, now, error.reason)
            delivery.send_after = next_try
            return self._finish(session, delivery, DeliveryState.PLANNED, now, error.reason)

    def _finish(
        self,
        session: Session,
        delivery: Delivery,
        state: DeliveryState,
        now: datetime,
        error: str | None,
    ) -> str:
        delivery.state = state
        delivery.last_error = error
        delivery.updated_at = now
        outcome = "retry" if state is DeliveryState.PLANNED else state.value
        # One line per delivery, and nothing that identifies the patient.
        log.info(
            "delivery %s %s via %s: %s%s",
            delivery.id,
            delivery.reason.value,
            delivery.channel.value if delivery.channel else "-",
            outcome,
            f" ({error})" if error else "",
        )
        return outcome


def _same_claim(claimed_at: datetime | None) -> ColumnElement[bool]:
    if claimed_at is None:
        return Delivery.claimed_at.is_(None)
    return Delivery.claimed_at == claimed_at

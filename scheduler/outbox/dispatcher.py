"""The dispatcher: claims due deliveries, renders them, sends them through a
channel and records the outcome, each step committed: a batch is claimed and
composed in one transaction, then each message is sent outside any transaction
and its outcome recorded before its lane goes on (the lanes that finish together
share that transaction).

A delivery moves planned → sending → sent | failed | skipped. A worker that dies
while `sending` leaves a row whose lease runs out; the next worker takes it again
with the same delivery id, which the channel uses to recognise the resend.

What happens after a failure depends on what the channel says it means (see
`Failure`): retry later, try the patient's other contact, hold the channel, or
give up with the reason.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from scheduler.channels import DeliveryError, Failure, OutgoingMessage, Receipt, Transport
from scheduler.core.cadence import last_visit
from scheduler.core.campaigns import Campaign
from scheduler.core.closures import reopens_on
from scheduler.core.domain import (
    AppointmentStatus,
    ChannelName,
    ConsentKind,
    Contacts,
    DeliveryState,
    HoldCause,
    PatientFacts,
    Phase,
    Reason,
)
from scheduler.core.quota import QUOTA_HELD, LineBudget, month_bounds
from scheduler.core.retry import retry_at
from scheduler.core.routing import NO_USABLE_CONTACT, choose_channel
from scheduler.core.seasons import seasonal_dates
from scheduler.core.unsubscribe import unsubscribe_url
from scheduler.core.window import is_open, local_date
from scheduler.messages.context import STOPPABLE, message_context
from scheduler.messages.digest import build_digest, digest_context
from scheduler.messages.templates import Renderer, TemplateError, template_in
from scheduler.messages.tips import (
    Tip,
    TipLibrary,
    TipSeason,
    choose_tip,
    season_label,
    tip_seasons,
)
from scheduler.outbox.lanes import GroupCommit, Lanes
from scheduler.outbox.newsletters import campaign_context
from scheduler.settings import Settings
from scheduler.store.channel_state import (
    Hold,
    active_holds,
    hold_channel,
    line_quota,
    record_quota_reading,
)
from scheduler.store.db import transaction
from scheduler.store.facts import contacts_of, load_facts
from scheduler.store.models import Delivery, Patient, UTCDateTime

if TYPE_CHECKING:
    from scheduler.channels.line import LineQuota

log = logging.getLogger(__name__)

# Deliveries claimed and composed per transaction. Larger batches spread the cost of
# a transaction and of reading the patients' facts over more messages (bench/README.md).
CLAIM_BATCH = 128
QUOTA_REFRESH = timedelta(minutes=10)  # how often LINE is asked for the month's usage
HOLD_RECHECK = timedelta(hours=1)  # a held message looks again this often
CREDENTIALS_RECHECK = timedelta(minutes=30)
TEMPLATE_RECHECK = timedelta(minutes=10)  # a message whose template is broken tries again
RETRY_KEY_WINDOW = timedelta(hours=24)  # LINE recognises a retry key this long
RETRY_KEY_EXPIRED = (
    "LINE may have received it, and after 24 hours it no longer recognises the retry "
    "key, so it is not sent again"
)
COMPOSE_FAILED = "could not be composed (%s): see the worker's log; tried again shortly"
# Outcomes that leave a message planned and due at once, for the same cycle to try
# again: by the patient's other contact, or by the other channel.
REROUTED = "rerouted"
HELD = "held"
QUOTA_HELD_REASON = f"{QUOTA_HELD}: this month's LINE messages are kept for more important ones"


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


class _Hold(Exception):
    """The delivery cannot go now (its channel is held, or LINE's quota is kept for
    more important messages); it waits, planned, until `until`."""

    def __init__(self, reason: str, until: datetime) -> None:
        super().__init__(reason)
        self.reason = reason
        self.until = until


@dataclass(frozen=True)
class _Known:
    """What composing needs about the patients of a batch, read in one go."""

    patients: dict[int, Patient]
    facts: dict[int, PatientFacts]
    recent_tips: defaultdict[int, dict[str, date]]  # tip id → the day it was last sent


@dataclass
class _Cycle:
    """What one dispatch cycle knows: its channels (shared by the lanes) and its day."""

    now: datetime
    holds: dict[ChannelName, Hold]
    line_budget: LineBudget
    tips: dict[str, Tip]
    day: date  # the clinic's date at `now`
    seasons: frozenset[TipSeason]  # the day's seasons, for choosing tips
    reopens: date | None  # when the clinic reopens, if it is closed on `day`


class Dispatcher:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        renderer: Renderer,
        transports: Mapping[ChannelName, Transport],
        read_line_quota: Callable[[], LineQuota] | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.renderer = renderer
        self.transports = transports
        self.read_line_quota = read_line_quota
        self.tips = TipLibrary(settings.messages_dir / "tips")
        self._quota_read_at: datetime | None = None
        self._sent = GroupCommit(self._record_sent)

    def dispatch_due(
        self, now: datetime, should_stop: Callable[[], bool] = lambda: False
    ) -> DispatchSummary:
        """Send everything due at `now` (to patients only inside the send window).

        One loop claims and composes a batch of deliveries per transaction;
        `dispatch.concurrency` lanes send them and record the outcomes, so the
        network waits overlap and the database sees few, short transactions."""
        summary = DispatchSummary()
        cycle = self.start_cycle(now)
        # Every claim of a cycle carries its `now`, and another worker takes a row
        # again once its lease runs out: nothing is claimed or sent after half a
        # lease. What is still waiting then (or when the worker is stopping, or a
        # lane failed) goes back to `planned` unsent, for the next cycle.
        stop_at = time.monotonic() + self.settings.dispatch.lease_seconds / 2

        def stopping() -> bool:
            return should_stop() or time.monotonic() >= stop_at or lanes.error is not None

        def send(message: OutgoingMessage) -> bool:
            """Send and record `message`; True when it is back in the outbox, due now."""
            if stopping():
                summary.add(self._release(message, cycle))
                return False
            outcome = self._send_and_record(message, cycle)
            summary.add(outcome)
            return outcome in (REROUTED, HELD)

        try:
            with Lanes(self.settings.dispatch.concurrency, send, name="dispatch") as lanes:
                while not stopping():
                    seen = lanes.made_more
                    messages = self._claim_batch(cycle, CLAIM_BATCH, summary)
                    # None: nothing was due; [] : all that was claimed was recorded
                    # already (skipped or held), so look again.
                    if messages is None:
                        # A message in flight may come back planned (rerouted to the
                        # patient's other contact, or its channel held): look again
                        # when one does, until none is in flight.
                        if lanes.wait_for_more(seen):
                            continue
                        break
                    for message in messages:
                        lanes.put(message)
        finally:
            self.close_transports()
        return summary

    def close_transports(self) -> None:
        # One transport may serve both channels (the preview): close it once.
        for transport in {id(t): t for t in self.transports.values()}.values():
            transport.close()

    def start_cycle(self, now: datetime) -> _Cycle:
        """Read the channels' holds and LINE's quota (asking LINE again when the last
        reading is old) and share out this cycle's LINE messages."""
        self._refresh_line_quota(now)
        with transaction(self.sessions) as session:
            holds = active_holds(session, now)
            quota = line_quota(
                session, now, self.settings.timezone, self.settings.config.line.monthly_quota
            )
        budget = LineBudget(quota.left, dict(quota.planned))
        return self._cycle(now, holds, budget)

    def _cycle(self, now: datetime, holds: dict[ChannelName, Hold], budget: LineBudget) -> _Cycle:
        tz = self.settings.timezone
        day = local_date(now, tz)
        seasons = tip_seasons(day, seasonal_dates(day.year, tz))
        reopens = reopens_on(day, self.settings.config.closures)
        return _Cycle(
            now,
            holds,
            budget,
            self.tips.current(),
            day,
            seasons,
            reopens if reopens != day else None,
        )

    def _refresh_line_quota(self, now: datetime) -> None:
        if self.read_line_quota is None:
            return
        last = self._quota_read_at
        if last is not None and last <= now < last + QUOTA_REFRESH:
            return
        self._quota_read_at = now
        try:
            reading = self.read_line_quota()
        except DeliveryError as e:
            log.warning("LINE quota could not be read: %s", e.reason)
            if e.failure is Failure.CHANNEL_UNAVAILABLE:
                with transaction(self.sessions) as session:
                    self._hold(session, None, ChannelName.LINE, e, now)
            return
        with transaction(self.sessions) as session:
            record_quota_reading(session, reading.limit, reading.used, now)

    def deliver(
        self, delivery_id: str, cycle: _Cycle, *, channel: ChannelName | None = None
    ) -> str:
        """Compose, send and record one delivery already claimed (`channel` forces one)."""
        with transaction(self.sessions) as session:
            delivery = session.get_one(Delivery, delivery_id)
            known = self._known_about(session, cycle.now, _patients_of([delivery]))
            composed = self._compose_claimed(session, delivery, cycle, known, forced=channel)
        if isinstance(composed, str):
            return composed
        return self._send_and_record(composed, cycle)

    def preview(
        self, session: Session, delivery: Delivery, channel: ChannelName, now: datetime
    ) -> OutgoingMessage:
        """The message `delivery` would be, by `channel`, composed as if sent at
        `now` (holds and the LINE quota aside). Raises TemplateError, or LookupError
        when the patient has no usable contact on that channel."""
        cycle = self._cycle(now, {}, LineBudget(left=None))
        known = self._known_about(session, now, _patients_of([delivery]))
        try:
            return self._compose(session, delivery, cycle, known, channel)
        except _Skip as skip:
            raise LookupError(skip.reason) from None

    def _claim_batch(
        self, cycle: _Cycle, limit: int, summary: DispatchSummary
    ) -> list[OutgoingMessage] | None:
        """Claim up to `limit` due deliveries and compose them, in one transaction;
        None when nothing is due. What cannot go now (skipped, held) is recorded in
        the same transaction and counted in `summary`."""
        with transaction(self.sessions) as session:
            claimed = self._claim(session, cycle.now, limit)
            if not claimed:
                return None
            known = self._known_about(session, cycle.now, _patients_of(d for d, _ in claimed))
            messages = []
            for delivery, resumed_from in claimed:
                composed = self._compose_claimed(
                    session, delivery, cycle, known, resumed_from=resumed_from
                )
                if isinstance(composed, str):
                    summary.add(composed)
                else:
                    messages.append(composed)
        # Committed: the lanes may send them now.
        return messages

    def _claim(
        self, session: Session, now: datetime, limit: int
    ) -> list[tuple[Delivery, datetime | None]]:
        """Take up to `limit` due deliveries, oldest first, each with, when it was
        resumed from a worker that stopped while sending it, when that worker had
        claimed it."""
        lease_expired = now - timedelta(seconds=self.settings.dispatch.lease_seconds)
        claimable = or_(
            and_(Delivery.state == DeliveryState.PLANNED, Delivery.send_after <= now),
            and_(Delivery.state == DeliveryState.SENDING, Delivery.claimed_at < lease_expired),
        )
        rules = self.settings.rules
        if not is_open(now, rules.window, rules.timezone):
            # Outside the send window only the clinic's own digest may go.
            claimable = and_(claimable, Delivery.reason == Reason.DAILY_DIGEST)
        candidates = session.execute(
            select(Delivery.id, Delivery.state, Delivery.claimed_at)
            .where(claimable)
            .order_by(Delivery.send_after, Delivery.id)
            .limit(limit)
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite locks the file
        ).all()
        if not candidates:
            return []
        # Still claimable is checked again as the rows are written, so a row another
        # worker took since the read is left out rather than taken twice.
        taken = {
            delivery.id: delivery
            for delivery in session.scalars(
                update(Delivery)
                .where(Delivery.id.in_([c.id for c in candidates]), claimable)
                .values(
                    state=DeliveryState.SENDING,
                    claimed_at=now,
                    attempts=Delivery.attempts + 1,
                    updated_at=now,
                )
                .returning(Delivery),
                execution_options={"synchronize_session": False},
            )
        }
        return [
            (taken[c.id], c.claimed_at if c.state is DeliveryState.SENDING else None)
            for c in candidates
            if c.id in taken
        ]

    def _known_about(self, session: Session, now: datetime, patient_ids: set[int]) -> _Known:
        """The facts of these patients, and which tips each was sent when: read for
        a whole batch at once."""
        if not patient_ids:
            return _Known({}, {}, defaultdict(dict))
        ids = sorted(patient_ids)
        patients = {p.id: p for p in session.scalars(select(Patient).where(Patient.id.in_(ids)))}
        facts = {f.id: f for f in load_facts(session, now, patients.values())}
        recent_tips: defaultdict[int, dict[str, date]] = defaultdict(dict)
        sent = session.execute(
            select(Delivery.patient_id, Delivery.tip_id, func.max(Delivery.sent_at))
            .where(
                Delivery.patient_id.in_(ids),
                Delivery.tip_id.is_not(None),
                Delivery.state == DeliveryState.SENT,
            )
            .group_by(Delivery.patient_id, Delivery.tip_id)
        )
        for patient_id, tip_id, at in sent:
            if patient_id is not None and tip_id and at:
                recent_tips[patient_id][tip_id] = local_date(at, self.settings.timezone)
        return _Known(patients, facts, recent_tips)

    def _compose_claimed(
        self,
        session: Session,
        delivery: Delivery,
        cycle: _Cycle,
        known: _Known,
        *,
        resumed_from: datetime | None = None,
        forced: ChannelName | None = None,
    ) -> OutgoingMessage | str:
        """The message a claimed delivery becomes or, when it cannot go now, its
        outcome, recorded in `session`."""
        now = cycle.now
        if resumed_from is not None and delivery.channel is ChannelName.LINE:
            # The stopped worker may have pushed it: as uncertain as a timeout.
            delivery.line_uncertain_since = delivery.line_uncertain_since or resumed_from
        try:
            message = self._compose(session, delivery, cycle, known, forced)
        except _Skip as skip:
            return self._finish(session, delivery, DeliveryState.SKIPPED, now, skip.reason)
        except _Hold as hold:
            # Not an attempt: nothing was sent and nothing failed.
            delivery.attempts -= 1
            delivery.send_after = hold.until
            return self._finish(session, delivery, DeliveryState.PLANNED, now, hold.reason, HELD)
        except TemplateError as e:
            # The practitioner can mend the template: the message waits for that
            # (shown by `tayori status` and `tayori lint`) without using up its
            # attempts, and is never sent broken.
            log.error("template problem: %s", e)
            return self._wait_for_repair(session, delivery, cycle, str(e))
        except SQLAlchemyError:
            raise  # the database, not this message: the batch is rolled back
        except Exception as e:
            # A fault of ours holds this message only, not the rest of the batch. The
            # log gets where it happened, not the error's text (it may quote the patient).
            where = "".join(traceback.format_tb(e.__traceback__))
            log.error("delivery %s could not be composed: %s\n%s", delivery.id, _kind(e), where)
            return self._wait_for_repair(session, delivery, cycle, COMPOSE_FAILED % _kind(e))
        if message.channel is ChannelName.LINE and _retry_key_expired(delivery, now):
            cycle.line_budget.give_back(delivery.reason)  # taken, not used
            return self._finish(session, delivery, DeliveryState.FAILED, now, RETRY_KEY_EXPIRED)
        return message

    def _wait_for_repair(
        self, session: Session, delivery: Delivery, cycle: _Cycle, error: str
    ) -> str:
        delivery.attempts -= 1
        delivery.send_after = cycle.now + TEMPLATE_RECHECK
        return self._finish(session, delivery, DeliveryState.PLANNED, cycle.now, error, HELD)

    def _release(self, message: OutgoingMessage, cycle: _Cycle) -> str:
        """Give back a claimed message that was not sent: planned again at once, its
        attempt not counted. Only while the claim is still this cycle's."""
        if message.channel is ChannelName.LINE:
            cycle.line_budget.give_back(message.reason)
        with transaction(self.sessions) as session:
            session.execute(
                update(Delivery)
                .where(
                    Delivery.id == message.delivery_id,
                    Delivery.state == DeliveryState.SENDING,
                    Delivery.claimed_at == cycle.now,
                )
                .values(
                    state=DeliveryState.PLANNED,
                    attempts=Delivery.attempts - 1,
                    updated_at=cycle.now,
                ),
                execution_options={"synchronize_session": False},
            )
        _log_outcome(message.delivery_id, message.reason, message.channel, "released", None)
        return "released"

    def _send_and_record(self, message: OutgoingMessage, cycle: _Cycle) -> str:
        # The network call happens outside any transaction: the claim is committed,
        # and the outcome is recorded afterwards.
        try:
            receipt = self.transports[message.channel].send(message)
        except DeliveryError as e:
            if message.channel is ChannelName.LINE and e.failure is not Failure.UNCERTAIN:
                cycle.line_budget.give_back(message.reason)
            return self._record_failure(message.delivery_id, e, cycle)
        # Lanes that finish at once share one transaction; each waits for its own.
        self._sent.add((message, receipt, cycle.now))
        return "sent"

    def _compose(
        self,
        session: Session,
        delivery: Delivery,
        cycle: _Cycle,
        known: _Known,
        forced: ChannelName | None = None,
    ) -> OutgoingMessage:
        now = cycle.now
        if delivery.patient_id is None:
            return self._compose_digest(session, delivery, cycle)
        patient = known.patients[delivery.patient_id]
        campaign = self._campaign_of(delivery)
        # Chosen again at sending: a contact may have been blocked since planning.
        contacts = contacts_of(patient)
        if forced is not None:
            if not contacts.usable(forced):
                raise _Skip(f"no usable {forced.value} contact")
            contacts = Contacts(line=forced is ChannelName.LINE, email=forced is ChannelName.EMAIL)
        if choose_channel(patient.preferred_channel, contacts) is None:
            raise _Skip(NO_USABLE_CONTACT)
        channel = self._open_channel(patient.preferred_channel, contacts, delivery.reason, cycle)
        with _budget_returned_on_error(cycle, channel, delivery.reason):
            facts = known.facts[patient.id]
            upcoming = [
                a.starts_at
                for a in facts.appointments
                if a.status is AppointmentStatus.BOOKED and a.starts_at > now
            ]
            appointment = next(
                (a for a in facts.appointments if a.id == delivery.appointment_id), None
            )
            unsubscribe = (
                self._unsubscribe_url(patient.id, STOPPABLE[delivery.reason])
                if channel is ChannelName.EMAIL and delivery.reason in STOPPABLE
                else None
            )
            tip, season = self._tip_for(delivery, facts.phase, cycle, known)
            delivery.tip_id = tip.id if tip else None
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
                # The footer links a web page; a mailto: fallback only goes in the header.
                unsubscribe_url=unsubscribe
                if unsubscribe and unsubscribe.startswith("http")
                else None,
                tip=tip.text if tip else None,
                season=season,
                reopens=cycle.reopens,
            )
            if campaign is not None:
                assert delivery.campaign_day is not None
                context |= campaign_context(campaign, delivery.campaign_day, self.settings)
            delivery.channel = channel
            delivery.template = template_in(self._folder(delivery), channel)
            address = patient.line_user_id if channel is ChannelName.LINE else patient.email
            assert address is not None  # choose_channel only picks a present contact
            return self.render_message(delivery, channel, address, context, unsubscribe)

    def _campaign_of(self, delivery: Delivery) -> Campaign | None:
        if delivery.campaign_id is None:
            return None
        for campaign in self.settings.campaigns:
            if campaign.id == delivery.campaign_id:
                return campaign
        raise _Skip(f"campaign {delivery.campaign_id!r} is no longer in the campaigns file")

    def _folder(self, delivery: Delivery) -> str:
        """The folder in messages/ with this delivery's templates."""
        campaign = self._campaign_of(delivery)
        return campaign.template if campaign is not None else delivery.reason.value

    def _tip_for(
        self, delivery: Delivery, phase: Phase | None, cycle: _Cycle, known: _Known
    ) -> tuple[Tip | None, str]:
        """The self-care tip for this message, and the season in words. A retry
        keeps the tip its first attempt chose."""
        season = season_label(cycle.seasons)
        if delivery.tip_id in cycle.tips:
            return cycle.tips[delivery.tip_id], season
        assert delivery.patient_id is not None
        tip = choose_tip(
            cycle.tips,
            patient_id=delivery.patient_id,
            phase=phase,
            seasons=cycle.seasons,
            day=cycle.day,
            recent=known.recent_tips.get(delivery.patient_id, {}),
        )
        if tip is not None:  # a second message to the patient in this batch gets another
            known.recent_tips[delivery.patient_id][tip.id] = cycle.day
        return tip, season

    def _open_channel(
        self, preferred: ChannelName, contacts: Contacts, reason: Reason, cycle: _Cycle
    ) -> ChannelName:
        """The first of the patient's usable channels, preferred first, that is not
        held and, for LINE, fits in the month's quota; else the message waits."""
        other = ChannelName.EMAIL if preferred is ChannelName.LINE else ChannelName.LINE
        waits: list[_Hold] = []
        for channel in (preferred, other):
            if not contacts.usable(channel):
                continue
            hold = cycle.holds.get(channel)
            if hold is not None:
                waits.append(_held_by(hold, cycle.now))
            elif channel is ChannelName.LINE and not cycle.line_budget.take(reason):
                waits.append(_Hold(QUOTA_HELD_REASON, cycle.now + HOLD_RECHECK))
            else:
                return channel
        raise waits[0]

    def _compose_digest(
        self, session: Session, delivery: Delivery, cycle: _Cycle
    ) -> OutgoingMessage:
        channel = delivery.channel
        assert channel is not None  # digest rows are planned with their channel
        digest = self.settings.digest
        address = digest.line_user_id if channel is ChannelName.LINE else digest.email
        if not address:
            raise _Skip(f"no digest {channel.value} address in the settings any more")
        # Its channel is fixed: held, it waits (the other address has its own row).
        only = Contacts(line=channel is ChannelName.LINE, email=channel is ChannelName.EMAIL)
        self._open_channel(channel, only, delivery.reason, cycle)
        with _budget_returned_on_error(cycle, channel, delivery.reason):
            context = digest_context(build_digest(session, cycle.now, self.settings), self.settings)
            return self.render_message(delivery, channel, address, context, None)

    def _unsubscribe_url(self, patient_id: int, kind: ConsentKind) -> str | None:
        settings = self.settings
        if settings.public_url and settings.secret_key:
            return unsubscribe_url(settings.public_url, settings.secret_key, patient_id, kind.value)
        if settings.clinic.email:
            # Without Tayori's own address, a mail to the clinic is the way to stop.
            return f"mailto:{settings.clinic.email}?subject={quote('配信停止')}"
        return None

    def render_message(
        self,
        delivery: Delivery,
        channel: ChannelName,
        address: str,
        context: dict[str, Any],
        unsubscribe: str | None,
    ) -> OutgoingMessage:
        rendered = self.renderer.render(template_in(self._folder(delivery), channel), context)
        return OutgoingMessage(
            delivery_id=delivery.id,
            channel=channel,
            reason=delivery.reason,
            to=address,
            text=rendered.text,
            subject=rendered.subject,
            html=rendered.html,
            unsubscribe_url=unsubscribe,
        )

    def _record_sent(self, sent: list[tuple[OutgoingMessage, Receipt, datetime]]) -> None:
        with self.sessions.begin() as session:
            # One prepared statement and no read: this runs for every message sent.
            session.connection().execute(
                _RECORD_SENT,
                [
                    {
                        "delivery_id": message.delivery_id,
                        "receipt": receipt.provider_message_id,
                        "now": now,
                    }
                    for message, receipt, now in sent
                ],
            )
        for message, _, _ in sent:
            _log_outcome(message.delivery_id, message.reason, message.channel, "sent", None)

    def _record_failure(self, delivery_id: str, error: DeliveryError, cycle: _Cycle) -> str:
        now = cycle.now
        with transaction(self.sessions) as session:
            delivery = session.get_one(Delivery, delivery_id)
            channel = delivery.channel
            failure = error.failure
            if failure is Failure.CONTACT_UNUSABLE and delivery.patient_id is not None:
                assert channel is not None
                patient = session.get_one(Patient, delivery.patient_id)
                _mark_unusable(patient, channel, error.reason, now)
                # Straight back to planned: the next claim tries the other contact.
                delivery.send_after = now
                return self._finish(
                    session, delivery, DeliveryState.PLANNED, now, error.reason, REROUTED
                )
            if failure in (Failure.CHANNEL_UNAVAILABLE, Failure.QUOTA_EXHAUSTED):
                assert channel is not None
                cycle.holds[channel] = self._hold(session, delivery, channel, error, now)
                delivery.attempts -= 1  # the channel failed, not the message
                delivery.send_after = now
                return self._finish(
                    session, delivery, DeliveryState.PLANNED, now, error.reason, HELD
                )
            if failure is Failure.UNCERTAIN and channel is ChannelName.LINE:
                delivery.line_uncertain_since = delivery.line_uncertain_since or now
            next_try = (
                retry_at(delivery.id, delivery.attempts, now, self.settings.dispatch)
                if error.retryable
                else None
            )
            since = delivery.line_uncertain_since
            if next_try is not None and since and next_try - since >= RETRY_KEY_WINDOW:
                return self._finish(
                    session,
                    delivery,
                    DeliveryState.FAILED,
                    now,
                    f"{error.reason}; {RETRY_KEY_EXPIRED}",
                )
            if next_try is None:
                return self._finish(session, delivery, DeliveryState.FAILED, now, error.reason)
            delivery.send_after = next_try
            return self._finish(session, delivery, DeliveryState.PLANNED, now, error.reason)

    def _hold(
        self,
        session: Session,
        delivery: Delivery | None,
        channel: ChannelName,
        error: DeliveryError,
        now: datetime,
    ) -> Hold:
        if error.failure is Failure.QUOTA_EXHAUSTED:
            cause, until = HoldCause.QUOTA, month_bounds(now, self.settings.timezone)[1]
        else:
            # Credentials are checked again now and then, and at every worker start.
            cause, until = HoldCause.CREDENTIALS, now + CREDENTIALS_RECHECK
        hold_channel(session, channel, cause, error.reason, now, until)
        log.error("%s channel held until %s: %s", channel.value, until.isoformat(), error.reason)
        return Hold(channel, cause, error.reason, now, until)

    def _finish(
        self,
        session: Session,
        delivery: Delivery,
        state: DeliveryState,
        now: datetime,
        error: str | None,
        outcome: str | None = None,
    ) -> str:
        delivery.state = state
        delivery.last_error = error
        delivery.updated_at = now
        outcome = outcome or ("retry" if state is DeliveryState.PLANNED else state.value)
        _log_outcome(delivery.id, delivery.reason, delivery.channel, outcome, error)
        return outcome


def _log_outcome(
    delivery_id: str,
    reason: Reason,
    channel: ChannelName | None,
    outcome: str,
    error: str | None,
) -> None:
    # One line per delivery, and nothing that identifies the patient.
    log.info(
        "delivery %s %s via %s: %s%s",
        delivery_id,
        reason.value,
        channel.value if channel else "-",
        outcome,
        f" ({error})" if error else "",
    )


def _patients_of(deliveries: Iterable[Delivery]) -> set[int]:
    return {d.patient_id for d in deliveries if d.patient_id is not None}


def _kind(error: Exception) -> str:
    return type(error).__name__


_DELIVERIES = Delivery.metadata.tables[Delivery.__tablename__]
_RECORD_SENT = (
    update(_DELIVERIES)
    .where(_DELIVERIES.c.id == bindparam("delivery_id"))
    .values(
        state=DeliveryState.SENT,
        provider_message_id=bindparam("receipt"),
        sent_at=bindparam("now", type_=UTCDateTime()),
        last_error=None,
        updated_at=bindparam("now", type_=UTCDateTime()),
    )
)


@contextmanager
def _budget_returned_on_error(
    cycle: _Cycle, channel: ChannelName, reason: Reason
) -> Iterator[None]:
    """The LINE message taken from the cycle's budget for a message that then
    cannot be composed goes back to it."""
    try:
        yield
    except BaseException:
        if channel is ChannelName.LINE:
            cycle.line_budget.give_back(reason)
        raise


def _held_by(hold: Hold, now: datetime) -> _Hold:
    until = now + HOLD_RECHECK if hold.until is None else min(hold.until, now + HOLD_RECHECK)
    label = QUOTA_HELD if hold.cause is HoldCause.QUOTA else f"{hold.channel.value} channel held"
    return _Hold(f"{label}: {hold.reason}", until)


def _retry_key_expired(delivery: Delivery, now: datetime) -> bool:
    """A LINE push whose outcome was uncertain may have been delivered; 24 hours on,
    LINE would not recognise the retry key and could deliver it twice."""
    since = delivery.line_uncertain_since
    return since is not None and now - since >= RETRY_KEY_WINDOW


def _mark_unusable(patient: Patient, channel: ChannelName, reason: str, now: datetime) -> None:
    note = f"{reason} (since {now:%Y-%m-%d})"
    if channel is ChannelName.LINE:
        patient.line_unusable_reason = note
    else:
        patient.email_unusable_reason = note
    patient.updated_at = now

"""The dispatcher: claims due deliveries, composes them, sends them through their
channel and records the outcome.

A batch goes through short steps, none of which keeps the database's write lock
while a message is rendered or sent:

1. claim up to `CLAIM_BATCH` due deliveries (a write, under one claim token);
2. read their patients' facts (a read-only transaction);
3. route each (which channel, or why it cannot go now) and prepare it (a write:
   LINE places in the month's budget, the channel chosen, what cannot go now);
4. render the messages (no transaction);
5. hand them to the lanes, which send each and record its outcome.

Every write of a delivery's state goes through scheduler.outbox.transitions. The
claims' leases are renewed while the worker still works on them (scheduler.outbox.leases);
what a failure means is scheduler.core.failure_policy's decision.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from scheduler.channels import DeliveryError, Failure, OutgoingMessage, Transport
from scheduler.core.closures import reopens_on
from scheduler.core.domain import ChannelName, HoldCause, Reason
from scheduler.core.failure_policy import (
    CREDENTIALS_RECHECK,
    UNREACHABLE_FIRST_WAIT,
    HoldChannel,
    retry_key_expired,
)
from scheduler.core.quota import month_bounds
from scheduler.core.seasons import seasonal_dates
from scheduler.core.window import is_open, local_date
from scheduler.messages.templates import Renderer, TemplateError, template_in
from scheduler.messages.tips import TipLibrary, tip_seasons
from scheduler.outbox import budget, transitions
from scheduler.outbox.composer import (
    HOLD_RECHECK,
    QUOTA_HELD_REASON,
    Composer,
    Day,
    Go,
    Skip,
    Stop,
    Wait,
    folder_of,
    read_batch,
    route,
)
from scheduler.outbox.lanes import Lanes
from scheduler.outbox.leases import Leases
from scheduler.outbox.recorder import (
    HELD,
    REROUTED,
    SAMPLE_NOT_RETRIED,
    Prepared,
    Recorder,
    log_outcome,
)
from scheduler.outbox.transitions import Claim, Claimed
from scheduler.settings import Settings
from scheduler.store.channel_state import Hold, hold_channel, holds, release_holds
from scheduler.store.db import DatabaseClock, reading, transaction

if TYPE_CHECKING:
    from scheduler.channels.line import LineQuota

log = logging.getLogger(__name__)

# Deliveries claimed and composed per batch. Larger batches spread the cost of a
# transaction and of reading the patients' facts over more messages (bench/README.md).
CLAIM_BATCH = 128
# A cycle stops claiming after this long, so that planning runs again (the worker's
# next cycle); what it claimed is still sent.
CLAIMING_SECONDS = 60.0
QUOTA_REFRESH = timedelta(minutes=10)  # how often LINE is asked for the month's usage
TEMPLATE_RECHECK = timedelta(minutes=10)  # a message whose template is broken tries again
COMPOSE_FAILED = "could not be composed ({kind}): see the worker's log"


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


@dataclass
class Cycle:
    """One dispatch cycle: its moment, its channels' holds and its day."""

    now: datetime
    month: str  # the month whose LINE budget this cycle reserves from
    holds: dict[ChannelName, Hold]  # every hold, those whose time is up included
    day: Day
    leases: Leases
    sent_by: set[ChannelName] = field(default_factory=set)

    def active_holds(self) -> dict[ChannelName, Hold]:
        return {c: hold for c, hold in self.holds.items() if hold.active(self.now)}


class Dispatcher:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        renderer: Renderer,
        transports: Mapping[ChannelName, Transport],
        read_line_quota: Callable[[], LineQuota] | None = None,
        *,
        database_clock: DatabaseClock | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.renderer = renderer
        self.transports = transports
        self.read_line_quota = read_line_quota
        self.database_clock = database_clock or DatabaseClock()
        self.tips = TipLibrary(settings.messages_dir / "tips")
        self.recorder = Recorder(sessions, settings)
        self._quota_read_at: datetime | None = None

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.dispatch.lease_seconds)

    def dispatch_due(
        self, now: datetime, should_stop: Callable[[], bool] = lambda: False
    ) -> DispatchSummary:
        """Send everything due at `now` (to patients only inside the send window)."""
        summary = DispatchSummary()
        claim_until = time.monotonic() + CLAIMING_SECONDS
        with Leases(self.sessions, self.database_clock, self.lease) as leases:
            cycle = self.start_cycle(now, leases)

            def stopping() -> bool:
                return should_stop() or lanes.error is not None

            def send(prepared: Prepared) -> bool:
                """Send and record one message; True when it is back in the outbox, due now."""
                return self._send(prepared, cycle, summary, stopping) in (REROUTED, HELD)

            try:
                with Lanes(self.settings.dispatch.concurrency, send, name="dispatch") as lanes:
                    while not stopping() and time.monotonic() < claim_until:
                        seen = lanes.made_more
                        batch = self._next_batch(cycle, summary)
                        if batch is None:  # nothing due: unless one in flight comes back
                            if lanes.wait_for_more(seen):
                                continue
                            break
                        for prepared in batch:
                            lanes.put(prepared)
            finally:
                self._end_cycle(cycle)
        return summary

    def start_cycle(self, now: datetime, leases: Leases) -> Cycle:
        """Read the channels' holds and this month's LINE budget (asking LINE again
        when its last reading is old)."""
        settings = self.settings
        with transaction(self.sessions) as session:
            month = budget.open_month(
                session, now, settings.timezone, settings.config.line.monthly_quota
            )
        self._refresh_line_quota(now, month)
        with reading(self.sessions) as session:
            current = holds(session)
        return Cycle(now, month, current, self.day(now), leases)

    def day(self, now: datetime) -> Day:
        tz = self.settings.timezone
        today = local_date(now, tz)
        reopens = reopens_on(today, self.settings.config.closures)
        return Day(
            now,
            today,
            tip_seasons(today, seasonal_dates(today.year, tz)),
            reopens if reopens != today else None,
            self.tips.current(),
        )

    def send_now(
        self, claimed: Claimed, channel: ChannelName, now: datetime, db_now: datetime
    ) -> str:
        """Compose and send one delivery claimed already (a sample) by `channel`, at
        once; its outcome. What fails is not tried again."""
        summary = DispatchSummary()
        with Leases(self.sessions, self.database_clock, self.lease) as leases:
            leases.took(claimed.claim.token, [claimed.id], db_now, time.monotonic())
            cycle = self.start_cycle(now, leases)
            try:
                for prepared in self.compose(
                    [claimed], cycle, summary, db_now, forced=channel, retries=False
                ):
                    self._send(prepared, cycle, summary, retries=False)
            finally:
                self._end_cycle(cycle)
        [outcome] = summary.counts
        return outcome

    def preview(
        self, session: Session, claimed: Claimed, channel: ChannelName, now: datetime
    ) -> OutgoingMessage:
        """The message a delivery would be, by `channel`, composed as if sent at `now`
        (holds and the LINE quota aside). Raises TemplateError, or LookupError when
        the patient has no usable contact on that channel."""
        batch = read_batch(session, [claimed], now, self.settings)
        assert claimed.patient_id is not None
        recipient = batch.recipients.get(claimed.patient_id)
        decision = route(claimed, recipient, self.settings, {}, now, None, forced=channel)
        if not isinstance(decision, Go):
            raise LookupError(decision.reason)
        message, _ = self.composer.message(claimed, channel, batch, self.day(now))
        return message

    @property
    def composer(self) -> Composer:
        return Composer(self.settings, self.renderer)

    def close_transports(self) -> None:
        # One transport may serve both channels (the preview): close it once.
        for transport in {id(t): t for t in self.transports.values()}.values():
            transport.close()

    # -- a batch: claim, read, route and prepare, render ------------------------------

    def _next_batch(self, cycle: Cycle, summary: DispatchSummary) -> list[Prepared] | None:
        """The next claimed batch, composed; None when nothing is due."""
        rules = self.settings.rules
        window_open = is_open(cycle.now, rules.window, rules.timezone)
        started = time.monotonic()
        with transaction(self.sessions) as session:
            db_now = self.database_clock.read(session)
            batch = transitions.claim(
                session,
                now=cycle.now,
                db_now=db_now,
                lease=self.lease,
                limit=CLAIM_BATCH,
                max_attempts=self.settings.dispatch.max_attempts,
                # Outside the send window only the clinic's own digest may go.
                only=None if window_open else Reason.DAILY_DIGEST,
            )
        for delivery_id, problem in batch.quarantined:
            log.error("delivery %s quarantined: %s", delivery_id, problem)
            summary.add("quarantined")
        for delivery_id, attempts in batch.given_up:
            log.error(
                "delivery %s given up after %d claims without an outcome", delivery_id, attempts
            )
            summary.add("failed")
        if not batch.claimed:
            return [] if batch.quarantined or batch.given_up else None
        token = batch.claimed[0].claim.token
        cycle.leases.took(token, [c.id for c in batch.claimed], db_now, started)
        return self.compose(batch.claimed, cycle, summary, db_now)

    def compose(
        self,
        claimed: list[Claimed],
        cycle: Cycle,
        summary: DispatchSummary,
        db_now: datetime,
        forced: ChannelName | None = None,
        retries: bool = True,
    ) -> list[Prepared]:
        """Claimed deliveries as messages ready to send; what cannot go now is
        recorded (skipped, waiting, failed) and counted in `summary`. Without
        `retries` (a sample), what cannot go now fails instead of waiting."""
        with reading(self.sessions) as session:
            known = read_batch(session, claimed, cycle.now, self.settings)
        active = cycle.active_holds()
        routes = {
            c.id: route(
                c,
                known.recipients.get(c.patient_id) if c.patient_id is not None else None,
                self.settings,
                active,
                cycle.now,
                _key_age(c.line_first_push_at, cycle.leases.db_now()),
                forced,
            )
            for c in claimed
        }
        chosen = self.recorder.until_written(
            lambda session: self._prepare(session, claimed, routes, cycle, db_now, summary, retries)
        )
        prepared, problems = [], []
        composer = self.composer
        for claimed_one, claim, channel, first_push_at in chosen:
            try:
                message, tip_id = composer.message(claimed_one, channel, known, cycle.day)
            except Exception as e:
                problems.append((claim, claimed_one, self._compose_problem(claimed_one, e)))
                continue
            prepared.append(Prepared(message, claimed_one, claim, tip_id, first_push_at))
        if problems:
            self.recorder.until_written(
                lambda session: self._record_problems(session, problems, cycle, summary, retries)
            )
        return prepared

    def _prepare(
        self,
        session: Session,
        claimed: list[Claimed],
        routes: Mapping[str, Go | Skip | Wait | Stop],
        cycle: Cycle,
        db_now: datetime,
        summary: DispatchSummary,
        retries: bool,
    ) -> list[tuple[Claimed, Claim, ChannelName, datetime | None]]:
        """Reserve LINE places for the messages that want LINE, record the channel of
        each message that goes, and what happens to those that cannot go now."""
        now, month = cycle.now, cycle.month
        wants_line = [
            c
            for c in claimed
            if isinstance(r := routes[c.id], Go)
            and r.channels[0] is ChannelName.LINE
            and c.claim.quota_month != month
        ]
        places: Counter[Reason] = Counter()
        if wants_line:
            month_ends = month_bounds(now, self.settings.timezone)[1]
            wanted = Counter(c.reason for c in wants_line)
            token = wants_line[0].claim.token
            places.update(budget.reserve(session, month, month_ends, wanted, token))
        chosen = []
        for c in claimed:
            decision, claim = routes[c.id], c.claim
            if not isinstance(decision, Go):
                self._not_now(session, c, decision, now, summary, retries)
                continue
            channel = None
            for candidate in decision.channels:
                if candidate is not ChannelName.LINE or claim.quota_month == month:
                    channel = candidate
                    break
                if places[c.reason] > 0:
                    places[c.reason] -= 1
                    if claim.quota_month is not None:  # a place of another month
                        budget.give_back(session, Counter({claim.quota_month: 1}))
                    claim = replace(claim, quota_month=month)
                    channel = candidate
                    break
            if channel is None:
                wait = Wait(now + HOLD_RECHECK, QUOTA_HELD_REASON)
                self._not_now(session, c, wait, now, summary, retries)
                continue
            first_push_at = None
            if channel is ChannelName.LINE:
                first_push_at = c.line_first_push_at or db_now
                claim = replace(claim, first_push_ours=c.line_first_push_at is None)
            template = template_in(folder_of(c, self.settings), channel)
            if transitions.prepare(
                session, claim, channel=channel, template=template, first_push_at=first_push_at
            ):
                chosen.append((c, claim, channel, first_push_at))
        budget.give_back(session, Counter({month: sum(places.values())}))
        return chosen

    def _compose_problem(self, claimed: Claimed, error: Exception) -> tuple[str, str]:
        """("wait", reason) for a template the practitioner can mend, ("fail", reason)
        for anything else (a fault of ours: retrying would fail the same way)."""
        if isinstance(error, TemplateError):
            log.error("template problem: %s", error)
            return "wait", str(error)
        # The log gets where it happened, not the error's text (it may quote the patient).
        where = "".join(traceback.format_tb(error.__traceback__))
        kind = type(error).__name__
        log.error("delivery %s could not be composed: %s\n%s", claimed.id, kind, where)
        return "fail", COMPOSE_FAILED.format(kind=kind)

    def _record_problems(
        self,
        session: Session,
        problems: list[tuple[Claim, Claimed, tuple[str, str]]],
        cycle: Cycle,
        summary: DispatchSummary,
        retries: bool,
    ) -> None:
        now = cycle.now
        for claim, claimed, (what, reason) in problems:
            if what == "wait":
                # The message waits for the template to be mended (shown by `tayori
                # status` and `tayori lint`), without using up its attempts.
                wait = Wait(now + TEMPLATE_RECHECK, reason)
                self._not_now(session, replace(claimed, claim=claim), wait, now, summary, retries)
            else:
                took = transitions.fail(session, claim, reason, now)
                self._ended(took, claimed, "failed", reason, summary)

    def _not_now(
        self,
        session: Session,
        claimed: Claimed,
        decision: Skip | Wait | Stop,
        now: datetime,
        summary: DispatchSummary,
        retries: bool,
    ) -> None:
        """Record a claimed delivery that does not go now, and why."""
        claim, reason = claimed.claim, decision.reason
        if isinstance(decision, Skip):
            took, outcome = transitions.skip(session, claim, reason, now), "skipped"
        elif isinstance(decision, Wait) and retries:
            took, outcome = transitions.wait(session, claim, decision.until, reason, now), HELD
        else:
            if not retries:
                reason = f"{reason}; {SAMPLE_NOT_RETRIED}"
            # Stop: LINE may have delivered it; a place it holds counts as used.
            maybe_sent = isinstance(decision, Stop)
            took = transitions.fail(session, claim, reason, now, may_have_been_sent=maybe_sent)
            outcome = "failed"
        self._ended(took, claimed, outcome, reason, summary)

    def _ended(
        self, took: bool, claimed: Claimed, outcome: str, reason: str, summary: DispatchSummary
    ) -> None:
        if took:
            summary.add(outcome)
            log_outcome(claimed.id, claimed.reason, claimed.channel, outcome, reason)

    # -- a lane: send one message and record its outcome --------------------------------

    def _send(
        self,
        prepared: Prepared,
        cycle: Cycle,
        summary: DispatchSummary,
        stopping: Callable[[], bool] = lambda: False,
        retries: bool = True,
    ) -> str:
        message, claim = prepared.message, prepared.claim
        try:
            if stopping() or not cycle.leases.holds(claim):
                # Not sent: back to planned, unless its lease may already be another's.
                outcome = self._release(prepared, cycle)
            elif self._key_expired(prepared, cycle):
                outcome = self.recorder.expired(prepared, cycle.now)
            else:
                outcome = self._send_and_record(prepared, cycle, retries)
        finally:
            cycle.leases.done(claim)
        summary.add(outcome)
        if outcome == "sent":
            cycle.sent_by.add(message.channel)
        return outcome

    def _send_and_record(self, prepared: Prepared, cycle: Cycle, retries: bool) -> str:
        message = prepared.message
        try:
            receipt = self.transports[message.channel].send(message)
        except DeliveryError as e:
            failure, reason = e.failure, e.reason
        except Exception as e:
            # The message may have left before the fault: as uncertain as a timeout.
            where = "".join(traceback.format_tb(e.__traceback__))
            kind = type(e).__name__
            log.error(
                "delivery %s: unexpected %s while sending\n%s", message.delivery_id, kind, where
            )
            failure = Failure.UNCERTAIN
            channel = message.channel.value
            reason = f"unexpected error in the {channel} channel ({kind}): see the worker's log"
        else:
            return self.recorder.sent(prepared, receipt, cycle.now)
        key_age = None
        if prepared.first_push_at is not None and (
            failure.may_have_been_sent or not prepared.claim.first_push_ours
        ):
            key_age = cycle.leases.db_now() - prepared.first_push_at
        outcome, decision = self.recorder.failed(
            prepared, failure, reason, cycle.now, key_age, cycle.holds, retries
        )
        if isinstance(decision, HoldChannel):
            # The rest of this cycle's messages for the channel wait (or go the other way).
            channel = message.channel
            current = cycle.holds.get(channel)
            since = current.since if current and current.cause is decision.cause else cycle.now
            cycle.holds[channel] = Hold(channel, decision.cause, reason, since, decision.until)
        return outcome

    def _release(self, prepared: Prepared, cycle: Cycle) -> str:
        took = self.recorder.until_written(
            lambda session: transitions.release(session, prepared.claim, cycle.now)
        )
        message = prepared.message
        outcome = "released" if took else "taken over"
        log_outcome(message.delivery_id, message.reason, message.channel, outcome, None)
        return outcome

    def _key_expired(self, prepared: Prepared, cycle: Cycle) -> bool:
        """A LINE push repeated after a first one LINE may have accepted, too late."""
        if prepared.first_push_at is None or prepared.claim.first_push_ours:
            return False
        return retry_key_expired(cycle.leases.db_now() - prepared.first_push_at)

    # -- the month's LINE quota, and the end of a cycle ---------------------------------

    def _refresh_line_quota(self, now: datetime, month: str) -> None:
        if self.read_line_quota is None:
            return
        last = self._quota_read_at
        if last is not None and last <= now < last + QUOTA_REFRESH:
            return
        self._quota_read_at = now
        try:
            reading_ = self.read_line_quota()
        except DeliveryError as e:
            log.warning("LINE quota could not be read: %s", e.reason)
            held = {
                Failure.CHANNEL_UNAVAILABLE: (HoldCause.CREDENTIALS, CREDENTIALS_RECHECK),
                Failure.UNREACHABLE: (HoldCause.UNREACHABLE, UNREACHABLE_FIRST_WAIT),
            }.get(e.failure)
            if held is not None:
                cause, wait = held
                with transaction(self.sessions) as session:
                    hold_channel(session, ChannelName.LINE, cause, e.reason, now, now + wait)
                log.error("line channel held until %s: %s", (now + wait).isoformat(), e.reason)
            return
        with transaction(self.sessions) as session:
            budget.record_reading(session, month, reading_.limit, reading_.used, now)

    def _end_cycle(self, cycle: Cycle) -> None:
        self.close_transports()
        # A channel that could not be reached and sent again since: its run of
        # failures is over (a new one starts with a short wait).
        recovered = [
            channel
            for channel, hold in cycle.holds.items()
            if hold.cause is HoldCause.UNREACHABLE and channel in cycle.sent_by
        ]
        if recovered:
            try:
                with transaction(self.sessions) as session:
                    release_holds(session, HoldCause.UNREACHABLE, recovered)
            except SQLAlchemyError as e:
                log.warning("could not lift the holds of %s: %s", recovered, type(e).__name__)


def _key_age(first_push_at: datetime | None, db_now: datetime) -> timedelta | None:
    return None if first_push_at is None else db_now - first_push_at

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
from scheduler.core.domain import ChannelName, DeliveryState, HoldCause, Reason
from scheduler.core.failure_policy import (
    RETRY_KEY_EXPIRED,
    Attempt,
    HoldChannel,
    Retry,
    decide,
    retry_key_expired,
)
from scheduler.core.quota import month_bounds
from scheduler.core.seasons import seasonal_dates
from scheduler.core.window import is_open, local_date
from scheduler.messages.template_names import template_in
from scheduler.messages.templates import Renderer, TemplateError
from scheduler.messages.tips import TipLibrary, tip_seasons
from scheduler.outbox import budget, transitions
from scheduler.outbox.composer import (
    HOLD_RECHECK,
    QUOTA_HELD_REASON,
    Composer,
    Day,
    Go,
    Route,
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
    key_age,
    log_outcome,
)
from scheduler.outbox.transitions import Claim, Claimed, Reach
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
    # Every hold, those whose time is up included. Lanes replace the dict rather than
    # change it, so the loop reading it never sees it change under its eyes.
    holds: dict[ChannelName, Hold]
    day: Day
    leases: Leases
    sent_by: set[ChannelName] = field(default_factory=set)

    def active_holds(self) -> dict[ChannelName, Hold]:
        return {c: hold for c, hold in self.holds.items() if hold.active(self.now)}

    def hold(self, channel: ChannelName, decision: HoldChannel) -> None:
        current = self.holds.get(channel)
        since = current.since if current and current.cause is decision.cause else self.now
        held = Hold(channel, decision.cause, decision.reason, since, decision.until)
        self.holds = {**self.holds, channel: held}


@dataclass(frozen=True)
class _Chosen:
    """A claimed delivery whose channel is chosen and recorded: it is to be rendered."""

    claimed: Claimed
    claim: Claim
    channel: ChannelName
    first_request_at: datetime | None


# What happened to a claimed delivery that does not go now, logged once recorded.
_NotNow = tuple[Claimed, str, str]


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

    @property
    def composer(self) -> Composer:
        return Composer(self.settings, self.renderer)

    def _facts(self, **facts: object) -> dict[str, object]:
        """A log line's `extra=`: its clinic, and its own facts (scheduler.logs)."""
        return {"clinic": self.settings.clinic_slug, **facts}

    def dispatch_due(
        self,
        now: datetime,
        should_stop: Callable[[], bool] = lambda: False,
        claiming_seconds: float = CLAIMING_SECONDS,
    ) -> DispatchSummary:
        """Send everything due at `now` (to patients only inside the send window),
        claiming messages for at most `claiming_seconds` (one batch at least)."""
        summary = DispatchSummary()
        claim_until = time.monotonic() + claiming_seconds
        with Leases(self.sessions, self.database_clock, self.lease) as leases:
            cycle = self.start_cycle(now, leases)

            def stopping() -> bool:
                return should_stop() or lanes.error is not None

            def send(prepared: Prepared) -> bool:
                """Send and record one message; True when it is back in the outbox, due now."""
                return self._send(prepared, cycle, summary, stopping) in (REROUTED, HELD)

            try:
                with Lanes(self.settings.dispatch.concurrency, send, name="dispatch") as lanes:
                    # One batch at least, however short the time: a clinic that
                    # shares the cycle with a busier one still sends.
                    first = True
                    while not stopping() and (first or time.monotonic() < claim_until):
                        first = False
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
        self,
        claimed: Claimed,
        channel: ChannelName,
        now: datetime,
        db_now: datetime,
        claimed_at: float,
    ) -> str:
        """Compose and send one delivery claimed already (a sample) by `channel`, at
        once; its outcome. What fails is not tried again. `claimed_at` is the
        monotonic time before the claim's transaction began."""
        summary = DispatchSummary()
        with Leases(self.sessions, self.database_clock, self.lease) as leases:
            leases.took(claimed.claim.token, [claimed.id], db_now, claimed_at)
            cycle = self.start_cycle(now, leases)
            try:
                for prepared in self.compose(
                    [claimed], cycle, summary, db_now, forced=channel, retries=False
                ):
                    self._send(prepared, cycle, summary, retries=False)
            finally:
                self._end_cycle(cycle)
        return next(iter(summary.counts), "failed")

    def preview(
        self,
        session: Session,
        claimed: Claimed,
        channel: ChannelName,
        now: datetime,
        renderer: Renderer | None = None,
    ) -> OutgoingMessage:
        """The message a delivery would be, by `channel`, composed as if sent at `now`
        (holds and the LINE quota aside), by `renderer` (one with a text being edited
        in its file's place) or the worker's. Raises TemplateError, or LookupError
        when the patient has no usable contact on that channel."""
        batch = read_batch(session, [claimed], now, self.settings)
        assert claimed.patient_id is not None
        recipient = batch.recipients.get(claimed.patient_id)
        decision = route(
            claimed, recipient, self.settings, {}, now, None, forced=channel, paused=batch.paused
        )
        if not isinstance(decision, Go):
            raise LookupError(decision.reason)
        composer = self.composer if renderer is None else Composer(self.settings, renderer)
        message, _ = composer.message(claimed, channel, batch, self.day(now))
        return message

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
            log.error(
                "delivery %s quarantined: %s",
                delivery_id,
                problem,
                extra=self._facts(delivery_id=delivery_id, state=DeliveryState.FAILED),
            )
            summary.add("quarantined")
        for delivery_id, attempts in batch.given_up:
            log.error(
                "delivery %s given up: claimed %d times, no outcome",
                delivery_id,
                attempts,
                extra=self._facts(delivery_id=delivery_id, state=DeliveryState.FAILED),
            )
            summary.add("failed")
        if not batch.claimed:
            return [] if batch.quarantined or batch.given_up else None
        token = batch.claimed[0].claim.token
        cycle.leases.took(token, [c.id for c in batch.claimed], db_now, started)
        try:
            return self.compose(batch.claimed, cycle, summary, db_now)
        except SQLAlchemyError:
            raise  # the database, not the batch: its claims come back after their lease
        except Exception as e:
            self._batch_failed(batch.claimed, e, cycle, summary)
            return []

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
        active, db_time = cycle.active_holds(), cycle.leases.db_now()
        routes: dict[str, Route] = {}
        for c in claimed:
            recipient = known.recipients.get(c.patient_id) if c.patient_id is not None else None
            age = key_age(c.line_first_request_at, db_time) if c.maybe_sent else None
            try:
                routes[c.id] = route(
                    c, recipient, self.settings, active, cycle.now, age, forced, known.paused
                )
            except Exception as e:
                routes[c.id] = self._compose_problem(c, e, cycle.now)
        chosen, not_now = self.recorder.until_written(
            lambda session: self._prepare(session, claimed, routes, cycle, db_now, retries)
        )
        prepared, problems = [], []
        composer = self.composer
        for one in chosen:
            try:
                message, tip_id = composer.message(one.claimed, one.channel, known, cycle.day)
            except Exception as e:
                problem = self._compose_problem(one.claimed, e, cycle.now)
                problems.append((replace(one.claimed, claim=one.claim), problem))
                continue
            prepared.append(Prepared(message, one.claimed, one.claim, tip_id, one.first_request_at))
        if problems:
            not_now += self.recorder.until_written(
                lambda session: [
                    self._not_now(session, c, problem, cycle.now, retries)
                    for c, problem in problems
                ]
            )
        for c, outcome, reason in not_now:
            cycle.leases.done(c.claim)
            if outcome:
                summary.add(outcome)
                log_outcome(self.settings.clinic_slug, c.id, c.reason, c.channel, outcome, reason)
        return prepared

    def _prepare(
        self,
        session: Session,
        claimed: list[Claimed],
        routes: Mapping[str, Route],
        cycle: Cycle,
        db_now: datetime,
        retries: bool,
    ) -> tuple[list[_Chosen], list[_NotNow]]:
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
        going: list[tuple[Claimed, transitions.Preparation]] = []
        not_now: list[_NotNow] = []
        for c in claimed:
            decision = routes[c.id]
            if not isinstance(decision, Go):
                not_now.append(self._not_now(session, c, decision, now, retries))
                continue
            channel, claim = self._open_channel(c, decision, month, places)
            if channel is None:
                wait = Wait(now + HOLD_RECHECK, QUOTA_HELD_REASON)
                not_now.append(self._not_now(session, c, wait, now, retries))
                continue
            first_request_at = c.line_first_request_at
            if channel is ChannelName.LINE and first_request_at is None:
                first_request_at = db_now
                claim = replace(claim, first_request_ours=True)
            template = template_in(folder_of(c, self.settings), channel)
            going.append((c, transitions.Preparation(claim, channel, template, first_request_at)))
        chosen: list[_Chosen] = []
        took = transitions.prepare(session, [preparation for _, preparation in going])
        for (c, preparation), ok in zip(going, took, strict=True):
            claim = preparation.claim
            if not ok:
                if claim.quota_month != c.claim.quota_month:
                    places[c.reason] += 1  # taken over meanwhile: the new place is unused
                not_now.append((c, "", ""))
                continue
            if c.claim.quota_month not in (None, claim.quota_month):
                # The place it held was another month's: that month has it back.
                budget.give_back(session, Counter({c.claim.quota_month: 1}))
            first = (
                preparation.first_request_at if preparation.channel is ChannelName.LINE else None
            )
            chosen.append(_Chosen(c, claim, preparation.channel, first))
        unused = sum(places.values())
        if unused:
            budget.give_back(session, Counter({month: unused}))
        return chosen, not_now

    def _open_channel(
        self, claimed: Claimed, go: Go, month: str, places: Counter[Reason]
    ) -> tuple[ChannelName | None, Claim]:
        """The first of `go`'s channels that can take the message now: LINE needs a
        place in this month's budget (one it holds, or one just granted)."""
        for channel in go.channels:
            if channel is not ChannelName.LINE or claimed.claim.quota_month == month:
                return channel, claimed.claim
            if places[claimed.reason] > 0:
                places[claimed.reason] -= 1
                return channel, replace(claimed.claim, quota_month=month)
        return None, claimed.claim

    def _compose_problem(self, claimed: Claimed, error: Exception, now: datetime) -> Wait | Stop:
        """A template the practitioner can mend: the message waits for that (shown by
        `tayori status` and `tayori lint`) without using up its attempts. Anything
        else is a fault of ours that would fail the same way again: it fails."""
        if isinstance(error, TemplateError):
            log.error(
                "template problem: %s",
                error,
                extra=self._facts(delivery_id=claimed.id, reason=claimed.reason),
            )
            return Wait(now + TEMPLATE_RECHECK, str(error))
        # The log gets where it happened, not the error's text (it may quote the patient).
        where = "".join(traceback.format_tb(error.__traceback__))
        kind = type(error).__name__
        log.error(
            "delivery %s could not be composed: %s\n%s",
            claimed.id,
            kind,
            where,
            extra=self._facts(delivery_id=claimed.id, reason=claimed.reason),
        )
        return Stop(COMPOSE_FAILED.format(kind=kind))

    def _not_now(
        self,
        session: Session,
        claimed: Claimed,
        decision: Skip | Wait | Stop,
        now: datetime,
        retries: bool,
    ) -> _NotNow:
        """Record a claimed delivery that does not go now, and why; its outcome."""
        claim, reason = claimed.claim, decision.reason
        if isinstance(decision, Skip):
            took, outcome = transitions.skip(session, claim, reason, now), "skipped"
        elif isinstance(decision, Wait) and retries:
            took, outcome = transitions.wait(session, claim, decision.until, reason, now), HELD
        else:
            if not retries:
                reason = f"{reason}; {SAMPLE_NOT_RETRIED}"
            took, outcome = transitions.fail(session, claim, reason, now), "failed"
        return claimed, outcome if took else "", reason

    def _batch_failed(
        self, claimed: list[Claimed], error: Exception, cycle: Cycle, summary: DispatchSummary
    ) -> None:
        """A fault of ours that stopped a whole batch (reading its facts, say): each
        message is tried again later, its attempt counted, so a fault that lasts
        fails them once their attempts are used up, rather than looping."""
        kind = type(error).__name__
        where = "".join(traceback.format_tb(error.__traceback__))
        log.error(
            "a batch of %d could not be composed: %s\n%s",
            len(claimed),
            kind,
            where,
            extra=self._facts(),
        )
        reason = COMPOSE_FAILED.format(kind=kind)

        def write(session: Session) -> list[_NotNow]:
            ended = []
            for c in claimed:
                attempt = Attempt(c.id, c.channel or ChannelName.EMAIL, c.attempts)
                decision = decide(
                    Failure.TRANSIENT,
                    reason,
                    attempt,
                    cycle.now,
                    self.settings.dispatch,
                    month_ends=cycle.now,
                )
                if isinstance(decision, Retry):
                    took = transitions.retry(
                        session, c.claim, decision.at, reason, cycle.now, Reach.NOTHING
                    )
                    ended.append((c, "retry" if took else "", reason))
                else:
                    took = transitions.fail(session, c.claim, reason, cycle.now)
                    ended.append((c, "failed" if took else "", reason))
            return ended

        for c, outcome, why in self.recorder.until_written(write):
            cycle.leases.done(c.claim)
            if outcome:
                summary.add(outcome)
                log_outcome(self.settings.clinic_slug, c.id, c.reason, c.channel, outcome, why)

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
                outcome = self.recorder.released(prepared, cycle.now)
            elif self._key_expired(prepared, cycle):
                outcome = self.recorder.expired(prepared, cycle.now, RETRY_KEY_EXPIRED)
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
                "delivery %s: unexpected %s in sending\n%s",
                message.delivery_id,
                kind,
                where,
                extra=self._facts(
                    delivery_id=message.delivery_id,
                    reason=message.reason,
                    channel=message.channel,
                ),
            )
            failure = Failure.UNCERTAIN
            channel = message.channel.value
            reason = f"unexpected error in the {channel} channel ({kind}): see the worker's log"
        else:
            return self.recorder.sent(prepared, receipt, cycle.now)
        decision = self.recorder.decide(
            prepared, failure, reason, cycle.now, cycle.leases.db_now(), cycle.holds
        )
        if isinstance(decision, HoldChannel):
            # Before the message is back in the outbox: the loop that claims it again
            # must see the hold, and send it the other way or let it wait.
            cycle.hold(message.channel, decision)
        return self.recorder.record(prepared, decision, failure, cycle.now, retries)

    def _key_expired(self, prepared: Prepared, cycle: Cycle) -> bool:
        """A LINE push that may have reached LINE before, now too late to repeat."""
        if not prepared.claim.sent_before or prepared.first_request_at is None:
            return False
        return retry_key_expired(cycle.leases.db_now() - prepared.first_request_at)

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
            log.warning(
                "LINE quota could not be read: %s",
                e.reason,
                extra=self._facts(channel=ChannelName.LINE),
            )
            if e.failure in (Failure.CHANNEL_UNAVAILABLE, Failure.UNREACHABLE):
                self._hold_line(e, now)
            return
        with transaction(self.sessions) as session:
            budget.record_reading(session, month, reading_.limit, reading_.used, now)

    def _hold_line(self, error: DeliveryError, now: datetime) -> None:
        """LINE refused or could not be reached when asked for its quota: held as a
        failed push would hold it (an unreachable server less and less often)."""
        with transaction(self.sessions) as session:
            current = holds(session).get(ChannelName.LINE)
            since = current.since if current and current.cause is HoldCause.UNREACHABLE else None
            decision = decide(
                error.failure,
                error.reason,
                Attempt("quota", ChannelName.LINE, 0),
                now,
                self.settings.dispatch,
                month_ends=month_bounds(now, self.settings.timezone)[1],
                held_since=since,
            )
            assert isinstance(decision, HoldChannel)
            hold_channel(
                session, ChannelName.LINE, decision.cause, decision.reason, now, decision.until
            )
        log.error(
            "line channel held until %s: %s",
            decision.until.isoformat(),
            error.reason,
            extra=self._facts(channel=ChannelName.LINE),
        )

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
                log.warning(
                    "could not lift the holds of %s: %s",
                    recovered,
                    type(e).__name__,
                    extra=self._facts(),
                )

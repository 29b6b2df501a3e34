"""Recording what happened to a message once its send returned.

An outcome is written through the outbox's transitions, guarded by the claim's
token, and never given up: when the database cannot take it (SQLite's write lock
held by an import, PostgreSQL restarting), it is kept in memory and written again
until it is. A message the server accepted and whose `sent` could not be recorded
would otherwise be sent again after its lease.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from scheduler.channels import OutgoingMessage, Receipt
from scheduler.core.domain import ChannelName, DeliveryState, HoldCause, Reason
from scheduler.core.failure_policy import (
    Attempt,
    Decision,
    Fail,
    Failure,
    HoldChannel,
    Reroute,
    Retry,
    decide,
)
from scheduler.core.quota import month_bounds
from scheduler.outbox import transitions
from scheduler.outbox.lanes import GroupCommit
from scheduler.outbox.transitions import Claim, Claimed, Reach
from scheduler.settings import Settings
from scheduler.store.channel_state import Hold, hold_channel
from scheduler.store.db import transaction
from scheduler.store.patients import mark_contact_unusable

log = logging.getLogger(__name__)

# Outcomes that leave a message planned and due at once, for the same cycle to try
# again: by the patient's other contact, or by the other channel.
REROUTED = "rerouted"
HELD = "held"
TAKEN_OVER = "taken over"
SAMPLE_NOT_RETRIED = "a sample is not retried: fix the cause and send it again"
FIRST_WAIT, LONGEST_WAIT = 0.05, 5.0  # seconds between tries to write an outcome

T = TypeVar("T")


@dataclass(frozen=True)
class Prepared:
    """A composed message, with what recording its outcome needs."""

    message: OutgoingMessage
    claimed: Claimed
    claim: Claim  # as prepared: the LINE place it holds, whose first request it is
    tip_id: str | None
    # LINE: the first request that carried the retry key (the database's clock).
    first_request_at: datetime | None


def reach_of(failure: Failure) -> Reach:
    if failure is Failure.UNCERTAIN:
        return Reach.MAYBE
    if failure is Failure.UNREACHABLE:
        return Reach.NOTHING
    return Reach.REFUSED


class Recorder:
    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings
        self._sent = GroupCommit(self._write_sent)

    def sent(self, prepared: Prepared, receipt: Receipt, now: datetime) -> str:
        # Lanes that finish at once share one transaction; each waits for its own.
        took = self._sent.add((prepared, receipt.provider_message_id, now))
        return "sent" if took else TAKEN_OVER

    def decide(
        self,
        prepared: Prepared,
        failure: Failure,
        reason: str,
        now: datetime,
        db_now: datetime,
        holds: dict[ChannelName, Hold],
    ) -> Decision:
        """What the failure means (scheduler.core.failure_policy)."""
        channel = prepared.message.channel
        maybe_sent = prepared.claim.sent_before or failure is Failure.UNCERTAIN
        first_request = prepared.first_request_at
        key_age = db_now - first_request if first_request is not None else None
        current = holds.get(channel)
        unreachable_since = (
            current.since if current and current.cause is HoldCause.UNREACHABLE else None
        )
        decision = decide(
            failure,
            reason,
            Attempt(prepared.claim.id, channel, prepared.claimed.attempts, maybe_sent, key_age),
            now,
            self.settings.dispatch,
            month_ends=month_bounds(now, self.settings.timezone)[1],
            held_since=unreachable_since,
        )
        if isinstance(decision, Reroute) and prepared.claimed.patient_id is None:
            # The clinic's own digest: its address is in the settings, no other to try.
            return Fail(f"{decision.reason} — check the [digest] address in the settings")
        return decision

    def record(
        self,
        prepared: Prepared,
        decision: Decision,
        failure: Failure,
        now: datetime,
        retries: bool = True,
    ) -> str:
        """Record `decision` for a failed send. Without `retries` (a sample) the
        message fails instead of being tried again; the contact is still marked, or
        the channel held."""
        channel, claimed = prepared.message.channel, prepared.claimed
        claim, tip_id, reach = prepared.claim, prepared.tip_id, reach_of(failure)

        def write(session: Session) -> bool:
            match decision:
                case Reroute() if claimed.patient_id is not None:
                    mark_contact_unusable(
                        session, claimed.patient_id, channel, decision.reason, now, self.tz
                    )
                    if retries:
                        return transitions.reroute(session, claim, decision.reason, now)
                case HoldChannel():
                    hold_channel(
                        session, channel, decision.cause, decision.reason, now, decision.until
                    )
                    if retries:
                        return transitions.wait(
                            session, claim, now, decision.reason, now, reach, tip_id
                        )
                case Retry() if retries:
                    return transitions.retry(
                        session, claim, decision.at, decision.reason, now, reach, tip_id
                    )
            reason = decision.reason if retries else f"{decision.reason}; {SAMPLE_NOT_RETRIED}"
            return transitions.fail(session, claim, reason, now, reach, tip_id)

        took = self.until_written(write)
        if isinstance(decision, HoldChannel):
            until = decision.until.isoformat()
            log.error(
                "%s channel held until %s: %s",
                channel.value,
                until,
                decision.reason,
                extra={"clinic": self.settings.clinic_slug, "channel": channel},
            )
        outcome = {Reroute: REROUTED, HoldChannel: HELD, Retry: "retry", Fail: "failed"}[
            type(decision)
        ]
        if not retries:
            outcome = "failed"
        return self._logged(prepared.message, outcome if took else TAKEN_OVER, decision.reason)

    def expired(self, prepared: Prepared, now: datetime, reason: str) -> str:
        """A LINE push whose retry key is too old to repeat: failed unsent, its place
        counted as used (an earlier push may have reached the patient)."""
        took = self.until_written(
            lambda session: transitions.fail(session, prepared.claim, reason, now)
        )
        return self._logged(prepared.message, "failed" if took else TAKEN_OVER, reason)

    def released(self, prepared: Prepared, now: datetime) -> str:
        took = self.until_written(lambda session: transitions.release(session, prepared.claim, now))
        return self._logged(prepared.message, "released" if took else TAKEN_OVER, None)

    def until_written(self, write: Callable[[Session], T]) -> T:
        """Run `write` in a transaction until the database takes it."""
        wait = FIRST_WAIT
        while True:
            try:
                with transaction(self.sessions) as session:
                    return write(session)
            except DBAPIError as e:
                if not _is_transient(e):
                    raise
                log.warning(
                    "an outcome could not be recorded (%s); trying again in %.2f s",
                    _first_line(e),
                    wait,
                )
                time.sleep(wait)
                wait = min(wait * 2, LONGEST_WAIT)

    @property
    def tz(self) -> ZoneInfo:
        return self.settings.timezone

    def _write_sent(self, items: list[tuple[Prepared, str | None, datetime]]) -> list[bool]:
        took = self.until_written(
            lambda session: transitions.record_sent(
                session,
                [(p.claim, receipt, p.tip_id) for p, receipt, _ in items],
                max(now for _, _, now in items),
            )
        )
        for (prepared, _, _), ok in zip(items, took, strict=True):
            self._logged(prepared.message, "sent" if ok else TAKEN_OVER, None)
        return took

    def _logged(self, message: OutgoingMessage, outcome: str, error: str | None) -> str:
        log_outcome(
            self.settings.clinic_slug,
            message.delivery_id,
            message.reason,
            message.channel,
            outcome,
            error,
        )
        return outcome


# The state a delivery is left in by each outcome: the ones that try again leave it
# planned.
STATE_AFTER = {
    "sent": DeliveryState.SENT,
    "failed": DeliveryState.FAILED,
    "skipped": DeliveryState.SKIPPED,
    "retry": DeliveryState.PLANNED,
    REROUTED: DeliveryState.PLANNED,
    HELD: DeliveryState.PLANNED,
    "released": DeliveryState.PLANNED,
}


def log_outcome(
    clinic: str,
    delivery_id: str,
    reason: Reason,
    channel: ChannelName | None,
    outcome: str,
    error: str | None,
) -> None:
    # One line per delivery, and nothing that identifies the patient.
    facts = {"clinic": clinic, "delivery_id": delivery_id, "reason": reason, "channel": channel}
    if outcome == TAKEN_OVER:
        log.warning(
            "delivery %s: its claim was taken over by another worker; this outcome is dropped",
            delivery_id,
            extra={**facts, "outcome": outcome},
        )
        return
    log.info(
        "delivery %s %s via %s: %s%s",
        delivery_id,
        reason.value,
        channel.value if channel else "-",
        outcome,
        f" ({error})" if error else "",
        extra={**facts, "outcome": outcome, "state": STATE_AFTER.get(outcome)},
    )


def key_age(first_request_at: datetime | None, db_now: datetime) -> timedelta | None:
    """How long ago the first LINE request carrying a retry key was made."""
    return None if first_request_at is None else db_now - first_request_at


def _is_transient(error: DBAPIError) -> bool:
    """The database could not take the write now (locked, connection lost), as opposed
    to a write that can never succeed."""
    return isinstance(error, OperationalError) or error.connection_invalidated


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0][:200]

"""What a failed send means for its delivery (pure): try again at a moment, fail with
the reason, try the patient's other contact, or hold the whole channel.

A channel reads its provider's answer and names a `Failure`; `decide` turns it, with
what is known of the delivery and `now`, into a `Decision`. Nothing here sleeps or
reads a clock: the dispatcher records the decision in the outbox and moves on.

Two promises shape the table:
- A message that may have reached the patient (no answer came: a timeout, a 5xx, a
  worker that stopped while sending) is tried again only by the same channel, never
  sent another way: the patient may have it already. By LINE it is repeated under
  the same retry key, which LINE honours for 24 hours from the first request that
  carried it, and only while that is safely inside the 24 hours (`LAST_LINE_RETRY`).
- A channel that fails as a whole (refused credentials, the month's LINE quota, a
  server that cannot be reached) holds the channel, not the message: no message
  uses up its attempts on it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from scheduler.core.config import Dispatch
from scheduler.core.domain import ChannelName, HoldCause


class Failure(StrEnum):
    """What a channel says a failed send means."""

    TRANSIENT = "transient"  # nothing was accepted: try again later
    # The provider may have accepted it (a timeout, a 5xx): try again with the same
    # delivery id, and only while the provider still recognises that id.
    UNCERTAIN = "uncertain"
    CONTACT_UNUSABLE = "contact_unusable"  # this address cannot receive: mark it
    CHANNEL_UNAVAILABLE = "channel_unavailable"  # credentials refused: hold the channel
    UNREACHABLE = "unreachable"  # no connection to the server at all: hold, with backoff
    QUOTA_EXHAUSTED = "quota_exhausted"  # LINE's monthly limit is reached
    PERMANENT = "permanent"  # this message can never go as it is

    @property
    def may_have_been_sent(self) -> bool:
        return self is Failure.UNCERTAIN


MAX_DELAY = timedelta(hours=1)
RETRY_KEY_LIFETIME = timedelta(hours=24)
# The last moment a LINE push may be repeated under its retry key, counted from the
# first request that carried it: an hour short of LINE's 24, for clocks that differ
# and for a push that leaves a little after it was decided.
LAST_LINE_RETRY = RETRY_KEY_LIFETIME - timedelta(hours=1)
CREDENTIALS_RECHECK = timedelta(minutes=30)
UNREACHABLE_FIRST_WAIT = timedelta(minutes=1)
UNREACHABLE_LONGEST_WAIT = timedelta(minutes=30)
RETRY_KEY_EXPIRED = (
    "LINE may have received it, and its retry key is too old to be sure LINE would "
    "recognise a repeat, so it is not sent again"
)
NOT_ANOTHER_WAY = "it may have reached the patient already, so it is not sent another way"


@dataclass(frozen=True)
class Attempt:
    """What the policy knows of the delivery whose send failed."""

    delivery_id: str
    channel: ChannelName
    attempts: int  # claims counted so far, this one included
    # This attempt or an earlier one may have reached the patient.
    maybe_sent: bool = False
    # LINE: how long ago the first request carrying the retry key was made (on the
    # database's clock).
    key_age: timedelta | None = None


@dataclass(frozen=True)
class Retry:
    at: datetime
    reason: str


@dataclass(frozen=True)
class Fail:
    reason: str


@dataclass(frozen=True)
class Reroute:
    """Mark this contact unusable and send by the patient's other one, now."""

    reason: str


@dataclass(frozen=True)
class HoldChannel:
    cause: HoldCause
    until: datetime
    reason: str


Decision = Retry | Fail | Reroute | HoldChannel


def decide(
    failure: Failure,
    reason: str,
    attempt: Attempt,
    now: datetime,
    policy: Dispatch,
    *,
    month_ends: datetime,
    held_since: datetime | None = None,
) -> Decision:
    """The decision for one failed send. `month_ends` is when LINE's quota comes
    back; `held_since` when the channel's current run of failures began, if it is
    held already (an unreachable server is tried less and less often)."""
    if failure is Failure.PERMANENT:
        return Fail(reason)
    if failure is Failure.CONTACT_UNUSABLE:
        if attempt.maybe_sent:
            return Fail(f"{reason}; {NOT_ANOTHER_WAY}")
        return Reroute(reason)
    if failure is Failure.CHANNEL_UNAVAILABLE:
        return HoldChannel(HoldCause.CREDENTIALS, now + CREDENTIALS_RECHECK, reason)
    if failure is Failure.QUOTA_EXHAUSTED:
        return HoldChannel(HoldCause.QUOTA, month_ends, reason)
    if failure is Failure.UNREACHABLE:
        waited = now - held_since if held_since is not None else timedelta(0)
        wait = min(max(waited, UNREACHABLE_FIRST_WAIT), UNREACHABLE_LONGEST_WAIT)
        return HoldChannel(HoldCause.UNREACHABLE, now + wait, reason)
    next_try = retry_at(attempt.delivery_id, attempt.attempts, now, policy)
    if next_try is None:
        return Fail(reason)
    key_age = attempt.key_age
    line_repeat = attempt.channel is ChannelName.LINE and attempt.maybe_sent
    if line_repeat and key_age is not None and retry_key_expired(key_age + (next_try - now)):
        return Fail(f"{reason}; {RETRY_KEY_EXPIRED}")
    return Retry(next_try, reason)


def retry_key_expired(key_age: timedelta) -> bool:
    """Whether a LINE push whose key is this old may no longer be repeated."""
    return key_age >= LAST_LINE_RETRY


def retry_at(delivery_id: str, attempts: int, now: datetime, policy: Dispatch) -> datetime | None:
    """The moment of the next attempt, or None when the attempts are used up.

    Exponential backoff with jitter taken from the delivery id, so the same inputs
    give the same answer and many failed deliveries do not retry in one burst.
    """
    if attempts >= policy.max_attempts:
        return None
    base = timedelta(seconds=policy.retry_after_seconds * 2 ** max(attempts - 1, 0))
    jitter = int(hashlib.sha256(delivery_id.encode()).hexdigest()[:4], 16) / 0xFFFF
    return now + min(base * (1 + jitter / 2), MAX_DELAY)

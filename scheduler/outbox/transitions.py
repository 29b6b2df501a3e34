"""The outbox's state machine: the only code that writes a delivery's state.

Every message is a row in `deliveries` before anything is sent, and moves

    planned ──claim──▶ sending ──record_sent──▶ sent
                          ├──retry / reroute / wait / release──▶ planned
                          ├──fail / give_up / quarantine──▶ failed
                          └──skip──▶ skipped
    planned ──withdraw──▶ withdrawn ──revive──▶ planned   (skipped revives too)
    failed, skipped ──requeue──▶ planned                  (by hand)

A message held by hand (`hold`, by its idempotency key, before or after its row is
written) stays `planned` and is not claimed until `unhold`.

Each transition is one conditional UPDATE guarded by the state it expects and, for a
claimed row, by the claim's token (random per claim, stored on the row): it takes
effect only while the row is still where the caller believes it is, and says whether
it did. A worker whose lease ran out while it was sending finds its late outcome
refused, because another worker claimed the row meanwhile; it logs that and drops the
outcome, and the new claimer's stands.

| transition  | from                                  | guard        | to        |
| ----------- | ------------------------------------- | ------------ | --------- |
| plan        | (a new row)                           | unique key   | planned   |
| withdraw    | planned                               |              | withdrawn |
| revive      | withdrawn, skipped                    |              | planned   |
| move        | planned                               |              | planned   |
| claim       | planned, due, not held; sending, lease ended |       | sending   |
| give_up     | sending, lease ended, attempts used   |              | failed    |
| claim_new   | (a new row: a sample sent at once)    |              | sending   |
| renew       | sending                               | token        | sending   |
| prepare     | sending                               | token        | sending   |
| record_sent | sending                               | token        | sent      |
| retry       | sending                               | token        | planned   |
| reroute     | sending                               | token        | planned   |
| wait        | sending                               | token        | planned   |
| release     | sending                               | token        | planned   |
| fail        | sending                               | token        | failed    |
| skip        | sending                               | token        | skipped   |
| quarantine  | sending                               | token        | failed    |
| requeue     | failed, skipped                       |              | planned   |
| hold        | (no row yet), planned, withdrawn, skipped, failed |  | (held)    |
| unhold      | (held)                                |              | (as it was) |

- `claim` counts an attempt and gives the row a lease on the database's clock; `renew`
  extends it while the worker still works on the row, so only a dead (or cut off)
  worker's rows come back. A row claimed `max_attempts` times without an outcome
  ends with `give_up`; a row this version cannot read, with `quarantine`.
- `prepare`, just before the send, records the channel and template chosen, the LINE
  place the claim holds in the month's budget (scheduler.outbox.budget), the moment
  of the first LINE request carrying the retry key, and that the message may now
  reach the patient (`maybe_sent`). An outcome that says it certainly did not undoes
  that; a worker that dies leaves it, so whoever takes the row over knows.
- A message that may have reached the patient (`maybe_sent`) is only ever tried again
  by the same channel; its LINE place is kept while it is tried again, and counted as
  used when it ends. A LINE place is counted when its push is sent, and given back
  on every path on which no message may have gone. `quota_month` names the month
  whose budget holds a place for the row, only while it does.
- `wait` and `release` do not count the attempt: the message did not fail (its
  channel is held, LINE's quota is kept for more important messages, its template
  is being mended, or its worker is stopping).
- `hold` and `unhold` change no state: they write the key's record in
  `held_messages`, which `claim` honours. A row that is being sent, or was sent,
  cannot be held. `hold` writes the row it finds (a guarded UPDATE), so that a claim
  racing it either finishes first (the hold is refused) or waits for it and then
  finds the record (`claim` reads the held keys again after its UPDATE, whose
  condition PostgreSQL re-checks against the statement's older snapshot).
- Every transition back to `planned` other than the planner's own, and `skip`, marks
  the row's patient for the next cycle's plan (scheduler/store/replan.py): the rules
  may no longer want the message, a newsletter may need another slot of its pacing,
  or a skipped message may go another way.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Executable,
    Row,
    String,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Update

from scheduler.core.domain import ChannelName, DeliveryState, Reason, member
from scheduler.outbox import budget
from scheduler.store.batches import batches
from scheduler.store.bulk import insert_new
from scheduler.store.clinics import clinic_of
from scheduler.store.db import upsert_insert
from scheduler.store.models import Delivery, HeldMessage, UTCDateTime
from scheduler.store.replan import mark_patient_of

GIVEN_UP = "claimed {attempts} times without an outcome (its worker stopped each time): given up"
UNREADABLE = "unreadable: {problem}"
WITHDRAWN_NOT_DUE = (
    "no longer due (a visit, a booking, a cancellation, or a change of consent, phase or cadence)"
)
# A message may be held by hand while it is not on its way: not yet written, waiting,
# or in a state it may come back from.
HOLDABLE = (
    DeliveryState.PLANNED,
    DeliveryState.WITHDRAWN,
    DeliveryState.SKIPPED,
    DeliveryState.FAILED,
)
# A newsletter whose campaign was paused (in the desk, with `tayori campaign pause`, or
# `enabled = false` in the campaigns file); resuming it plans the newsletter again.
WITHDRAWN_CAMPAIGN_PAUSED = "its campaign is paused"
# States a message may come back from when it is due again: a booking that was made
# and then cancelled, or a contact that was added after a skip.
REVIVABLE = (DeliveryState.WITHDRAWN, DeliveryState.SKIPPED)


class Reach(Enum):
    """How far an attempt got: what its outcome undoes."""

    NOTHING = "no request left"  # stopped before it, or no connection could be made
    REFUSED = "the provider answered and took nothing"
    MAYBE = "the provider may have taken it"  # no answer: a timeout, a 5xx, a dead worker


@dataclass(frozen=True)
class Claim:
    """One delivery as the worker that claimed it holds it."""

    id: str
    token: str
    quota_month: str | None = None  # the month whose LINE budget holds a place for it
    # An earlier attempt may have reached the patient (see `prepare`).
    sent_before: bool = False
    # `prepare` set the first LINE request's moment: when this attempt's request never
    # left, the moment is cleared again.
    first_request_ours: bool = False


@dataclass(frozen=True)
class Claimed:
    """A claimed delivery's row, read as this version understands it."""

    claim: Claim
    patient_id: int | None
    appointment_id: int | None
    reason: Reason
    channel: ChannelName | None
    campaign_id: str | None
    campaign_day: date | None
    tip_id: str | None
    attempts: int
    line_first_request_at: datetime | None

    @property
    def id(self) -> str:
        return self.claim.id

    @property
    def maybe_sent(self) -> bool:
        """An earlier attempt may have reached the patient: only its channel may
        try again."""
        return self.claim.sent_before


@dataclass(frozen=True)
class ClaimedBatch:
    claimed: list[Claimed]
    quarantined: list[tuple[str, str]]  # (delivery id, what could not be read)
    given_up: list[tuple[str, int]]  # (delivery id, attempts)


# -- planning ----------------------------------------------------------------------


def plan(session: Session, rows: list[dict[str, Any]]) -> int:
    """Insert new planned rows (each with the same columns); a row whose idempotency
    key exists already is left as it is (several planners may run at once). Returns
    how many were new."""
    # In bulk (store/bulk.py): a first plan inserts a row for most of a clinic.
    table: Table = Delivery.__table__  # type: ignore[assignment]
    return insert_new(session, table, rows)


def withdraw(session: Session, ids: Collection[str], now: datetime, reason: str) -> int:
    """No longer due. A message that may have reached the patient already (planned
    again after no answer) counts the LINE place it kept as used."""
    withdrawn = 0
    for chunk in batches(ids):
        rows = session.execute(
            update(Delivery)
            .where(Delivery.id.in_(chunk), Delivery.state == DeliveryState.PLANNED)
            .values(state=DeliveryState.WITHDRAWN, last_error=reason, updated_at=now)
            .returning(Delivery.id, Delivery.quota_month),
            execution_options={"synchronize_session": False},
        ).all()
        withdrawn += len(rows)
        _settle_places(session, [(row.id, row.quota_month, True) for row in rows])
    return withdrawn


def revive(
    session: Session,
    delivery_id: str,
    *,
    channel: ChannelName,
    template: str,
    send_after: datetime,
    now: datetime,
) -> bool:
    return _took(
        session,
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.state.in_(REVIVABLE))
        .values(
            state=DeliveryState.PLANNED,
            channel=channel,
            template=template,
            send_after=send_after,
            last_error=None,
            updated_at=now,
        ),
    )


def move(session: Session, delivery_id: str, send_after: datetime, now: datetime) -> bool:
    return _took(
        session,
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.state == DeliveryState.PLANNED)
        .values(send_after=send_after, updated_at=now),
    )


def requeue(session: Session, delivery_id: str, now: datetime, note: str) -> bool:
    """Due again at once with fresh attempts, under the same id."""
    took = _took(
        session,
        update(Delivery)
        .where(
            Delivery.id == delivery_id,
            Delivery.state.in_((DeliveryState.FAILED, DeliveryState.SKIPPED)),
        )
        .values(
            state=DeliveryState.PLANNED,
            send_after=now,
            attempts=0,
            last_error=note,
            updated_at=now,
        ),
    )
    if took:
        mark_patient_of(session, delivery_id)
    return took


class HoldRefused(LookupError):
    """The message is on its way or gone: it can no longer be held."""


def hold(session: Session, key: str, now: datetime, held_by: int | None) -> bool:
    """Keep the message of `key` from being sent until `unhold`, whether its row is
    written yet or not. False if it was held already; HoldRefused if its row is being
    sent or was sent."""
    clinic_id = clinic_of(session)
    this_key = and_(Delivery.clinic_id == clinic_id, Delivery.idempotency_key == key)
    # A planned row is written (not only read) so that the hold waits for, or holds
    # up, a claim of it; rows in other states are not claimed, and keep their times.
    touched = _count(
        session,
        update(Delivery)
        .where(this_key, Delivery.state == DeliveryState.PLANNED)
        .values(updated_at=now),
    )
    if not touched:
        state = session.scalar(select(type_coerce(Delivery.state, String)).where(this_key))
        if state is not None and state not in HOLDABLE:
            raise HoldRefused(f"the message {key} is {state}: it can no longer be held")
    inserted = session.execute(
        upsert_insert(session, HeldMessage)
        .values(clinic_id=clinic_id, idempotency_key=key, held_by=held_by, held_at=now)
        .on_conflict_do_nothing()
        .returning(HeldMessage.idempotency_key)
    ).first()
    return inserted is not None


def unhold(session: Session, key: str) -> bool:
    """Let the message of `key` go again: a planned row is claimed when it is due (at
    once, if its moment passed while it was held). False if it was not held."""
    return (
        _count(
            session,
            delete(HeldMessage).where(
                HeldMessage.clinic_id == clinic_of(session), HeldMessage.idempotency_key == key
            ),
        )
        == 1
    )


def held_keys(session: Session) -> dict[str, datetime]:
    """The keys of the clinic's messages held by hand, and since when."""
    return {
        key: at
        for key, at in session.execute(
            select(HeldMessage.idempotency_key, HeldMessage.held_at).where(
                HeldMessage.clinic_id == clinic_of(session)
            )
        )
    }


def held_by_hand() -> ColumnElement[bool]:
    """The row's message is held by hand."""
    return exists().where(
        HeldMessage.clinic_id == Delivery.clinic_id,
        HeldMessage.idempotency_key == Delivery.idempotency_key,
    )


# -- claiming ----------------------------------------------------------------------


def claim(
    session: Session,
    *,
    now: datetime,
    db_now: datetime,
    lease: timedelta,
    limit: int,
    max_attempts: int,
    only: Reason | None = None,
) -> ClaimedBatch:
    """Claim up to `limit` due deliveries, oldest first, under one new token.

    Due: planned with `send_after <= now`, or sending with a lease that ended before
    `db_now` (the database's clock). `only` narrows to one reason (outside the send
    window, only the clinic's digest goes). Rows claimed `max_attempts` times without
    an outcome are given up instead, and rows this version cannot read quarantined."""
    clinic = Delivery.clinic_id == clinic_of(session)
    lease_ended = and_(
        clinic,
        Delivery.state == DeliveryState.SENDING,
        # No lease at all: a row left by a version that had none.
        or_(Delivery.lease_until < db_now, Delivery.lease_until.is_(None)),
    )
    given_up = _give_up(session, lease_ended, max_attempts, now)
    claimable: ColumnElement[bool] = or_(
        and_(
            clinic,
            Delivery.state == DeliveryState.PLANNED,
            Delivery.send_after <= now,
            ~held_by_hand(),
        ),
        lease_ended,
    )
    if only is not None:
        claimable = and_(claimable, Delivery.reason == only)
    candidates = session.scalars(
        select(Delivery.id)
        .where(claimable)
        .order_by(Delivery.send_after, Delivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite locks the whole file
    ).all()
    if not candidates:
        return ClaimedBatch([], [], given_up)
    token = new_token()
    # Claimable is checked again as the rows are written, so a row another worker
    # took since the read is left out rather than taken twice.
    rows = session.execute(
        update(Delivery)
        .where(Delivery.id.in_(candidates), claimable)
        .values(
            state=DeliveryState.SENDING,
            claim_token=token,
            claimed_at=db_now,
            lease_until=db_now + lease,
            attempts=Delivery.attempts + 1,
            updated_at=now,
        )
        .returning(*_CLAIMED_COLUMNS),
        execution_options={"synchronize_session": False},
    ).all()
    # A hold that committed while this UPDATE waited for its row is seen only now.
    held_meanwhile = set(
        session.scalars(
            select(Delivery.id).where(Delivery.id.in_([row.id for row in rows]), held_by_hand())
        )
    )
    order = {delivery_id: n for n, delivery_id in enumerate(candidates)}
    claimed, quarantined = [], []
    for row in sorted(rows, key=lambda row: order[row.id]):
        if row.id in held_meanwhile:
            release(session, Claim(row.id, token, row.quota_month, bool(row.maybe_sent)), now)
            continue
        try:
            claimed.append(_read_claimed(row, token))
        except _Unreadable as problem:
            held = Claim(row.id, token, row.quota_month, bool(row.maybe_sent))
            quarantine(session, held, str(problem), now)
            quarantined.append((row.id, str(problem)))
    return ClaimedBatch(claimed, quarantined, given_up)


def claim_new(
    session: Session, row: dict[str, Any], *, db_now: datetime, lease: timedelta
) -> Claim:
    """Insert a row already claimed, so no worker takes it: a sample sent at once."""
    token = new_token()
    session.add(
        Delivery(
            **row,
            state=DeliveryState.SENDING,
            attempts=1,
            claim_token=token,
            claimed_at=db_now,
            lease_until=db_now + lease,
        )
    )
    session.flush()
    return Claim(row["id"], token)


def renew(
    session: Session, held: Mapping[str, Collection[str]], db_now: datetime, lease: timedelta
) -> tuple[set[str], set[str]]:
    """Extend the leases of the rows a worker still works on (`held`: token → ids);
    returns the ids renewed, and those another worker took over."""
    ids = [i for rows in held.values() for i in rows]
    if not ids:
        return set(), set()
    # A row another transaction is writing (its outcome, its channel) is left for
    # the next renewal: waiting for it could deadlock with that writer.
    free = (
        select(Delivery.id)
        .where(
            Delivery.id.in_(ids),
            Delivery.claim_token.in_(list(held)),
            Delivery.state == DeliveryState.SENDING,
        )
        .with_for_update(skip_locked=True)
    )
    renewed = set(
        session.scalars(
            update(Delivery)
            .where(Delivery.id.in_(free.scalar_subquery()))
            .values(lease_until=db_now + lease)
            .returning(Delivery.id),
            execution_options={"synchronize_session": False},
        )
    )
    missing = set(ids) - renewed
    if not missing:
        return renewed, set()
    # Not renewed: being written or recorded a moment ago (still under our token),
    # or taken over.
    still_ours = set(
        session.scalars(
            select(Delivery.id).where(
                Delivery.id.in_(list(missing)), Delivery.claim_token.in_(list(held))
            )
        )
    )
    return renewed, missing - still_ours


@dataclass(frozen=True)
class Preparation:
    """What `prepare` records of one claim: the channel and template chosen, and the
    first LINE request's moment (the one it had, or now; None for email)."""

    claim: Claim
    channel: ChannelName
    template: str
    first_request_at: datetime | None


def prepare(session: Session, preparations: Sequence[Preparation]) -> list[bool]:
    """Record, just before the sends, each claim's channel and template, the LINE
    place it holds and the first LINE request's moment, and that the message may now
    reach the patient; whether each took effect."""
    rows = [
        {
            "delivery_id": p.claim.id,
            "token": p.claim.token,
            "channel": p.channel,
            "template": p.template,
            "quota_month": p.claim.quota_month,
            "first_request_at": p.first_request_at,
        }
        for p in preparations
    ]
    return _each_took(
        session, _PREPARE, rows, [p.claim for p in preparations], DeliveryState.SENDING
    )


# -- outcomes of a claim -------------------------------------------------------------


def record_sent(
    session: Session,
    sent: Sequence[tuple[Claim, str | None, str | None]],
    now: datetime,
) -> list[bool]:
    """Each (claim, provider's message id, tip) as sent; whether each took effect."""
    rows = [
        {
            "delivery_id": held.id,
            "token": held.token,
            "receipt": provider_message_id,
            "tip_id": tip_id,
            "now": now,
        }
        for held, provider_message_id, tip_id in sent
    ]
    claims = [held for held, _, _ in sent]
    took = _each_took(session, _RECORD_SENT, rows, claims, DeliveryState.SENT)
    budget.count_as_used(
        session,
        Counter(c.quota_month for c, ok in zip(claims, took, strict=True) if ok and c.quota_month),
    )
    return took


def retry(
    session: Session,
    claimed: Claim,
    at: datetime,
    reason: str,
    now: datetime,
    reach: Reach,
    tip_id: str | None = None,
) -> bool:
    """Planned again for `at` (the attempt counted), the tip kept for the next one."""
    return _end(session, claimed, DeliveryState.PLANNED, reach, now, reason, tip_id, send_after=at)


def reroute(session: Session, claimed: Claim, reason: str, now: datetime) -> bool:
    """Planned again at once: the contact just tried refused it, the other one may do
    (the next claim chooses the channel again)."""
    return _end(session, claimed, DeliveryState.PLANNED, Reach.REFUSED, now, reason, send_after=now)


def wait(
    session: Session,
    claimed: Claim,
    until: datetime,
    reason: str,
    now: datetime,
    reach: Reach = Reach.NOTHING,
    tip_id: str | None = None,
) -> bool:
    """Planned again for `until` without counting the attempt: not the message's
    failure (its channel is held, LINE's quota is kept for more important messages,
    its template is being mended)."""
    return _end(
        session,
        claimed,
        DeliveryState.PLANNED,
        reach,
        now,
        reason,
        tip_id,
        send_after=until,
        attempts=Delivery.attempts - 1,
    )


def release(session: Session, claimed: Claim, now: datetime) -> bool:
    """Planned again at once, unsent, its attempt not counted (its worker stops, or
    its lease may have run out)."""
    return _end(
        session,
        claimed,
        DeliveryState.PLANNED,
        Reach.NOTHING,
        now,
        None,
        attempts=Delivery.attempts - 1,
    )


def fail(
    session: Session,
    claimed: Claim,
    reason: str,
    now: datetime,
    reach: Reach = Reach.NOTHING,
    tip_id: str | None = None,
) -> bool:
    return _end(session, claimed, DeliveryState.FAILED, reach, now, reason, tip_id)


def skip(session: Session, claimed: Claim, reason: str, now: datetime) -> bool:
    return _end(session, claimed, DeliveryState.SKIPPED, Reach.NOTHING, now, reason)


def quarantine(session: Session, claimed: Claim, problem: str, now: datetime) -> bool:
    """A claimed row this version cannot read: failed, so it never stops the rest."""
    reason = UNREADABLE.format(problem=problem)
    return _end(session, claimed, DeliveryState.FAILED, Reach.NOTHING, now, reason)


def new_token() -> str:
    return secrets.token_hex(16)


# -- the statements ----------------------------------------------------------------


def _claimed(claimed: Claim) -> Update:
    """An UPDATE of this claim's row, while it is still this claim's."""
    return update(Delivery).where(
        Delivery.id == claimed.id,
        Delivery.claim_token == claimed.token,
        Delivery.state == DeliveryState.SENDING,
    )


def _end(
    session: Session,
    claimed: Claim,
    state: DeliveryState,
    reach: Reach,
    now: datetime,
    reason: str | None,
    tip_id: str | None = None,
    **values: Any,
) -> bool:
    """End a claim in `state`, undoing what `prepare` said of an attempt that
    certainly did not reach the patient, and settling its LINE place: kept while a
    message that may have gone is tried again, counted as used when it ends, given
    back when no message can have gone."""
    maybe_sent = claimed.sent_before or reach is Reach.MAYBE
    values |= {"state": state, "maybe_sent": maybe_sent, "lease_until": None, "updated_at": now}
    if reason is not None or state is not DeliveryState.PLANNED:
        values["last_error"] = reason
    if tip_id is not None:  # a retry keeps the tip its first attempt chose
        values["tip_id"] = tip_id
    if claimed.first_request_ours and reach is Reach.NOTHING:
        values["line_first_request_at"] = None  # no request carried the key after all
    place = claimed.quota_month
    keeps_place = maybe_sent and state is DeliveryState.PLANNED
    if place is not None and not keeps_place:
        values["quota_month"] = None
    took = _took(session, _claimed(claimed).values(**values))
    if took and state in (DeliveryState.PLANNED, DeliveryState.SKIPPED):
        mark_patient_of(session, claimed.id)
    if took and place is not None and not keeps_place:
        if maybe_sent:
            budget.count_as_used(session, Counter({place: 1}))
        else:
            budget.give_back(session, Counter({place: 1}))
    return took


def _settle_places(session: Session, rows: Sequence[tuple[str, str | None, bool]]) -> None:
    """Settle the LINE places of rows that ended outside a claim: (id, the month of
    its place, whether its message may have gone) each."""
    with_place = [(i, month, maybe) for i, month, maybe in rows if month is not None]
    if not with_place:
        return
    for chunk in batches([i for i, _, _ in with_place]):
        session.execute(
            update(Delivery).where(Delivery.id.in_(chunk)).values(quota_month=None),
            execution_options={"synchronize_session": False},
        )
    budget.count_as_used(session, Counter(month for _, month, maybe in with_place if maybe))
    budget.give_back(session, Counter(month for _, month, maybe in with_place if not maybe))


def _give_up(
    session: Session, lease_ended: ColumnElement[bool], max_attempts: int, now: datetime
) -> list[tuple[str, int]]:
    # Rows another worker is giving up at this moment are left to it.
    rows = session.execute(
        select(Delivery.id, Delivery.attempts, Delivery.quota_month, Delivery.maybe_sent)
        .where(lease_ended, Delivery.attempts >= max_attempts)
        .order_by(Delivery.id)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows:
        return []
    for chunk in batches([row.id for row in rows]):
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(chunk))
            .values(
                state=DeliveryState.FAILED,
                last_error=GIVEN_UP.format(attempts=max_attempts),
                lease_until=None,
                updated_at=now,
            ),
            execution_options={"synchronize_session": False},
        )
    # Its worker may have sent it before it stopped: a place used, unless it never could.
    _settle_places(session, [(row.id, row.quota_month, row.maybe_sent) for row in rows])
    return [(row.id, row.attempts) for row in rows]


def _each_took(
    session: Session,
    statement: Executable,
    rows: list[dict[str, Any]],
    claims: Sequence[Claim],
    state: DeliveryState,
) -> list[bool]:
    """Run a guarded statement once per row (one round trip: these run for every
    message), and say which took effect: all, as a rule; when one did not (its claim
    was taken over), the rows are read to say which."""
    if not rows:
        return []
    result = cast(CursorResult[Any], session.connection().execute(statement, rows))
    if result.rowcount == len(rows):
        return [True] * len(rows)
    found = dict(
        session.execute(
            select(Delivery.id, Delivery.claim_token).where(
                Delivery.id.in_([c.id for c in claims]), Delivery.state == state
            )
        ).tuples()
    )
    return [found.get(c.id) == c.token for c in claims]


def _took(session: Session, statement: Executable) -> bool:
    return _count(session, statement) == 1


def _count(session: Session, statement: Executable) -> int:
    result = session.execute(statement, execution_options={"synchronize_session": False})
    return cast(CursorResult[Any], result).rowcount


# Read as text where this version may not know a value (a row a newer version wrote):
# one such row is quarantined, not a batch that fails to load.
_CLAIMED_COLUMNS = (
    Delivery.id,
    Delivery.patient_id,
    Delivery.appointment_id,
    type_coerce(Delivery.reason, String).label("reason"),
    type_coerce(Delivery.channel, String).label("channel"),
    Delivery.campaign_id,
    type_coerce(Delivery.campaign_day, String).label("campaign_day"),
    Delivery.tip_id,
    Delivery.attempts,
    type_coerce(Delivery.line_first_request_at, String).label("line_first_request_at"),
    Delivery.quota_month,
    Delivery.maybe_sent,
)


class _Unreadable(ValueError):
    pass


def _read_claimed(row: Row[*tuple[Any, ...]], token: str) -> Claimed:
    reason = member(Reason, row.reason)
    if reason is None:
        raise _Unreadable(f"unknown reason {row.reason!r}")
    channel = member(ChannelName, row.channel) if row.channel is not None else None
    if row.channel is not None and channel is None:
        raise _Unreadable(f"unknown channel {row.channel!r}")
    return Claimed(
        claim=Claim(row.id, token, row.quota_month, bool(row.maybe_sent)),
        patient_id=row.patient_id,
        appointment_id=row.appointment_id,
        reason=reason,
        channel=channel,
        campaign_id=row.campaign_id,
        campaign_day=_day(row.campaign_day),
        tip_id=row.tip_id,
        attempts=row.attempts,
        line_first_request_at=_moment(row.line_first_request_at),
    )


def _day(value: object) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise _Unreadable(f"campaign_day {value!r} is not a date") from None


def _moment(value: object) -> datetime | None:
    """A UTC column read as text (SQLite) or as a naive datetime (PostgreSQL)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        try:
            value = datetime.fromisoformat(str(value))
        except ValueError:
            raise _Unreadable(f"line_first_request_at {value!r} is not a moment") from None
    return value.replace(tzinfo=UTC)


_DELIVERIES = Delivery.metadata.tables[Delivery.__tablename__]
_THIS_CLAIM = (
    _DELIVERIES.c.id == bindparam("delivery_id"),
    _DELIVERIES.c.claim_token == bindparam("token"),
    _DELIVERIES.c.state == DeliveryState.SENDING,
)
_PREPARE = (
    update(_DELIVERIES)
    .where(*_THIS_CLAIM)
    .values(
        channel=bindparam("channel"),
        template=bindparam("template"),
        maybe_sent=True,
        quota_month=bindparam("quota_month"),
        line_first_request_at=bindparam("first_request_at", type_=UTCDateTime()),
    )
)
_RECORD_SENT = (
    update(_DELIVERIES)
    .where(*_THIS_CLAIM)
    .values(
        state=DeliveryState.SENT,
        provider_message_id=bindparam("receipt"),
        tip_id=bindparam("tip_id"),
        sent_at=bindparam("now", type_=UTCDateTime()),
        last_error=None,
        lease_until=None,
        quota_month=None,  # counted as used
        updated_at=bindparam("now", type_=UTCDateTime()),
    )
)

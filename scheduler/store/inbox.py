"""The inbox of LINE's webhook events, and what each event does.

Each event is stored once, by its `webhookEventId`, before anything is done with it
(`store`); then it is processed from the table (`process`): by the web process as
soon as it has answered LINE, and by the worker for any left behind (a web process
that stopped, a failure). A redelivered event, or one LINE sent twice, finds its id
in the inbox and adds nothing.

Processing one event is one transaction: it takes the event (its row locked on
PostgreSQL; SQLite's write lock, taken at BEGIN, does the same), does what the event
asks and marks it processed, so the web process and a worker taking it at the same
moment cannot both act on it. A failure rolls all of it back and counts an attempt
with the kind of error (never its message: the event holds a LINE user id and what
they wrote); the worker tries again each cycle until `MAX_ATTEMPTS`, then leaves it
unprocessed with its last error.

What each event does (only from a user's own chat with the account; events from
group and room chats are stored and marked processed, nothing more):
- `follow` (a new friend, or unblocking): greeted (messages/line_follow/); a
  patient linked to that LINE whose LINE was marked unusable may be sent to again.
- `unfollow` (blocked): the linked patient's LINE is marked unusable. The
  dispatcher chooses the channel again each time a message goes, so their planned
  LINE messages then go by email where they have an address, or end `skipped` with
  the reason.
- a text `message`: a link code links that LINE to its patient
  (scheduler/store/linking.py); 「配信停止」/「配信再開」 withdraw or give the linked
  patient's newsletter consent; each is confirmed by a reply. Other text: nothing.
- any other event: nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, case, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from scheduler.core.domain import ChannelName, ConsentKind
from scheduler.core.line_chat import Say, newsletter_request
from scheduler.store.clinics import clinic_of
from scheduler.store.consent import ConsentSource, record_consent
from scheduler.store.db import transaction, upsert_insert
from scheduler.store.linking import Linked, link
from scheduler.store.models import Patient, WebhookEvent
from scheduler.store.patients import mark_contact_unusable

# Tries before the worker gives an event up: one that fails five cycles running
# fails for a reason of ours (a fault, data it cannot handle), not a passing one.
MAX_ATTEMPTS = 5
BLOCKED = "blocked the LINE account (unfollow)"
ID_LENGTH = 64  # webhook_events.id; LINE's ids are 26-character ULIDs
TYPE_LENGTH = 32  # webhook_events.event_type

_SAY_LINKED = {
    Linked.LINKED: Say.LINKED,
    Linked.ALREADY: Say.ALREADY_LINKED,
    Linked.TAKEN: Say.TAKEN,
    Linked.WRONG: Say.WRONG_CODE,
    Linked.EXPIRED: Say.EXPIRED_CODE,
    Linked.USED: Say.USED_CODE,
    Linked.LOCKED: Say.LOCKED,
}


class MalformedBody(ValueError):
    """A webhook body that is not LINE's shape: nothing of it is stored."""


@dataclass(frozen=True)
class Reply:
    """What to answer, through the event's reply token, once its effect is committed."""

    token: str
    say: Say
    linked: bool = False  # for the greeting: this LINE is linked to a patient already


@dataclass(frozen=True)
class Processed:
    outcome: str  # for the log: what the event did, naming nobody
    reply: Reply | None


def events_in(payload: Any) -> list[dict[str, Any]]:
    """The events of a parsed webhook body; MalformedBody if it is not LINE's shape
    (an object with a list of events, each with a type and an id that fit)."""
    events = payload.get("events") if isinstance(payload, dict) else None
    if not isinstance(events, list):
        raise MalformedBody("expected an object with a list of 'events'")
    for event in events:
        if not isinstance(event, dict):
            raise MalformedBody("an event is not an object")
        event_id, kind = event.get("webhookEventId"), event.get("type")
        if not isinstance(event_id, str) or not 0 < len(event_id) <= ID_LENGTH:
            raise MalformedBody("an event has no usable 'webhookEventId'")
        if not isinstance(kind, str) or not 0 < len(kind) <= TYPE_LENGTH:
            raise MalformedBody("an event has no usable 'type'")
    return events


def store(session: Session, events: list[dict[str, Any]], now: datetime) -> list[str]:
    """Put each event in the inbox unless it is there already; the ids of all of
    them, new or not, in the order LINE sent them."""
    rows: dict[str, dict[str, Any]] = {}
    for event in events:
        rows.setdefault(
            event["webhookEventId"],
            {
                "id": event["webhookEventId"],
                "clinic_id": clinic_of(session),
                "event_type": event["type"],
                "body": json.dumps(event, ensure_ascii=False),
                "received_at": now,
                "attempts": 0,
            },
        )
    if rows:
        session.execute(
            upsert_insert(session, WebhookEvent)
            .values(list(rows.values()))
            .on_conflict_do_nothing(index_elements=["clinic_id", "id"])
        )
    return list(rows)


def pending(session: Session, limit: int = 100) -> list[str]:
    """Events not yet processed that have attempts left, oldest first."""
    return list(
        session.scalars(
            select(WebhookEvent.id)
            .where(
                WebhookEvent.clinic_id == clinic_of(session),
                WebhookEvent.processed_at.is_(None),
                WebhookEvent.attempts < MAX_ATTEMPTS,
            )
            .order_by(WebhookEvent.received_at, WebhookEvent.id)
            .limit(limit)
        )
    )


def process(
    sessions: sessionmaker[Session], event_id: str, now: datetime, tz: ZoneInfo
) -> Processed | None:
    """Do what the event asks, once: None if it is processed already (or unknown)."""
    with transaction(sessions) as session:
        event = session.scalars(
            select(WebhookEvent)
            .where(*_the_event(session, event_id), WebhookEvent.processed_at.is_(None))
            .with_for_update()
        ).first()
        if event is None:
            return None
        done = _act(session, json.loads(event.body), now, tz)
        event.processed_at = now
        event.attempts += 1
        event.last_error = None
    return done


def event_counts(session: Session) -> list[tuple[str, str, int]]:
    """How many events the inbox holds of each type and outcome: `processed`,
    `pending` (to be tried again) or `failed` (given up after MAX_ATTEMPTS)."""
    outcome = case(
        (WebhookEvent.processed_at.is_not(None), "processed"),
        (WebhookEvent.attempts >= MAX_ATTEMPTS, "failed"),
        else_="pending",
    ).label("outcome")
    return [
        (kind, str(result), count)
        for kind, result, count in session.execute(
            select(WebhookEvent.event_type, outcome, func.count())
            .where(WebhookEvent.clinic_id == clinic_of(session))
            .group_by(WebhookEvent.event_type, outcome)
        )
    ]


def record_failure(sessions: sessionmaker[Session], event_id: str, error: BaseException) -> int:
    """Count a failed attempt with the kind of error; the attempts made so far."""
    with transaction(sessions) as session:
        session.execute(
            update(WebhookEvent)
            .where(*_the_event(session, event_id), WebhookEvent.processed_at.is_(None))
            .values(attempts=WebhookEvent.attempts + 1, last_error=describe_error(error))
        )
        attempts = session.scalar(
            select(WebhookEvent.attempts).where(*_the_event(session, event_id))
        )
    return attempts or 0


def _the_event(session: Session, event_id: str) -> tuple[ColumnElement[bool], ...]:
    return (WebhookEvent.clinic_id == clinic_of(session), WebhookEvent.id == event_id)


def describe_error(error: BaseException) -> str:
    """The kind of an error, without its message: a database's message may quote the
    row's values (a LINE user id), a JSON error the text."""
    if isinstance(error, SQLAlchemyError) and getattr(error, "orig", None) is not None:
        return f"{type(error).__name__} ({type(error.orig).__name__})"  # type: ignore[attr-defined]
    return type(error).__name__


def _act(session: Session, event: dict[str, Any], now: datetime, tz: ZoneInfo) -> Processed:
    kind = str(event.get("type"))
    source = event.get("source")
    user = None
    if isinstance(source, dict) and source.get("type") == "user":
        user = source.get("userId")
    token = event.get("replyToken")
    token = token if isinstance(token, str) and token else None
    if not isinstance(user, str) or not user:
        return Processed(f"{kind}: not from a user's own chat, nothing to do", None)
    if kind == "follow":
        return _follow(session, user, token, now)
    if kind == "unfollow":
        return _unfollow(session, user, now, tz)
    message = event.get("message")
    if kind == "message" and isinstance(message, dict) and message.get("type") == "text":
        return _text(session, user, str(message.get("text", "")), token, now)
    return Processed(f"{kind}: nothing to do", None)


def _follow(session: Session, user: str, token: str | None, now: datetime) -> Processed:
    # A follow proves this LINE can receive the account's messages now, whatever
    # marked it unusable before (a block, or an id LINE did not know then).
    patients = _linked_to(session, user)
    restored = 0
    for patient in patients:
        if patient.line_unusable_reason is not None:
            patient.line_unusable_reason = None
            patient.updated_at = now
            restored += 1
    reply = Reply(token, Say.GREETING, linked=bool(patients)) if token else None
    outcome = "follow"
    if restored:
        outcome += f": LINE usable again for {restored} patient(s)"
    return Processed(outcome, reply)


def _unfollow(session: Session, user: str, now: datetime, tz: ZoneInfo) -> Processed:
    patients = _linked_to(session, user)
    for patient in patients:
        mark_contact_unusable(session, patient.id, ChannelName.LINE, BLOCKED, now, tz)
    return Processed(f"unfollow: LINE marked blocked for {len(patients)} patient(s)", None)


def _text(session: Session, user: str, text: str, token: str | None, now: datetime) -> Processed:
    linking = link(session, user, text, now)
    if linking.linked is not Linked.NO_CODE:
        say = _SAY_LINKED[linking.linked]
        return Processed(f"link code: {linking.linked}", Reply(token, say) if token else None)
    granted = newsletter_request(text)
    if granted is None:
        return Processed("message: no automatic answer", None)
    patients = _linked_to(session, user)
    if not patients:
        say = Say.NOT_LINKED
    else:
        for patient in patients:
            record_consent(
                session, patient.id, ConsentKind.NEWSLETTER, granted, ConsentSource.LINE, now
            )
        say = Say.RESUMED if granted else Say.STOPPED
    return Processed(f"newsletter request: {say}", Reply(token, say) if token else None)


def _linked_to(session: Session, user: str) -> list[Patient]:
    """The patients whose LINE this is (a family may share one, by import)."""
    return list(
        session.scalars(
            select(Patient)
            .where(
                Patient.clinic_id == clinic_of(session),
                Patient.line_user_id == user,
                Patient.forgotten_at.is_(None),
            )
            .order_by(Patient.id)
        )
    )

"""The planner: turns what the rules say is due into outbox rows.

Planning is safe to repeat and to run in several processes at once: a row's
idempotency key is unique, new rows are inserted with ON CONFLICT DO NOTHING, and
every change goes through the outbox's transitions (only rows still `planned` move).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, String, and_, select, type_coerce
from sqlalchemy.orm import Session

from scheduler.core.campaigns import Campaign, Occurrence, audience
from scheduler.core.config import Rules
from scheduler.core.domain import (
    AppointmentStatus,
    ChannelName,
    DeliveryState,
    Due,
    PatientFacts,
    Reason,
    member,
)
from scheduler.core.replan import next_change, settings_fingerprint
from scheduler.core.routing import choose_channel
from scheduler.core.rules import messages_due
from scheduler.core.window import at_local, local_date, next_opening
from scheduler.messages.template_names import template_in
from scheduler.outbox import transitions
from scheduler.outbox.newsletters import (
    campaigns_in_force,
    expected_newsletters,
    first_plan_pending,
    newsletters_due,
    newsletters_live,
    occurrences_ahead,
    record_planned,
)
from scheduler.outbox.spread import rarely_collecting, spread
from scheduler.outbox.transitions import (
    REVIVABLE,
    WITHDRAWN_CAMPAIGN_PAUSED,
    WITHDRAWN_NOT_DUE,
)
from scheduler.outbox.unconsented import record_unconsented, would_be_due
from scheduler.settings import Settings, Spreading
from scheduler.store.audiences import audience_members
from scheduler.store.batches import batches
from scheduler.store.clinics import clinic_of
from scheduler.store.db import among, among_texts
from scheduler.store.facts import contacts_of, load_facts_of
from scheduler.store.models import Delivery, Patient, new_delivery_id
from scheduler.store.replan import (
    last_fingerprint,
    lock_for_planning,
    patient_ids,
    patients_to_plan,
    planned_beyond,
    set_replan_at,
    settings_changed,
)


@dataclass(frozen=True)
class PlanResult:
    created: int
    revived: int
    withdrawn: int


class PlannedMessage(NamedTuple):
    """One message the dry run expects to send (a named tuple, as `Due` is: a dry
    run of a clinic makes tens of thousands, in child processes that send them back)."""

    patient: str  # external_id
    reason: str
    channel: ChannelName
    send_at: datetime
    template: str
    key: str = ""  # the idempotency key: what a hold by hand names
    held: bool = False  # held by hand: the worker will not send it until released


@dataclass(frozen=True)
class _Existing:
    """An outbox row of a planned patient. Its state is None when this version does
    not know it (a newer version wrote it): such a row is left alone."""

    id: str
    state: DeliveryState | None
    send_after: datetime
    campaign_id: str | None


def _existing(session: Session, patient_ids: Sequence[int]) -> dict[str, _Existing]:
    """The outbox rows of these patients, by idempotency key."""
    found: dict[str, _Existing] = {}
    for chunk in batches(sorted(patient_ids)):
        found |= _rows_where(session, among(session, Delivery.patient_id, chunk))
    return found


def _existing_by_key(session: Session, keys: Sequence[str]) -> dict[str, _Existing]:
    found: dict[str, _Existing] = {}
    for chunk in batches(keys):
        found |= _rows_where(
            session,
            and_(
                Delivery.clinic_id == clinic_of(session),
                among_texts(session, Delivery.idempotency_key, chunk),
            ),
        )
    return found


def _rows_where(session: Session, condition: ColumnElement[bool]) -> dict[str, _Existing]:
    return {
        key: _Existing(delivery_id, member(DeliveryState, state), send_after, campaign_id)
        for key, delivery_id, state, send_after, campaign_id in session.execute(
            select(
                Delivery.idempotency_key,
                Delivery.id,
                type_coerce(Delivery.state, String),
                Delivery.send_after,
                Delivery.campaign_id,
            ).where(condition)
        )
    }


@rarely_collecting()
def plan(
    session: Session,
    now: datetime,
    rules: Rules,
    settings: Settings | None = None,
    *,
    everyone: bool = False,
) -> PlanResult:
    """Bring the outbox in line with the rules at `now` (and, given the settings,
    with the seasonal campaigns) for the patients whose facts changed or whose
    moment to be planned again has come; for every patient when `everyone` is set,
    the settings changed since the last plan, or a campaign occurrence starts (its
    pacing spreads its whole audience). A paused campaign counts as disabled: its
    newsletters are withdrawn, and planned again once it is resumed."""
    live: list[tuple[Campaign, Occurrence]] = []
    paused: frozenset[str] = frozenset()
    if settings is not None:
        campaigns = campaigns_in_force(session, settings)
        paused = _paused(campaigns)
        fingerprint = settings_fingerprint(rules, campaigns, settings.config.closures)
        everyone = settings_changed(session, fingerprint, now) or everyone
        live = newsletters_live(session, now, settings)
        if live and first_plan_pending(session, live):
            everyone = True
            record_planned(session, live, now)
    ids = patient_ids(session) if everyone else patients_to_plan(session, now)
    spreading = settings.spreading if settings is not None else Spreading()
    total = PlanResult(0, 0, 0)
    with spread(session, _decide, list(batches(ids)), spreading, now, rules, bool(live)) as decided:
        # A live occurrence's newsletters are placed against each other: its patients
        # are planned together. Otherwise a batch at a time keeps memory small.
        for group in [_merged(decided)] if live else decided:
            result = _plan_patients(session, group, now, settings, live, paused)
            total = PlanResult(
                total.created + result.created,
                total.revived + result.revived,
                total.withdrawn + result.withdrawn,
            )
    return total


def plan_patient(
    session: Session,
    patient_id: int,
    now: datetime,
    rules: Rules,
    settings: Settings | None = None,
) -> PlanResult | None:
    """Plan one patient now, as the worker's next cycle would: for a change made at
    the desk, whose effect the staff expect to see at once. The patient's `replans`
    row is locked first, as a cycle locks it, so the two never plan it from
    different facts. While a campaign occurrence waits for its first plan (which
    paces its whole audience at once) the patient is left to that cycle, marked as
    they are: None."""
    lock_for_planning(session, patient_id)
    live: list[tuple[Campaign, Occurrence]] = []
    paused: frozenset[str] = frozenset()
    if settings is not None:
        live = newsletters_live(session, now, settings)
        if live and first_plan_pending(session, live):
            return None
        paused = _paused(campaigns_in_force(session, settings))
    decided = _decide(session, [patient_id], now, rules, keep_facts=bool(live))
    return _plan_patients(session, decided, now, settings, live, paused)


def _paused(campaigns: Sequence[Campaign]) -> frozenset[str]:
    return frozenset(campaign.id for campaign in campaigns if not campaign.enabled)


@dataclass(frozen=True)
class _Decided:
    """What the rules decide for a batch of patients at `now`, before anything is
    written: small enough to come back from another process (outbox/spread.py)."""

    due: dict[int, list[Due]]  # by patient: `messages_due`
    would_be: list[Due]  # what those without consent would get (outbox/unconsented.py)
    channels: dict[int, ChannelName | None]  # the channel each patient's messages take
    replan_at: dict[int, datetime | None]  # `next_change`
    facts: list[PatientFacts]  # kept only when asked: a live occurrence's audience


def _decide(
    session: Session, ids: Sequence[int], now: datetime, rules: Rules, keep_facts: bool
) -> _Decided:
    """Read these patients' facts and run the rules on them. Writes nothing."""
    facts = load_facts_of(session, now, ids)
    due = {patient.id: messages_due(patient, now, rules) for patient in facts}
    return _Decided(
        due=due,
        would_be=would_be_due(facts, now, rules),
        channels={p.id: choose_channel(p.preferred_channel, p.contacts) for p in facts},
        replan_at={p.id: next_change(p, now, rules, due[p.id]) for p in facts},
        facts=facts if keep_facts else [],
    )


def _merged(parts: Iterable[_Decided]) -> _Decided:
    merged = _Decided({}, [], {}, {}, [])
    for part in parts:
        merged.due.update(part.due)
        merged.would_be.extend(part.would_be)
        merged.channels.update(part.channels)
        merged.replan_at.update(part.replan_at)
        merged.facts.extend(part.facts)
    return merged


def _plan_patients(
    session: Session,
    decided: _Decided,
    now: datetime,
    settings: Settings | None,
    live: list[tuple[Campaign, Occurrence]],
    paused: frozenset[str],
) -> PlanResult:
    """Bring these patients' outbox rows in line with what the rules decided."""
    patients = list(decided.due)
    due = {message.key: message for messages in decided.due.values() for message in messages}
    record_unconsented(session, patients, decided.would_be, now)
    if settings is not None and live:
        for newsletter in newsletters_due(
            session, live, decided.facts, due.values(), now, settings
        ):
            due[newsletter.key] = newsletter
    existing = _existing(session, patients)

    stale = [
        row
        for key, row in existing.items()
        if row.state is DeliveryState.PLANNED and key not in due
    ]
    # A paused campaign's newsletters say so: resuming it plans them again.
    withdrawn = transitions.withdraw(
        session, [row.id for row in stale if row.campaign_id not in paused], now, WITHDRAWN_NOT_DUE
    ) + transitions.withdraw(
        session,
        [row.id for row in stale if row.campaign_id in paused],
        now,
        WITHDRAWN_CAMPAIGN_PAUSED,
    )

    new_rows: list[dict[str, Any]] = []
    revived = 0
    for key, message in due.items():
        if not message.may_create:
            continue
        channel = decided.channels[message.patient_id]
        row = existing.get(key)
        if row is None:
            new_rows.append(_row_for(message, key, channel, now))
        elif row.state in REVIVABLE and channel is not None:
            revived += transitions.revive(
                session,
                row.id,
                channel=channel,
                template=template_in(message.folder, channel),
                send_after=message.send_at,
                now=now,
            )
        elif (
            message.reason is Reason.NEWSLETTER
            and row.state is DeliveryState.PLANNED
            and row.send_after != message.send_at
        ):
            # Only a newsletter moves once planned: it is deferred to keep a
            # patient's day to one message.
            transitions.move(session, row.id, message.send_at, now)
    created = transitions.plan(session, new_rows)
    set_replan_at(session, decided.replan_at)
    return PlanResult(created=created, revived=revived, withdrawn=withdrawn)


def plan_digest(session: Session, now: datetime, settings: Settings) -> int:
    """Put today's digest in the outbox once its time has come: one row a day per
    configured address, whatever the number of workers or cycles."""
    digest = settings.digest
    today = local_date(now, settings.timezone)
    send_at = at_local(today, digest.send_at, settings.timezone)
    if not digest.enabled or now < send_at:
        return 0
    rows = [
        _new_row(
            key=f"{Reason.DAILY_DIGEST}:{today.isoformat()}:{channel}",
            reason=Reason.DAILY_DIGEST,
            channel=channel,
            send_at=send_at,
            now=now,
        )
        for channel in digest.channels
    ]
    return transitions.plan(session, rows)


def _row_for(message: Due, key: str, channel: ChannelName | None, now: datetime) -> dict[str, Any]:
    return _new_row(
        key=key,
        reason=message.reason,
        channel=channel,
        send_at=message.send_at,
        now=now,
        patient_id=message.patient_id,
        appointment_id=message.appointment_id,
        campaign_id=message.campaign_id,
        campaign_day=message.campaign_day,
        folder=message.folder,
    )


def _new_row(
    *,
    key: str,
    reason: Reason,
    channel: ChannelName | None,
    send_at: datetime,
    now: datetime,
    patient_id: int | None = None,
    appointment_id: int | None = None,
    campaign_id: str | None = None,
    campaign_day: date | None = None,
    folder: str | None = None,
) -> dict[str, Any]:
    """A planned outbox row. A patient's channel is chosen again when it is sent; a
    row without one then becomes `skipped` if the patient still has no contact."""
    return {
        "id": new_delivery_id(),
        "idempotency_key": key,
        "patient_id": patient_id,
        "appointment_id": appointment_id,
        "reason": reason,
        "channel": channel,
        "campaign_id": campaign_id,
        "campaign_day": campaign_day,
        "template": template_in(folder or reason.value, channel) if channel else None,
        "send_after": send_at,
        "state": DeliveryState.PLANNED,
        "attempts": 0,
        "last_error": None,
        "created_at": now,
        "updated_at": now,
    }


def _moments_facts_change(facts: PatientFacts, now: datetime, until: datetime) -> list[datetime]:
    """When a patient's facts change by time alone: `now`, and just after each booked
    appointment in the horizon (from then on it counts as a visit)."""
    passing = [
        a.starts_at + timedelta(seconds=1)
        for a in facts.appointments
        if a.status is AppointmentStatus.BOOKED and now < a.starts_at <= until
    ]
    return [now, *sorted(passing)]


@rarely_collecting()
def dry_run(
    session: Session,
    now: datetime,
    until: datetime,
    rules: Rules,
    settings: Settings | None = None,
    *,
    everyone: bool = False,
) -> list[PlannedMessage]:
    """What would be sent between `now` and `until` if no new facts arrive. Writes nothing.

    The rules are evaluated at `now` and again whenever time alone changes a
    patient's facts (a booked appointment passes and starts a new episode), as the
    worker's own cycles would. A patient whom the worker planned with these settings
    and whose due messages cannot change before `until` (`replan_at` beyond it) is
    answered from the outbox instead, where that plan put them; with `everyone`, the
    rules run for every patient.
    """
    settled = set() if everyone else _settled(session, until, rules, settings)
    ahead = occurrences_ahead(session, now, until, settings) if settings is not None else []
    audiences: list[list[int]] = [[] for _ in ahead]
    channels: dict[int, ChannelName | None] = {}
    expected: list[PlannedMessage] = []
    # Core rather than ORM execution, in order and without a set: a clinic's every id.
    every_id = session.connection().execute(
        select(Patient.id).where(Patient.clinic_id == clinic_of(session)).order_by(Patient.id)
    )
    # A batch of patients at a time: the facts of a whole clinic need not be in memory.
    unsettled = list(batches([i for i in every_id.scalars() if i not in settled]))
    spreading = settings.spreading if settings is not None else Spreading()
    # The settled patients' facts are not read: their messages are where the last
    # plan put them, and the database says which of them are in each audience.
    settled_batches = list(batches(sorted(settled)))
    for work, groups in ((_foresee, unsettled), (_answer_settled, settled_batches)):
        with spread(session, work, groups, spreading, now, until, rules, ahead) as answers:
            for answer in answers:
                expected += answer.expected
                channels |= answer.channels
                for members, in_batch in zip(audiences, answer.audiences, strict=True):
                    members += in_batch
    for members in audiences:
        members.sort()
    if settings is not None:
        newsletters = expected_newsletters(session, ahead, audiences, now, until, settings)
        expected += _expected(
            [(now, n) for n in newsletters],
            _existing_by_key(session, [n.key for n in newsletters]),
            channels,
            _external_ids(session, sorted({n.patient_id for n in newsletters})),
            until,
            rules,
        )
    held = transitions.held_keys(session)
    expected = [m._replace(held=True) if m.key in held else m for m in expected]
    return sorted(expected, key=lambda m: (m.send_at, m.patient, m.reason))


@dataclass(frozen=True)
class _Foreseen:
    """What the rules will send a batch of patients between two moments."""

    expected: list[PlannedMessage]  # but newsletters, which are paced over the audience
    channels: dict[int, ChannelName | None]  # of those in a coming occurrence's audience
    audiences: list[list[int]]  # the patients in each coming occurrence's audience


def _foresee(
    session: Session,
    ids: Sequence[int],
    now: datetime,
    until: datetime,
    rules: Rules,
    ahead: Sequence[tuple[Campaign, Occurrence]],
) -> _Foreseen:
    """Read these patients' facts, run the rules at each moment they change by time
    alone before `until`, and compare with their outbox rows. Writes nothing."""
    facts = load_facts_of(session, now, ids)
    # The first moment each message appears is when the worker would plan it.
    first_seen: dict[str, tuple[datetime, Due]] = {}
    for patient in facts:
        for moment in _moments_facts_change(patient, now, until):
            for message in messages_due(patient, moment, rules):
                first_seen.setdefault(message.key, (moment, message))
    channels = {p.id: choose_channel(p.preferred_channel, p.contacts) for p in facts}
    audiences = [
        audience(campaign, occurrence, facts, rules.timezone) for campaign, occurrence in ahead
    ]
    members = {patient for chosen in audiences for patient in chosen}
    return _Foreseen(
        expected=_expected(
            list(first_seen.values()),
            # By patient rather than by key: one range of ids, not an IN list of keys.
            _existing(session, ids),
            channels,
            _external_ids(session, ids),
            until,
            rules,
        ),
        channels={patient: channels[patient] for patient in members},
        audiences=audiences,
    )


def _external_ids(session: Session, ids: Sequence[int]) -> dict[int, str]:
    """The external ids of these patients, by id: what the dry run names them by."""
    found: dict[int, str] = {}
    for chunk in batches(ids):
        rows = session.execute(
            select(Patient.id, Patient.external_id).where(among(session, Patient.id, chunk))
        )
        found.update((patient_id, external_id) for patient_id, external_id in rows)
    return found


def _expected(
    first_seen: Sequence[tuple[datetime, Due]],
    existing: dict[str, _Existing],
    channels: dict[int, ChannelName | None],
    external_ids: dict[int, str],
    until: datetime,
    rules: Rules,
) -> list[PlannedMessage]:
    """The messages the worker would send by `until`, of those the rules give (each
    with the moment it first appears), given what the outbox holds of them (`existing`,
    by key: at least their rows)."""
    expected = []
    moments = _SharedMoments()
    for moment, message in first_seen:
        channel = channels[message.patient_id]
        send_at = _expected_send_at(message, existing.get(message.key), moment, rules)
        if channel is None or send_at is None or send_at > until:
            continue  # no contact (it would be skipped), already done, or too far ahead
        expected.append(
            PlannedMessage(
                patient=external_ids[message.patient_id],
                reason=message.reason.value,
                channel=channel,
                send_at=moments.one(send_at),
                template=template_in(message.folder, channel),
                key=message.key,
            )
        )
    return expected


def _answer_settled(
    session: Session,
    ids: Sequence[int],
    now: datetime,
    until: datetime,
    rules: Rules,
    ahead: Sequence[tuple[Campaign, Occurrence]],
) -> _Foreseen:
    """What the outbox says these settled patients will be sent, and which of them
    each coming occurrence reaches (the audience rule's answer, asked of the
    database: tests/integration/test_audiences.py). Writes nothing."""
    audiences: list[list[int]] = []
    channels: dict[int, ChannelName | None] = {}
    for campaign, occurrence in ahead:
        chosen = list(
            audience_members(
                session, campaign, occurrence, now, rules.timezone, among(session, Patient.id, ids)
            )
        )
        audiences.append([member.patient_id for member in chosen])
        channels |= {member.patient_id: member.channel for member in chosen}
    return _Foreseen(_planned_for(session, ids, now, until, rules), channels, audiences)


def _settled(
    session: Session, until: datetime, rules: Rules, settings: Settings | None
) -> set[int]:
    """The patients whose due messages the outbox holds as they will stay until
    `until`: planned with the settings in force, their next moment beyond it."""
    if settings is None:
        return set()
    campaigns = campaigns_in_force(session, settings)
    fingerprint = settings_fingerprint(rules, campaigns, settings.config.closures)
    if last_fingerprint(session) != fingerprint:
        return set()  # the next cycle plans everyone again
    return planned_beyond(session, until)


def _planned_for(
    session: Session, ids: Sequence[int], now: datetime, until: datetime, rules: Rules
) -> list[PlannedMessage]:
    """These settled patients' planned messages but newsletters (whose pacing the dry
    run works out for the whole audience), when and how the worker would send them:
    by the channel it would choose then, from the contacts as they are now."""
    expected = []
    moments = _SharedMoments()
    for chunk in batches(ids):
        rows = session.execute(
            select(
                Delivery.patient_id,
                Patient.external_id,
                Delivery.idempotency_key,
                type_coerce(Delivery.reason, String).label("reason"),
                Delivery.send_after,
                Delivery.template,
                Patient.preferred_channel,
                Patient.email,
                Patient.line_user_id,
                Patient.email_unusable_reason,
                Patient.line_unusable_reason,
            )
            .join(Patient, Patient.id == Delivery.patient_id)
            .where(
                among(session, Delivery.patient_id, chunk),
                Delivery.state == DeliveryState.PLANNED,
                Delivery.reason != Reason.NEWSLETTER,
            )
        )
        for row in rows:
            channel = choose_channel(row.preferred_channel, contacts_of(row))
            send_at = next_opening(max(row.send_after, now), rules.window, rules.timezone)
            if channel is None or row.patient_id is None or send_at > until:
                continue  # no usable contact: it would be skipped
            folder = row.template.rpartition("/")[0] if row.template else row.reason
            expected.append(
                PlannedMessage(
                    row.external_id,
                    sys.intern(row.reason),
                    channel,
                    moments.one(send_at),
                    template_in(folder, channel),
                    row.idempotency_key,
                )
            )
    return expected


class _SharedMoments(dict[datetime, datetime]):
    """One object for each moment. A clinic's week of tens of thousands of messages
    has a few hundred send moments, and a dry run's parent keeps every message: its
    planning processes pickle them, and pickle sends an object met twice once."""

    def one(self, moment: datetime) -> datetime:
        return self.setdefault(moment, moment)


def _expected_send_at(
    message: Due, row: _Existing | None, moment: datetime, rules: Rules
) -> datetime | None:
    """When the worker would send this message, or None if it would not."""
    if row is not None and row.state is DeliveryState.PLANNED:
        return next_opening(max(row.send_after, moment), rules.window, rules.timezone)
    if row is not None and row.state not in REVIVABLE:
        return None  # already sent, being sent, or failed
    return message.send_at if message.may_create else None

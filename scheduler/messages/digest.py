"""The practitioner's daily digest: what the clinic should know this morning.

Read-only: it counts what the outbox and the patients' facts say at `now`. The worker
plans into the outbox every minute, so the digest reads the outbox (SQL aggregates,
and only the rows it names) rather than planning every patient again. The rules run
only for what the outbox cannot hold yet: patients whose booking passes before the
month ends, and a campaign occurrence still to be planned this month.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import String, and_, exists, func, or_, select, type_coerce
from sqlalchemy.orm import Session, aliased

from scheduler.core.campaigns import audience
from scheduler.core.domain import (
    AppointmentStatus,
    ChannelName,
    ConsentKind,
    DeliveryState,
    Due,
    Phase,
    Reason,
    member,
)
from scheduler.core.quota import month_bounds
from scheduler.core.routing import choose_channel
from scheduler.core.rules import messages_due
from scheduler.core.window import at_local, local_date
from scheduler.messages.context import REASON_LABELS, SAMPLE_PATIENT, japanese_date
from scheduler.outbox.budget import line_quota
from scheduler.outbox.newsletters import expected_newsletters, occurrences_ahead
from scheduler.outbox.transitions import held_by_hand
from scheduler.settings import Settings
from scheduler.store.batches import batches
from scheduler.store.clinics import clinic_of
from scheduler.store.facts import cadence_in_force, load_facts_of
from scheduler.store.models import Appointment, CadenceChange, ConsentChange, Delivery, Patient

# What counts as a visit once its time has passed (scheduler.core.cadence.last_visit).
_VISIT_STATES = (AppointmentStatus.VISITED, AppointmentStatus.BOOKED)


@dataclass(frozen=True)
class PatientNote:
    patient: str  # external_id
    name: str
    detail: str


@dataclass(frozen=True)
class Digest:
    day: date
    planned_today: dict[Reason, int]
    sent_yesterday: dict[Reason, int]
    not_delivered_yesterday: list[PatientNote]
    newly_lapsed: list[PatientNote]
    acute_for_review: list[PatientNote]
    line_used: int
    line_forecast: int
    line_quota: int | None  # None: the LINE plan has no monthly limit


def _day_start(day: date, settings: Settings) -> datetime:
    return at_local(day, datetime.min.time(), settings.timezone)


class _PhaseChange(Protocol):
    @property
    def phase(self) -> Phase | None: ...

    @property
    def changed_at(self) -> datetime: ...


def acute_since(history: Sequence[_PhaseChange], now: datetime) -> datetime | None:
    """When the patient's current uninterrupted acute phase began, if acute now."""
    in_force = cadence_in_force(history, now)
    if in_force is None or in_force.phase is not Phase.ACUTE:
        return None
    start = list(history).index(in_force)
    while start > 0 and history[start - 1].phase is Phase.ACUTE:
        start -= 1
    return history[start].changed_at


def build_digest(session: Session, now: datetime, settings: Settings) -> Digest:
    tz = settings.timezone
    today = local_date(now, tz)
    today_start, tomorrow_start = (
        _day_start(today, settings),
        _day_start(today + timedelta(days=1), settings),
    )
    yesterday_start = _day_start(today - timedelta(days=1), settings)
    month_end = month_bounds(now, tz)[1]

    # As `tayori status` counts it: LINE's last reading or our own count, whichever
    # is larger. Ahead: what the outbox holds for LINE until the month ends, and what
    # the rules will add to it by then.
    quota = line_quota(session, now, tz, settings.config.line.monthly_quota)
    newsletters = _newsletters_foreseen(session, now, month_end, settings)
    line_ahead = (
        _planned_line(session, month_end)
        + _foreseen_line(session, now, month_end, settings)
        + sum(channel is ChannelName.LINE for _, channel in newsletters)
    )
    planned_today = _planned_by_reason(session, tomorrow_start)
    newsletters_today = sum(
        channel is not None and due.send_at < tomorrow_start for due, channel in newsletters
    )
    if newsletters_today:
        planned_today[Reason.NEWSLETTER] = (
            planned_today.get(Reason.NEWSLETTER, 0) + newsletters_today
        )
    if settings.digest.enabled and settings.digest.line_user_id:
        line_ahead += (month_end.date() - today).days  # the digest itself, once a day
    return Digest(
        day=today,
        planned_today=planned_today,
        sent_yesterday=_sent_by_reason(session, yesterday_start, today_start),
        not_delivered_yesterday=_not_delivered(session, yesterday_start, today_start),
        newly_lapsed=_newly_lapsed(session, now, settings),
        acute_for_review=_acute_for_review(session, now, settings),
        line_used=quota.used,
        line_forecast=quota.used + line_ahead,
        line_quota=quota.limit,
    )


def _by_reason(session: Session, *conditions: Any) -> dict[Reason, int]:
    """Patients' deliveries counted by reason. A reason this version does not know (a
    newer version wrote the row) is left out, as the LINE budget leaves it out."""
    counts: dict[Reason, int] = {}
    for reason, count in session.execute(
        select(type_coerce(Delivery.reason, String), func.count())
        .where(
            Delivery.clinic_id == clinic_of(session), Delivery.patient_id.is_not(None), *conditions
        )
        .group_by(Delivery.reason)
    ):
        known = member(Reason, reason)
        if known is not None:
            counts[known] = count
    return counts


def _planned_by_reason(session: Session, until: datetime) -> dict[Reason, int]:
    """What the outbox will send before `until`; a row without a channel would be
    skipped, not sent."""
    return _by_reason(
        session,
        Delivery.state == DeliveryState.PLANNED,
        ~held_by_hand(),  # held at the desk: not going out unless released
        Delivery.channel.is_not(None),
        Delivery.send_after < until,
    )


def planned_by_reason_and_channel(
    session: Session, since: datetime | None, until: datetime
) -> dict[tuple[Reason, ChannelName], int]:
    """What the outbox will send before `until` (and from `since`, if given), by
    reason and channel, counted as `_planned_by_reason` counts it: the desk's Today
    page shows today and tomorrow this way."""
    counts: dict[tuple[Reason, ChannelName], int] = {}
    for reason, channel, count in session.execute(
        select(
            type_coerce(Delivery.reason, String),
            type_coerce(Delivery.channel, String),
            func.count(),
        )
        .where(
            Delivery.clinic_id == clinic_of(session),
            Delivery.patient_id.is_not(None),
            Delivery.state == DeliveryState.PLANNED,
            ~held_by_hand(),
            Delivery.channel.is_not(None),
            Delivery.send_after < until,
            *([Delivery.send_after >= since] if since is not None else []),
        )
        .group_by(Delivery.reason, Delivery.channel)
    ):
        known, by = member(Reason, reason), member(ChannelName, channel)
        if known is not None and by is not None:
            counts[known, by] = count
    return counts


def _sent_by_reason(session: Session, start: datetime, end: datetime) -> dict[Reason, int]:
    return _by_reason(
        session,
        Delivery.state == DeliveryState.SENT,
        Delivery.updated_at >= start,
        Delivery.updated_at < end,
    )


def _planned_line(session: Session, until: datetime) -> int:
    return (
        session.scalar(
            select(func.count()).where(
                Delivery.clinic_id == clinic_of(session),
                Delivery.patient_id.is_not(None),
                Delivery.state == DeliveryState.PLANNED,
                Delivery.channel == ChannelName.LINE,
                Delivery.send_after < until,
            )
        )
        or 0
    )


def _foreseen_line(session: Session, now: datetime, until: datetime, settings: Settings) -> int:
    """LINE messages the rules will want before `until` that the outbox cannot hold
    yet: a booked appointment that passes counts as a visit from then on and starts a
    new episode. Only the patients with such a booking are read (as the dry run would
    see them: facts as they stand now, the rules at each such moment)."""
    rules = settings.rules
    passing: dict[int, list[datetime]] = {}
    for patient_id, starts_at in session.execute(
        select(Appointment.patient_id, Appointment.starts_at)
        .join(Patient, Patient.id == Appointment.patient_id)
        .where(
            Patient.clinic_id == clinic_of(session),
            Appointment.status == AppointmentStatus.BOOKED,
            Appointment.starts_at > now,
            Appointment.starts_at <= until,
            # Needed for LINE (choose_channel decides): most patients are not read.
            Patient.line_user_id.is_not(None),
            Patient.line_unusable_reason.is_(None),
        )
        .order_by(Appointment.starts_at)
    ):
        passing.setdefault(patient_id, []).append(starts_at + timedelta(seconds=1))
    foreseen = 0
    for batch in batches(sorted(passing)):
        for facts in load_facts_of(session, now, batch):
            if choose_channel(facts.preferred_channel, facts.contacts) is not ChannelName.LINE:
                continue
            # Due now: the outbox has it (the worker planned it), counted apart.
            seen = {message.key for message in messages_due(facts, now, rules)}
            for moment in passing[facts.id]:
                for message in messages_due(facts, moment, rules):
                    if message.key not in seen and message.may_create and message.send_at <= until:
                        foreseen += 1
                    seen.add(message.key)
    return foreseen


def _newsletters_foreseen(
    session: Session, now: datetime, until: datetime, settings: Settings
) -> list[tuple[Due, ChannelName | None]]:
    """The newsletters, and their channels, of the campaign occurrences up to `until`
    that the outbox holds nothing of yet: an occurrence is planned only once its time
    has come (a year-end letter at 10:00 on its day, after the digest). Only the
    patients who agreed to newsletters are read, a batch at a time, and only when
    there is such an occurrence."""
    planned = {
        (campaign_id, day)
        for campaign_id, day in session.execute(
            select(Delivery.campaign_id, Delivery.campaign_day)
            .where(
                Delivery.clinic_id == clinic_of(session),
                Delivery.reason == Reason.NEWSLETTER,
                # Read by the campaign index, which holds only such rows.
                Delivery.campaign_id.is_not(None),
            )
            .distinct()
        )
    }
    ahead = [
        (campaign, occurrence)
        for campaign, occurrence in occurrences_ahead(session, now, until, settings)
        # One starting after `until` (the first of next month, say) sends nothing by then.
        if (occurrence.campaign_id, occurrence.day) not in planned and occurrence.starts_at <= until
    ]
    if not ahead:
        return []
    latest = (
        select(func.max(ConsentChange.id))
        .join(Patient, Patient.id == ConsentChange.patient_id)
        .where(
            Patient.clinic_id == clinic_of(session), ConsentChange.kind == ConsentKind.NEWSLETTER
        )
        .group_by(ConsentChange.patient_id)
    )
    readers = list(
        session.scalars(
            select(ConsentChange.patient_id)
            .where(ConsentChange.id.in_(latest), ConsentChange.granted.is_(True))
            .order_by(ConsentChange.patient_id)
        )
    )
    audiences: list[list[int]] = [[] for _ in ahead]
    channels: dict[int, ChannelName | None] = {}
    for batch in batches(readers):
        facts = load_facts_of(session, now, batch)
        channels.update((f.id, choose_channel(f.preferred_channel, f.contacts)) for f in facts)
        for (campaign, occurrence), members in zip(ahead, audiences, strict=True):
            members += audience(campaign, occurrence, facts, settings.timezone)
    return [
        (due, channels[due.patient_id])
        for due in expected_newsletters(session, ahead, audiences, now, until, settings)
        if due.send_at <= until
    ]


def _not_delivered(session: Session, start: datetime, end: datetime) -> list[PatientNote]:
    # Read as text: a row a newer version wrote is named as it is, not a digest that fails.
    rows = session.execute(
        select(
            Patient.external_id,
            Patient.name,
            type_coerce(Delivery.reason, String).label("reason"),
            type_coerce(Delivery.state, String).label("state"),
            Delivery.last_error,
        )
        .join(Patient, Patient.id == Delivery.patient_id)
        .where(
            Delivery.clinic_id == clinic_of(session),
            Delivery.updated_at >= start,
            Delivery.updated_at < end,
            Delivery.state.in_((DeliveryState.FAILED, DeliveryState.SKIPPED)),
        )
        .order_by(Delivery.updated_at, Delivery.id)
    )
    notes = []
    for row in rows:
        known = member(Reason, row.reason)
        label = REASON_LABELS[known] if known is not None else row.reason
        notes.append(
            PatientNote(
                row.external_id,
                row.name,
                f"{label}：{_why_not_delivered(row.state, row.last_error)}",
            )
        )
    return notes


def _newly_lapsed(session: Session, now: datetime, settings: Settings) -> list[PatientNote]:
    """Patients whose last visit became more than `lapsed_after_days` old today, and
    who have no booking ahead.

    Lapsed now and not yesterday means the last visit fell on exactly one day: the
    day `lapsed_after_days + 1` days ago. So: a visit on that day with no later visit
    up to now and no booking after now."""
    tz, days = settings.timezone, settings.rules.cadence.lapsed_after_days
    today = local_date(now, tz)
    that_day = today - timedelta(days=days + 1)
    visit, later = aliased(Appointment), aliased(Appointment)
    since_then = exists().where(
        later.patient_id == visit.patient_id,
        later.starts_at > visit.starts_at,
        or_(
            and_(later.status.in_(_VISIT_STATES), later.starts_at <= now),
            and_(later.status == AppointmentStatus.BOOKED, later.starts_at > now),
        ),
    )
    rows = session.execute(
        select(Patient.external_id, Patient.name, visit.starts_at)
        .join(Patient, Patient.id == visit.patient_id)
        .where(
            Patient.clinic_id == clinic_of(session),
            visit.status.in_(_VISIT_STATES),
            visit.starts_at >= _day_start(that_day, settings),
            visit.starts_at < _day_start(that_day + timedelta(days=1), settings),
            visit.starts_at <= now,
            # A forgotten patient is counted but never named: nothing to review.
            Patient.forgotten_at.is_(None),
            ~since_then,
        )
        .order_by(Patient.id)
    )
    return [
        PatientNote(external_id, name, f"最終来院 {japanese_date(local_date(starts_at, tz))}")
        for external_id, name, starts_at in rows
    ]


def _acute_for_review(session: Session, now: datetime, settings: Settings) -> list[PatientNote]:
    """Patients acute for more than `review_after_days` without a break. Only those
    with an acute change before that many days ago can be: their histories are read."""
    tz = settings.timezone
    today = local_date(now, tz)
    cutoff = _day_start(today - timedelta(days=settings.digest.review_after_days), settings)
    candidates = (
        select(CadenceChange.patient_id)
        .join(Patient, Patient.id == CadenceChange.patient_id)
        .where(
            Patient.clinic_id == clinic_of(session),
            CadenceChange.phase == Phase.ACUTE,
            CadenceChange.changed_at < cutoff,
        )
        .distinct()
    )
    histories: dict[int, list[Any]] = {}
    for change in session.execute(
        # The id too: rows that are otherwise alike stay apart for `index`.
        select(
            CadenceChange.id,
            CadenceChange.patient_id,
            CadenceChange.phase,
            CadenceChange.changed_at,
        )
        .where(CadenceChange.patient_id.in_(candidates))
        .order_by(CadenceChange.id)
    ):
        histories.setdefault(change.patient_id, []).append(change)
    since = {}
    for patient_id, history in histories.items():
        began = acute_since(history, now)
        if (
            began is not None
            and (today - local_date(began, tz)).days > settings.digest.review_after_days
        ):
            since[patient_id] = began
    notes = []
    for batch in batches(sorted(since)):  # IN lists kept under the drivers' limits
        for patient_id, external_id, name in session.execute(
            select(Patient.id, Patient.external_id, Patient.name).where(
                Patient.id.in_(batch), Patient.forgotten_at.is_(None)
            )
        ):
            days = (today - local_date(since[patient_id], tz)).days
            notes.append(PatientNote(external_id, name, f"急性期 {days}日目"))
    return sorted(notes, key=lambda n: n.patient)


def _why_not_delivered(state: str, last_error: str | None) -> str:
    if state == DeliveryState.SKIPPED:
        return "使える連絡先（LINE・メール）がないため送れませんでした"
    return f"送信できませんでした（{last_error or '理由不明'}）"


def digest_context(digest: Digest, settings: Settings) -> dict[str, Any]:
    """The variables of the digest templates (messages/daily_digest/)."""

    def by_reason(counts: dict[Reason, int]) -> list[dict[str, Any]]:
        return [
            {"reason": reason.value, "label": REASON_LABELS[reason], "count": counts[reason]}
            for reason in Reason
            if counts.get(reason)
        ]

    def notes(items: list[PatientNote]) -> list[dict[str, str]]:
        return [{"patient": n.patient, "name": n.name, "detail": n.detail} for n in items]

    return {
        "reason": Reason.DAILY_DIGEST.value,
        "day": japanese_date(digest.day),
        "planned_today": by_reason(digest.planned_today),
        "planned_today_total": sum(digest.planned_today.values()),
        "sent_yesterday": by_reason(digest.sent_yesterday),
        "sent_yesterday_total": sum(digest.sent_yesterday.values()),
        "not_delivered_yesterday": notes(digest.not_delivered_yesterday),
        "newly_lapsed": notes(digest.newly_lapsed),
        "lapsed_after_days": settings.rules.cadence.lapsed_after_days,
        "acute_for_review": notes(digest.acute_for_review),
        "review_after_days": settings.digest.review_after_days,
        "line": {
            "used": digest.line_used,
            "forecast": digest.line_forecast,
            "quota": "上限なし" if digest.line_quota is None else digest.line_quota,
            "over_quota": digest.line_quota is not None
            and digest.line_forecast > digest.line_quota,
        },
        "clinic": {"name": settings.clinic.name},
    }


def sample_digest(day: date, patient_name: str = SAMPLE_PATIENT) -> Digest:
    """A made-up morning, with something in every section (for lint and preview)."""
    note = PatientNote(patient="P001", name=patient_name, detail="サンプル")
    return Digest(
        day=day,
        planned_today={Reason.CADENCE_NUDGE: 3, Reason.APPOINTMENT_REMINDER: 2},
        sent_yesterday={Reason.CADENCE_NUDGE: 4},
        not_delivered_yesterday=[note],
        newly_lapsed=[note],
        acute_for_review=[note],
        line_used=37,
        line_forecast=120,
        line_quota=200,
    )

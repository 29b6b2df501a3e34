"""The practitioner's daily digest: what the clinic should know this morning.

Read-only: it counts what the outbox and the patients' facts say at `now`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.core.cadence import has_future_booking, is_lapsed, last_visit
from scheduler.core.domain import ChannelName, DeliveryState, Phase, Reason
from scheduler.core.quota import month_bounds
from scheduler.core.window import at_local, local_date
from scheduler.messages.context import REASON_LABELS, SAMPLE_PATIENT, japanese_date
from scheduler.outbox.budget import line_quota
from scheduler.outbox.planner import dry_run
from scheduler.settings import Settings
from scheduler.store.facts import cadence_in_force, load_facts
from scheduler.store.models import CadenceChange, Delivery, Patient


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


def acute_since(history: list[CadenceChange], now: datetime) -> datetime | None:
    """When the patient's current uninterrupted acute phase began, if acute now."""
    in_force = cadence_in_force(history, now)
    if in_force is None or in_force.phase is not Phase.ACUTE:
        return None
    start = history.index(in_force)
    while start > 0 and history[start - 1].phase is Phase.ACUTE:
        start -= 1
    return history[start].changed_at


def build_digest(session: Session, now: datetime, settings: Settings) -> Digest:
    rules, tz = settings.rules, settings.timezone
    today = local_date(now, tz)
    today_start, tomorrow_start = (
        _day_start(today, settings),
        _day_start(today + timedelta(days=1), settings),
    )
    yesterday_start = _day_start(today - timedelta(days=1), settings)
    month_end = month_bounds(now, tz)[1]
    patients = {p.id: p for p in session.scalars(select(Patient))}

    planned_today = Counter(
        Reason(m.reason) for m in dry_run(session, now, tomorrow_start, rules, settings)
    )
    yesterday = list(
        session.scalars(
            select(Delivery).where(
                Delivery.patient_id.is_not(None),
                Delivery.updated_at >= yesterday_start,
                Delivery.updated_at < today_start,
                Delivery.state.in_(
                    (DeliveryState.SENT, DeliveryState.FAILED, DeliveryState.SKIPPED)
                ),
            )
        )
    )
    sent_yesterday = Counter(d.reason for d in yesterday if d.state is DeliveryState.SENT)
    not_delivered = [
        _note(patients[d.patient_id], f"{REASON_LABELS[d.reason]}：{_why_not_delivered(d)}")
        for d in yesterday
        if d.state is not DeliveryState.SENT and d.patient_id is not None
    ]

    # A forgotten patient is counted but never named: nothing to review about them.
    forgotten = {p.id for p in patients.values() if p.forgotten_at is not None}
    newly_lapsed = []
    for facts in load_facts(session, now):
        if (
            facts.id not in forgotten
            and is_lapsed(facts, now, rules)
            and not is_lapsed(facts, now - timedelta(days=1), rules)
            and not has_future_booking(facts, now)
        ):
            visit = last_visit(facts, now)
            assert visit is not None  # lapsed implies a visit
            detail = f"最終来院 {japanese_date(local_date(visit, tz))}"
            newly_lapsed.append(_note(patients[facts.id], detail))

    histories: dict[int, list[CadenceChange]] = {}
    for change in session.scalars(select(CadenceChange).order_by(CadenceChange.id)):
        histories.setdefault(change.patient_id, []).append(change)
    acute_for_review = []
    for patient_id, history in histories.items():
        since = acute_since(history, now)
        if since is None or patient_id in forgotten:
            continue
        days = (today - local_date(since, tz)).days
        if days > settings.digest.review_after_days:
            acute_for_review.append(_note(patients[patient_id], f"急性期 {days}日目"))

    # As `tayori status` counts it: LINE's last reading or our own count, whichever
    # is larger. Ahead: what the rules will send by LINE until the month ends.
    quota = line_quota(session, now, tz, settings.config.line.monthly_quota)
    line_ahead = sum(
        1
        for m in dry_run(session, now, month_end, rules, settings)
        if m.channel is ChannelName.LINE
    )
    if settings.digest.enabled and settings.digest.line_user_id:
        line_ahead += (month_end.date() - today).days  # the digest itself, once a day
    return Digest(
        day=today,
        planned_today=dict(planned_today),
        sent_yesterday=dict(sent_yesterday),
        not_delivered_yesterday=not_delivered,
        newly_lapsed=newly_lapsed,
        acute_for_review=sorted(acute_for_review, key=lambda n: n.patient),
        line_used=quota.used,
        line_forecast=quota.used + line_ahead,
        line_quota=quota.limit,
    )


def _why_not_delivered(delivery: Delivery) -> str:
    if delivery.state is DeliveryState.SKIPPED:
        return "使える連絡先（LINE・メール）がないため送れませんでした"
    return f"送信できませんでした（{delivery.last_error or '理由不明'}）"


def _note(patient: Patient, detail: str) -> PatientNote:
    return PatientNote(patient.external_id, patient.name, detail)


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

"""What `tayori status` shows: the outbox at a glance (read-only queries)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scheduler.core.domain import DeliveryState
from scheduler.settings import Settings
from scheduler.store.channel_state import Hold, LineQuotaView, active_holds, line_quota
from scheduler.store.models import Delivery, Patient


@dataclass(frozen=True)
class DeliveryLine:
    id: str
    patient: str
    reason: str
    channel: str
    at: datetime
    state: str
    error: str | None


@dataclass(frozen=True)
class Status:
    counts: dict[str, int]
    next_due: list[DeliveryLine]  # `error` says why a held message waits
    failures: list[DeliveryLine]
    holds: list[Hold]
    line_quota: LineQuotaView


def _lines(session: Session, query: object) -> list[DeliveryLine]:
    rows = session.execute(query).all()  # type: ignore[call-overload]
    return [
        DeliveryLine(
            id=d.id,
            patient=external_id or "-",  # the clinic's own digest has no patient
            reason=d.reason.value,
            channel=d.channel.value if d.channel else "-",
            at=d.send_after if d.state is DeliveryState.PLANNED else d.updated_at,
            state=d.state.value,
            error=d.last_error,
        )
        for d, external_id in rows
    ]


def status(session: Session, now: datetime, settings: Settings, limit: int = 10) -> Status:
    counts = {state.value: 0 for state in DeliveryState}
    for state, count in session.execute(
        select(Delivery.state, func.count()).group_by(Delivery.state)
    ):
        counts[state.value] = count
    joined = select(Delivery, Patient.external_id).outerjoin(
        Patient, Patient.id == Delivery.patient_id
    )
    next_due = _lines(
        session,
        joined.where(Delivery.state == DeliveryState.PLANNED)
        .order_by(Delivery.send_after, Delivery.id)
        .limit(limit),
    )
    failures = _lines(
        session,
        joined.where(Delivery.state == DeliveryState.FAILED)
        .order_by(Delivery.updated_at.desc())
        .limit(limit),
    )
    quota = line_quota(session, now, settings.timezone, settings.config.line.monthly_quota)
    holds = list(active_holds(session, now).values())
    return Status(counts, next_due, failures, holds, quota)

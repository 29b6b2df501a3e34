"""What `tayori status` shows: the outbox at a glance (read-only queries)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, String, func, select, type_coerce
from sqlalchemy.orm import Session

from scheduler.core.domain import DeliveryState
from scheduler.outbox.budget import LineQuotaView, line_quota
from scheduler.outbox.transitions import held_by_hand
from scheduler.settings import Settings
from scheduler.store.channel_state import Hold, active_holds
from scheduler.store.clinics import clinic_of
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
    held_by_hand: int = 0  # planned messages held at the desk (`tayori hold`)


def _lines(session: Session, query: Select[*tuple[Any, ...]]) -> list[DeliveryLine]:
    # Read as text: a row a newer version wrote (an unknown reason, say) is listed as
    # it is, not a report that fails.
    return [
        DeliveryLine(
            id=row.id,
            patient=row.external_id or "-",  # the clinic's own digest has no patient
            reason=row.reason,
            channel=row.channel or "-",
            at=row.send_after if row.state == DeliveryState.PLANNED else row.updated_at,
            state=row.state,
            error=row.last_error,
        )
        for row in session.execute(query)
    ]


def status(session: Session, now: datetime, settings: Settings, limit: int = 10) -> Status:
    counts = {state.value: 0 for state in DeliveryState}
    for state, count in session.execute(
        select(type_coerce(Delivery.state, String), func.count())
        .where(Delivery.clinic_id == clinic_of(session))
        .group_by(Delivery.state)
    ):
        counts[state] = count
    joined = (
        select(
            Delivery.id,
            Patient.external_id,
            type_coerce(Delivery.reason, String).label("reason"),
            type_coerce(Delivery.channel, String).label("channel"),
            type_coerce(Delivery.state, String).label("state"),
            Delivery.send_after,
            Delivery.updated_at,
            Delivery.last_error,
        )
        .outerjoin(Patient, Patient.id == Delivery.patient_id)
        .where(Delivery.clinic_id == clinic_of(session))
    )
    next_due = _lines(
        session,
        joined.where(Delivery.state == DeliveryState.PLANNED, ~held_by_hand())
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
    held = session.scalar(
        select(func.count()).where(
            Delivery.clinic_id == clinic_of(session),
            Delivery.state == DeliveryState.PLANNED,
            held_by_hand(),
        )
    )
    return Status(counts, next_due, failures, holds, quota, held or 0)


def delivery_counts(session: Session) -> list[tuple[str, str, str | None, int]]:
    """How many deliveries there are of each state, reason and channel (None: not
    chosen yet), read as text like `status`."""
    return [
        (state, reason, channel, count)
        for state, reason, channel, count in session.execute(
            select(
                type_coerce(Delivery.state, String),
                type_coerce(Delivery.reason, String),
                type_coerce(Delivery.channel, String),
                func.count(),
            )
            .where(Delivery.clinic_id == clinic_of(session))
            .group_by(Delivery.state, Delivery.reason, Delivery.channel)
        )
    ]


def oldest_due(session: Session, now: datetime) -> datetime | None:
    """When the delivery that has waited longest since it became due was due: one
    not sent yet (planned, or claimed and being sent). None: nothing is due."""
    return session.scalar(
        select(func.min(Delivery.send_after)).where(
            Delivery.clinic_id == clinic_of(session),
            Delivery.state.in_((DeliveryState.PLANNED, DeliveryState.SENDING)),
            Delivery.send_after <= now,
        )
    )

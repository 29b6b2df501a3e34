"""Channel holds and LINE quota readings, stored so every process (the worker,
`tayori status`, a second worker) sees the same picture."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, literal, select, update
from sqlalchemy.orm import Session

from scheduler.core.domain import ChannelName, DeliveryState, HoldCause, Reason
from scheduler.core.quota import month_bounds, remaining
from scheduler.store.db import upsert_insert
from scheduler.store.models import ChannelState, Delivery, UTCDateTime


@dataclass(frozen=True)
class Hold:
    channel: ChannelName
    cause: HoldCause
    reason: str
    since: datetime
    until: datetime | None


@dataclass(frozen=True)
class LineQuotaView:
    """LINE's quota this month as Tayori sees it."""

    limit: int | None  # None: the plan has no monthly limit
    used: int  # the larger of LINE's reading and our own count of sent messages
    planned: dict[Reason, int]  # LINE messages still planned for the rest of the month
    read_at: datetime | None  # when LINE was last asked; None: never (the limit is from config)

    @property
    def left(self) -> int | None:
        return remaining(self.limit, self.used)

    @property
    def forecast(self) -> int:
        return self.used + sum(self.planned.values())


def _set(session: Session, channel: ChannelName, values: dict[str, Any], **on_update: Any) -> None:
    """Change a channel's row, creating it if need be (two lanes may race to).
    `on_update` replaces some values when the row exists."""
    statement = upsert_insert(session, ChannelState).values(channel=channel, **values)
    session.execute(
        statement.on_conflict_do_update(index_elements=["channel"], set_={**values, **on_update})
    )


def active_holds(session: Session, now: datetime) -> dict[ChannelName, Hold]:
    holds: dict[ChannelName, Hold] = {}
    for row in session.scalars(select(ChannelState).where(ChannelState.held_because.is_not(None))):
        if row.held_until is not None and row.held_until <= now:
            continue
        assert row.held_because is not None and row.held_since is not None
        holds[row.channel] = Hold(
            row.channel, row.held_because, row.held_reason or "", row.held_since, row.held_until
        )
    return holds


def hold_channel(
    session: Session,
    channel: ChannelName,
    cause: HoldCause,
    reason: str,
    now: datetime,
    until: datetime | None,
) -> None:
    _set(
        session,
        channel,
        {"held_because": cause, "held_reason": reason, "held_since": now, "held_until": until},
        # A hold that is renewed keeps its start.
        held_since=func.coalesce(ChannelState.held_since, literal(now, UTCDateTime())),
    )


def release_holds(session: Session, cause: HoldCause) -> int:
    """Lift holds of one kind, e.g. credential holds when the worker starts with
    (possibly) corrected settings."""
    result = session.execute(
        update(ChannelState)
        .where(ChannelState.held_because == cause)
        .values(held_because=None, held_reason=None, held_since=None, held_until=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def record_quota_reading(session: Session, limit: int | None, used: int, now: datetime) -> None:
    _set(
        session,
        ChannelName.LINE,
        {"quota_limit": limit, "quota_used": used, "quota_read_at": now},
    )


def line_quota(
    session: Session, now: datetime, tz: ZoneInfo, configured_limit: int
) -> LineQuotaView:
    """Used and planned LINE messages this month (months in the clinic's time zone).

    LINE's own count lags a little behind, so the larger of its last reading (if
    taken this month) and our count of messages sent is what counts as used.
    """
    month_start, next_month = month_bounds(now, tz)
    sent = session.scalar(
        select(func.count()).where(
            Delivery.channel == ChannelName.LINE,
            Delivery.state == DeliveryState.SENT,
            Delivery.sent_at >= month_start,
        )
    )
    planned = Counter(
        {
            reason: count
            for reason, count in session.execute(
                select(Delivery.reason, func.count())
                .where(
                    Delivery.channel == ChannelName.LINE,
                    Delivery.state.in_((DeliveryState.PLANNED, DeliveryState.SENDING)),
                    Delivery.send_after < next_month,
                )
                .group_by(Delivery.reason)
            )
        }
    )
    sent = sent or 0
    row = session.get(ChannelState, ChannelName.LINE)
    if row is not None and row.quota_read_at is not None and row.quota_read_at >= month_start:
        used = max(row.quota_used or 0, sent)
        return LineQuotaView(row.quota_limit, used, dict(planned), row.quota_read_at)
    return LineQuotaView(configured_limit, sent, dict(planned), None)

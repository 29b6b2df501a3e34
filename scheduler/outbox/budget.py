"""The month's LINE budget, one row every worker reserves from.

A delivery about to be pushed takes a place in its month (`reserve`), recorded on the
delivery itself (`deliveries.quota_month`); the place becomes a used message when the
push is sent (or may have been), and is given back on every other path. The row is
locked while places are taken, so any number of workers together never exceed the
month's limit, and places go to the most important messages first
(scheduler.core.quota.grant). A worker that dies leaves its places on its deliveries;
whoever claims them again keeps them.

`used` is the larger of LINE's own count (read every few minutes) and ours: LINE's
lags a little, and it also counts what the clinic sends by other means.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, String, case, func, select, type_coerce, update
from sqlalchemy.orm import Session

from scheduler.core.domain import ChannelName, DeliveryState, Reason, member
from scheduler.core.quota import grant, month_bounds, month_of, remaining
from scheduler.store.clinics import clinic_of
from scheduler.store.db import upsert_insert
from scheduler.store.models import Delivery, LineQuotaMonth

_WAITING = (DeliveryState.PLANNED, DeliveryState.SENDING)


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


def open_month(session: Session, now: datetime, tz: ZoneInfo, configured_limit: int) -> str:
    """This month's budget row, made on first use (counting what was sent already);
    until LINE is read its limit follows `[line] monthly_quota`. Returns its month."""
    month = month_of(now, tz)
    start = month_bounds(now, tz)[0]
    sent = _sent_since(session, start)
    session.execute(
        upsert_insert(session, LineQuotaMonth)
        .values(
            clinic_id=clinic_of(session),
            month=month,
            quota_limit=configured_limit,
            used=sent,
            reserved=0,
            read_at=None,
        )
        .on_conflict_do_nothing(index_elements=["clinic_id", "month"])
    )
    session.execute(
        update(LineQuotaMonth)
        .where(*_month(session, month), LineQuotaMonth.read_at.is_(None))
        .values(quota_limit=configured_limit)
    )
    return month


def record_reading(
    session: Session, month: str, limit: int | None, used: int, now: datetime
) -> None:
    """LINE's own figures for the month: its limit, and its count if larger than ours."""
    session.execute(
        update(LineQuotaMonth)
        .where(*_month(session, month))
        .values(
            quota_limit=limit,
            used=case((LineQuotaMonth.used < used, used), else_=LineQuotaMonth.used),
            read_at=now,
        )
    )


def reserve(
    session: Session,
    month: str,
    month_ends: datetime,
    wanted: Mapping[Reason, int],
    claim_token: str,
) -> dict[Reason, int]:
    """Take places in `month` for `wanted` pushes (by reason), most important first,
    keeping room for the more important messages still waiting this month. The
    deliveries asking are those of `claim_token`; returns how many each reason got."""
    row = session.execute(
        select(LineQuotaMonth.quota_limit, LineQuotaMonth.used, LineQuotaMonth.reserved)
        .where(*_month(session, month))
        .with_for_update()  # PostgreSQL; SQLite's writer already holds the file
    ).one()
    left = None if row.quota_limit is None else row.quota_limit - row.used - row.reserved
    waiting = Counter(wanted)
    if left is not None:
        waiting.update(_waiting(session, month_ends, claim_token))
    granted = grant(left, waiting, wanted)
    taken = sum(granted.values())
    if taken:
        session.execute(
            update(LineQuotaMonth)
            .where(*_month(session, month))
            .values(reserved=LineQuotaMonth.reserved + taken)
        )
    return granted


def give_back(session: Session, places: Counter[str]) -> None:
    """Places whose pushes were not sent after all."""
    for month, count in places.items():
        if count:
            session.execute(
                update(LineQuotaMonth)
                .where(*_month(session, month))
                .values(reserved=LineQuotaMonth.reserved - count)
            )


def count_as_used(session: Session, places: Counter[str]) -> None:
    """Places whose pushes were sent, or may have been."""
    for month, count in places.items():
        if count:
            session.execute(
                update(LineQuotaMonth)
                .where(*_month(session, month))
                .values(reserved=LineQuotaMonth.reserved - count, used=LineQuotaMonth.used + count)
            )


def line_quota(
    session: Session, now: datetime, tz: ZoneInfo, configured_limit: int
) -> LineQuotaView:
    """Used and planned LINE messages this month (months in the clinic's time zone),
    read without writing (for `tayori status`, the plan and the digest)."""
    month_start, next_month = month_bounds(now, tz)
    planned: Counter[Reason] = Counter()
    for reason, count in session.execute(
        select(type_coerce(Delivery.reason, String), func.count())
        .where(
            Delivery.clinic_id == clinic_of(session),
            Delivery.channel == ChannelName.LINE,
            Delivery.state.in_(_WAITING),
            Delivery.send_after < next_month,
        )
        .group_by(Delivery.reason)
    ):
        known = member(Reason, reason)
        if known is not None:  # a row this version cannot read is not counted
            planned[known] = count
    row = session.get(LineQuotaMonth, (clinic_of(session), month_of(now, tz)))
    if row is None:
        return LineQuotaView(configured_limit, _sent_since(session, month_start), planned, None)
    return LineQuotaView(row.quota_limit, row.used, dict(planned), row.read_at)


def _month(session: Session, month: str) -> tuple[ColumnElement[bool], ...]:
    """The clinic's budget row for `month`."""
    return (LineQuotaMonth.clinic_id == clinic_of(session), LineQuotaMonth.month == month)


def _sent_since(session: Session, start: datetime) -> int:
    return (
        session.scalar(
            select(func.count()).where(
                Delivery.clinic_id == clinic_of(session),
                Delivery.channel == ChannelName.LINE,
                Delivery.state == DeliveryState.SENT,
                Delivery.sent_at >= start,
            )
        )
        or 0
    )


def _waiting(session: Session, month_ends: datetime, claim_token: str) -> Counter[Reason]:
    """LINE messages of the month that have no place yet, by reason, leaving out
    those of `claim_token` (the ones asking)."""
    waiting: Counter[Reason] = Counter()
    for reason, count in session.execute(
        select(type_coerce(Delivery.reason, String), func.count())
        .where(
            Delivery.clinic_id == clinic_of(session),
            Delivery.channel == ChannelName.LINE,
            Delivery.state.in_(_WAITING),
            Delivery.quota_month.is_(None),
            Delivery.send_after < month_ends,
            Delivery.claim_token.is_distinct_from(claim_token),
        )
        .group_by(Delivery.reason)
    ):
        known = member(Reason, reason)
        if known is not None:
            waiting[known] = count
    return waiting

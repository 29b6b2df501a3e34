"""Channel holds, stored so every process (the worker, `tayori status`, a second
worker) sees the same picture."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, literal, select, update
from sqlalchemy.orm import Session

from scheduler.core.domain import ChannelName, HoldCause
from scheduler.store.clinics import clinic_of
from scheduler.store.db import upsert_insert
from scheduler.store.models import ChannelState, UTCDateTime


@dataclass(frozen=True)
class Hold:
    channel: ChannelName
    cause: HoldCause
    reason: str
    since: datetime  # when this run of failures began
    until: datetime | None

    def active(self, now: datetime) -> bool:
        return self.until is None or now < self.until


def _set(session: Session, channel: ChannelName, values: dict[str, Any], **on_update: Any) -> None:
    """Change a channel's row, creating it if need be (two lanes may race to).
    `on_update` replaces some values when the row exists."""
    statement = upsert_insert(session, ChannelState).values(
        clinic_id=clinic_of(session), channel=channel, **values
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["clinic_id", "channel"], set_={**values, **on_update}
        )
    )


def active_holds(session: Session, now: datetime) -> dict[ChannelName, Hold]:
    return {channel: hold for channel, hold in holds(session).items() if hold.active(now)}


def holds(session: Session) -> dict[ChannelName, Hold]:
    """Every channel's hold, those whose time is up included: a channel that fails
    again soon after continues the same run (an unreachable server is tried less and
    less often) until a message gets through (`release_holds`)."""
    found: dict[ChannelName, Hold] = {}
    held = select(ChannelState).where(
        ChannelState.clinic_id == clinic_of(session), ChannelState.held_because.is_not(None)
    )
    for row in session.scalars(held):
        assert row.held_because is not None and row.held_since is not None
        found[row.channel] = Hold(
            row.channel, row.held_because, row.held_reason or "", row.held_since, row.held_until
        )
    return found


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
        # A hold renewed for the same cause keeps its start: the run goes on.
        held_since=case(
            (
                ChannelState.held_because == cause,
                func.coalesce(ChannelState.held_since, literal(now, UTCDateTime())),
            ),
            else_=literal(now, UTCDateTime()),
        ),
    )


def release_holds(
    session: Session, cause: HoldCause, channels: Iterable[ChannelName] | None = None
) -> int:
    """Lift holds of one kind, e.g. credential holds when the worker starts with
    (possibly) corrected settings, or an unreachable channel's once it sent again."""
    condition = and_(
        ChannelState.clinic_id == clinic_of(session), ChannelState.held_because == cause
    )
    if channels is not None:
        condition = and_(condition, ChannelState.channel.in_(list(channels)))
    result = session.execute(
        update(ChannelState)
        .where(condition)
        .values(held_because=None, held_reason=None, held_since=None, held_until=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]

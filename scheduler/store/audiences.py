"""A campaign occurrence's audience, asked of the database.

`scheduler.core.campaigns.audience` decides from each patient's facts; reading the
facts of a whole clinic to ask it costs seconds at 100,000 patients. This query asks
the same questions of the tables (the latest newsletter consent, a usable contact,
the phase in force at `now`, a visit since the window opened, no booking in the
excluded days), so the dry run need not read the facts of patients it has no other
reason to read. tests/integration/test_audiences.py holds the two to the same answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, case, exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from scheduler.core.campaigns import Campaign, Occurrence
from scheduler.core.domain import AppointmentStatus, ChannelName, ConsentKind
from scheduler.core.routing import choose_channel
from scheduler.core.window import at_local
from scheduler.store.clinics import clinic_of
from scheduler.store.facts import consent_now, contacts_of
from scheduler.store.models import Appointment, CadenceChange, Patient


@dataclass(frozen=True)
class Member:
    """A patient in an occurrence's audience, and the channel the worker would use."""

    patient_id: int
    channel: ChannelName | None


def audience_members(
    session: Session,
    campaign: Campaign,
    occurrence: Occurrence,
    now: datetime,
    tz: ZoneInfo,
    among: ColumnElement[bool],
) -> Iterator[Member]:
    """The patients of this clinic matching `among` who receive this occurrence (as
    `core.campaigns.audience` decides from their facts at `now`), in id order."""
    rules = campaign.audience
    conditions = [
        # `+ 0` keeps SQLite (which has no statistics here) from choosing the index by
        # clinic, which made it read every patient of the clinic to find a dry run's
        # batch of a thousand: five times the work of reading them by id.
        Patient.clinic_id + 0 == clinic_of(session),
        among,
        consent_now(ConsentKind.NEWSLETTER).is_(True),
        _has_a_usable_contact(),
    ]
    if rules.phases is not None:
        conditions.append(_phase_in_force(now).in_(sorted(rules.phases)))
    if rules.visited_within_days is not None:
        earliest = occurrence.day - timedelta(days=rules.visited_within_days)
        conditions.append(
            _an_appointment(
                AppointmentStatus.VISITED, Appointment.starts_at >= _start(earliest, tz)
            )
        )
    if rules.exclude_booked_within_days:
        last = occurrence.day + timedelta(days=rules.exclude_booked_within_days)
        within = and_(
            Appointment.starts_at >= _start(occurrence.day, tz),
            Appointment.starts_at < _start(last + timedelta(days=1), tz),
        )
        conditions.append(~_an_appointment(AppointmentStatus.BOOKED, within))
    rows = session.execute(
        select(
            Patient.id,
            Patient.preferred_channel,
            Patient.email,
            Patient.line_user_id,
            Patient.email_unusable_reason,
            Patient.line_unusable_reason,
        )
        .where(*conditions)
        .order_by(Patient.id)
    )
    for row in rows:
        yield Member(row.id, choose_channel(row.preferred_channel, contacts_of(row)))


def _start(day: date, tz: ZoneInfo) -> datetime:
    return at_local(day, time.min, tz)


def _has_a_usable_contact() -> ColumnElement[bool]:
    return or_(
        and_(
            Patient.line_user_id.is_not(None),
            Patient.line_user_id != "",
            Patient.line_unusable_reason.is_(None),
        ),
        and_(
            Patient.email.is_not(None),
            Patient.email != "",
            Patient.email_unusable_reason.is_(None),
        ),
    )


def _phase_in_force(now: datetime) -> ColumnElement[object]:
    """The phase of the latest change made up to `now`; before the first change, the
    starting point's; without a history, the patient row's (`cadence_in_force`)."""
    made, any_change = aliased(CadenceChange), aliased(CadenceChange)
    latest_made = (
        select(func.max(made.id))
        .where(made.patient_id == Patient.id, made.changed_at <= now)
        .correlate(Patient)  # the patient of the outermost query, two levels up
        .scalar_subquery()
    )
    first = (
        select(func.min(any_change.id))
        .where(any_change.patient_id == Patient.id)
        .correlate(Patient)
        .scalar_subquery()
    )
    phase_in_force = (
        select(CadenceChange.phase)
        .where(CadenceChange.id == func.coalesce(latest_made, first))
        .scalar_subquery()
    )
    has_history = exists().where(CadenceChange.patient_id == Patient.id)
    return case((has_history, phase_in_force), else_=Patient.phase)


def _an_appointment(status: AppointmentStatus, when: ColumnElement[bool]) -> ColumnElement[bool]:
    return exists().where(Appointment.patient_id == Patient.id, Appointment.status == status, when)

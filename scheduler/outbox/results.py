"""The results of the messages over a period (the desk's Results page and `tayori
report`): for each reason, template and channel, the messages sent and how many were
followed by a booking or a visit within 7 and 14 days; beside them, the same for the
patients who were due the same kind of message but could not be messaged.

Definitions (the page and README.md say the same):
- A message counts on the day it was sent (`sent_at`), in clinic time. The clinic's
  own digest is not a message to a patient and is left out.
- It was followed by a booking within N days when an appointment of the patient was
  recorded (`Appointment.created_at`: when Tayori learnt of it, by import) after the
  message and at most N days later, for a moment after the message (a visit before
  the message, imported late, is no answer to it). A booking cancelled later still
  counts: the patient did book. It was followed by a visit when an appointment marked
  `visited` started in that span.
- A message is counted in a window only once the window has ended (`observed`):
  a message of yesterday cannot yet say what happens within 7 days.
- Could not be messaged: the patient was due such a message by the rules but had not
  consented to reminders (the planner records those: scheduler/outbox/unconsented.py)
  or had no usable contact (the outbox row ended `skipped` for that). Counted at the
  moment the message would have gone, once it has come. Newsletters have no such
  group: their audience is the consenting patients with a contact.
- Booking-link presses (`/r/<token>`) are counted per message: presses, and messages
  pressed at least once.

The matching of messages to appointments is done here in Python (`outcome`, pure),
not in SQL: "N days after" is date arithmetic that SQLite and PostgreSQL spell
differently, and a clinic's period holds thousands of messages, not millions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import String, func, or_, select, type_coerce
from sqlalchemy.orm import Session

from scheduler.core.domain import AppointmentStatus, ChannelName, DeliveryState, Reason, member
from scheduler.core.routing import NO_USABLE_CONTACT
from scheduler.core.window import at_local
from scheduler.store.batches import batches
from scheduler.store.clinics import clinic_of
from scheduler.store.db import among
from scheduler.store.models import Appointment, Delivery, LinkClick, Patient, UnconsentedDue

WINDOWS = (7, 14)  # days after a message
DEFAULT_DAYS = 90  # the period shown unless another is chosen: the last 90 days


class Booking(NamedTuple):
    """What the results read of an appointment."""

    created_at: datetime
    starts_at: datetime
    status: AppointmentStatus


class Moment(NamedTuple):
    """A message sent, or one that would have gone: whose, and when."""

    patient_id: int
    at: datetime


@dataclass(frozen=True)
class Window:
    days: int
    observed: int  # messages whose window had ended by `now`
    responded: int  # of those, followed by a booking or a visit within it

    @property
    def rate(self) -> float | None:
        return self.responded / self.observed if self.observed else None


@dataclass(frozen=True)
class Outcome:
    count: int
    windows: tuple[Window, ...]

    def window(self, days: int) -> Window:
        return next(w for w in self.windows if w.days == days)


@dataclass(frozen=True)
class SentGroup:
    """The messages of one reason sent with one template by one channel."""

    template: str
    channel: ChannelName | None
    outcome: Outcome
    clicks: int  # presses of the booking link
    clicked: int  # messages whose link was pressed at least once


@dataclass(frozen=True)
class ReasonResults:
    reason: Reason
    groups: list[SentGroup]
    sent: Outcome  # every message of the reason sent
    unmessaged: Outcome
    no_consent: int
    no_contact: int

    @property
    def clicks(self) -> int:
        return sum(g.clicks for g in self.groups)

    @property
    def clicked(self) -> int:
        return sum(g.clicked for g in self.groups)


@dataclass(frozen=True)
class Results:
    first: date  # the period, clinic dates, both included
    last: date
    now: datetime
    reasons: list[ReasonResults]


def responded(moment: datetime, bookings: Iterable[Booking], days: int) -> bool:
    """Was a message at `moment` followed, within `days`, by a booking or a visit?"""
    end = moment + timedelta(days=days)
    return any(
        (moment < b.created_at <= end and b.starts_at > moment)
        or (b.status is AppointmentStatus.VISITED and moment < b.starts_at <= end)
        for b in bookings
    )


def outcome(
    moments: Sequence[Moment], bookings: Mapping[int, Sequence[Booking]], now: datetime
) -> Outcome:
    """The messages at `moments` and, per window, how many were followed by a
    booking or visit among those whose window has ended by `now` (pure)."""
    windows = []
    for days in WINDOWS:
        observed = [m for m in moments if m.at + timedelta(days=days) <= now]
        answered = sum(responded(m.at, bookings.get(m.patient_id, ()), days) for m in observed)
        windows.append(Window(days, len(observed), answered))
    return Outcome(len(moments), tuple(windows))


def default_period(today: date) -> tuple[date, date]:
    return today - timedelta(days=DEFAULT_DAYS - 1), today


def period_bounds(first: date, last: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC moments of the period's start and of the end of its last day."""
    return at_local(first, time.min, tz), at_local(last + timedelta(days=1), time.min, tz)


def results(session: Session, first: date, last: date, now: datetime, tz: ZoneInfo) -> Results:
    """The results of the session's clinic for the days `first` to `last`."""
    start, end = period_bounds(first, last, tz)
    clinic_id = clinic_of(session)
    sent_rows = session.execute(
        select(
            Delivery.id,
            Delivery.patient_id,
            type_coerce(Delivery.reason, String).label("reason"),
            Delivery.template,
            type_coerce(Delivery.channel, String).label("channel"),
            Delivery.sent_at,
        ).where(
            Delivery.clinic_id == clinic_id,
            Delivery.state == DeliveryState.SENT,
            Delivery.patient_id.is_not(None),
            Delivery.sent_at >= start,
            Delivery.sent_at < end,
        )
    ).all()
    clicks = dict(
        session.execute(
            select(LinkClick.delivery_id, func.count())
            .join(Delivery, Delivery.id == LinkClick.delivery_id)
            .where(
                LinkClick.clinic_id == clinic_id,
                Delivery.clinic_id == clinic_id,
                Delivery.state == DeliveryState.SENT,
                Delivery.sent_at >= start,
                Delivery.sent_at < end,
            )
            .group_by(LinkClick.delivery_id)
        ).all()
    )
    # Those who could not be messaged count once the moment they were due has come.
    until = min(end, now)
    no_contact_rows = session.execute(
        select(
            Delivery.patient_id,
            type_coerce(Delivery.reason, String).label("reason"),
            Delivery.send_after,
        ).where(
            Delivery.clinic_id == clinic_id,
            Delivery.state == DeliveryState.SKIPPED,
            Delivery.last_error == NO_USABLE_CONTACT,
            Delivery.patient_id.is_not(None),
            Delivery.send_after >= start,
            Delivery.send_after < until,
        )
    ).all()
    no_consent_rows = session.execute(
        select(
            UnconsentedDue.patient_id,
            type_coerce(UnconsentedDue.reason, String).label("reason"),
            UnconsentedDue.due_at,
        ).where(
            UnconsentedDue.clinic_id == clinic_id,
            UnconsentedDue.due_at >= start,
            UnconsentedDue.due_at < until,
        )
    ).all()

    patients = {row.patient_id for row in sent_rows}
    patients |= {row.patient_id for row in no_contact_rows}
    patients |= {row.patient_id for row in no_consent_rows}
    bookings = _bookings(session, sorted(p for p in patients if p is not None), start)

    sent: defaultdict[Reason, defaultdict[tuple[str, str | None], list[Moment]]]
    sent = defaultdict(lambda: defaultdict(list))
    group_clicks: defaultdict[tuple[Reason, str, str | None], list[int]] = defaultdict(list)
    for row in sent_rows:
        reason = member(Reason, row.reason)
        if reason is None or row.patient_id is None or row.sent_at is None:
            continue  # a reason this version does not know
        key = (row.template or "-", row.channel)
        sent[reason][key].append(Moment(row.patient_id, row.sent_at))
        group_clicks[reason, *key].append(clicks.get(row.id, 0))
    unmessaged: defaultdict[Reason, list[Moment]] = defaultdict(list)
    counts: defaultdict[tuple[Reason, str], int] = defaultdict(int)
    for why, rows in (("contact", no_contact_rows), ("consent", no_consent_rows)):
        for patient_id, reason_value, at in rows:
            reason = member(Reason, reason_value)
            if reason is None or patient_id is None:
                continue
            unmessaged[reason].append(Moment(patient_id, at))
            counts[reason, why] += 1

    reasons = []
    for reason in Reason:
        if reason not in sent and reason not in unmessaged:
            continue
        groups = [
            SentGroup(
                template=template,
                channel=member(ChannelName, channel),
                outcome=outcome(moments, bookings, now),
                clicks=sum(group_clicks[reason, template, channel]),
                clicked=sum(1 for n in group_clicks[reason, template, channel] if n),
            )
            for (template, channel), moments in sorted(
                sent[reason].items(), key=lambda item: (item[0][0], item[0][1] or "")
            )
        ]
        every = [m for moments in sent[reason].values() for m in moments]
        reasons.append(
            ReasonResults(
                reason=reason,
                groups=groups,
                sent=outcome(every, bookings, now),
                unmessaged=outcome(unmessaged[reason], bookings, now),
                no_consent=counts[reason, "consent"],
                no_contact=counts[reason, "contact"],
            )
        )
    return Results(first, last, now, reasons)


def _bookings(
    session: Session, patient_ids: Sequence[int], start: datetime
) -> dict[int, list[Booking]]:
    """The appointments of these patients that may answer a message of the period:
    recorded or starting after its start."""
    found: defaultdict[int, list[Booking]] = defaultdict(list)
    for chunk in batches(patient_ids):
        rows = session.execute(
            select(
                Appointment.patient_id,
                Appointment.created_at,
                Appointment.starts_at,
                type_coerce(Appointment.status, String).label("status"),
            )
            .join(Patient, Patient.id == Appointment.patient_id)
            .where(
                Patient.clinic_id == clinic_of(session),
                among(session, Appointment.patient_id, chunk),
                or_(Appointment.created_at > start, Appointment.starts_at > start),
            )
        )
        for patient_id, created_at, starts_at, status in rows:
            known = member(AppointmentStatus, status)
            if known is not None:
                found[patient_id].append(Booking(created_at, starts_at, known))
    return found

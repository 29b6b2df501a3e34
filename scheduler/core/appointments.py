"""Rules around single appointments (pure): the reminder the day before, and the
follow-up after a missed visit."""

from __future__ import annotations

from datetime import datetime, timedelta

from scheduler.core.config import Rules
from scheduler.core.domain import AppointmentStatus, Due, PatientFacts, Reason
from scheduler.core.window import at_local, local_date, next_opening


def appointment_reminders(facts: PatientFacts, now: datetime, rules: Rules) -> list[Due]:
    """A reminder for each booked appointment still ahead.

    One whose moment has passed before we knew of the booking is not created late
    (`may_create=False`), but a reminder already in the outbox still goes.
    """
    if not facts.reminders_opt_in:
        return []
    tz = rules.timezone
    messages = []
    for appointment in facts.appointments:
        if appointment.status is not AppointmentStatus.BOOKED or appointment.starts_at <= now:
            continue
        day = local_date(appointment.starts_at, tz) - timedelta(days=rules.reminder.days_before)
        moment = at_local(day, rules.reminder.send_at, tz)
        send_at = next_opening(max(moment, now), rules.window, tz)
        messages.append(
            Due(
                facts.id,
                Reason.APPOINTMENT_REMINDER,
                f"a{appointment.id}",
                send_at,
                appointment_id=appointment.id,
                may_create=moment >= now and send_at < appointment.starts_at,
            )
        )
    return messages


def no_show_follow_ups(facts: PatientFacts, now: datetime, rules: Rules) -> list[Due]:
    """A follow-up the day after a missed appointment, unless the patient has booked
    or visited since. A no-show recorded late still gets its follow-up on the same
    local day; older ones (history imports) get none."""
    if not facts.reminders_opt_in:
        return []
    tz = rules.timezone
    today = local_date(now, tz)
    messages = []
    for missed in facts.appointments:
        if missed.status is not AppointmentStatus.NO_SHOW or missed.starts_at > now:
            continue
        moved_on = any(
            a.starts_at > missed.starts_at
            and a.status in (AppointmentStatus.BOOKED, AppointmentStatus.VISITED)
            for a in facts.appointments
        )
        if moved_on:
            continue
        day = local_date(missed.starts_at, tz) + timedelta(days=rules.no_show.days_after)
        moment = at_local(day, rules.no_show.send_at, tz)
        send_at = next_opening(max(moment, now), rules.window, tz)
        messages.append(
            Due(
                facts.id,
                Reason.NO_SHOW_FOLLOW_UP,
                f"a{missed.id}",
                send_at,
                appointment_id=missed.id,
                may_create=day >= today,
            )
        )
    return messages

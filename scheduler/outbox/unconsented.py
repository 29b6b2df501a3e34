"""The reminders patients without consent would have had, recorded as the planner
plans them: the other half of the results' comparison (scheduler/outbox/results.py).

A patient who has not consented to reminders gets no message and so no outbox row;
nobody would know they were due one. The planner asks the same rules with consent
assumed and keeps what they say here, the way it keeps real messages in the outbox:
one row per idempotency key, recorded ahead with the moment it would have gone, and
removed while that moment is still ahead if it stops being due (the patient booked,
or consented and gets the real message). A row whose moment has passed is history
and stays. Newsletters are left out: their audience is chosen by consent itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Table, delete, select
from sqlalchemy.orm import Session

from scheduler.core.config import Rules
from scheduler.core.domain import Due, PatientFacts
from scheduler.core.rules import messages_due
from scheduler.store.batches import batches
from scheduler.store.bulk import insert_new
from scheduler.store.db import among
from scheduler.store.models import UnconsentedDue


def would_be_due(facts: Iterable[PatientFacts], now: datetime, rules: Rules) -> list[Due]:
    """What the rules would give the patients without reminder consent if they had
    it (pure)."""
    return [
        message
        for patient in facts
        if not patient.reminders_opt_in
        for message in messages_due(patient._replace(reminders_opt_in=True), now, rules)
        if message.may_create
    ]


def record_unconsented(
    session: Session, patient_ids: Iterable[int], would_be: Iterable[Due], now: datetime
) -> None:
    """Bring these patients' would-be reminders in line with what the rules say at
    `now` (`would_be_due`)."""
    due = {message.key: message for message in would_be}
    for chunk in batches(sorted(patient_ids)):
        # By patient alone (the ids are this clinic's): with the clinic named too,
        # SQLite reads by (clinic_id, due_at) instead, every row still ahead, once for
        # each batch of a plan of everyone.
        ahead = session.execute(
            select(UnconsentedDue.id, UnconsentedDue.idempotency_key).where(
                among(session, UnconsentedDue.patient_id, chunk),
                UnconsentedDue.due_at > now,
            )
        ).all()
        stale = [row.id for row in ahead if row.idempotency_key not in due]
        if stale:
            session.execute(delete(UnconsentedDue).where(UnconsentedDue.id.in_(stale)))
    rows = [
        {
            "idempotency_key": key,
            "patient_id": message.patient_id,
            "reason": message.reason,
            "due_at": message.send_at,
            "created_at": now,
        }
        for key, message in due.items()
    ]
    table: Table = UnconsentedDue.__table__  # type: ignore[assignment]
    insert_new(session, table, rows)

"""Which patients the next worker cycle plans.

A cycle plans only the patients whose facts changed since they were last planned,
and those whose `replan_at` has come (the next moment their due messages can change
with time alone, core/replan.py). It is kept in `replans`, a row for every patient
(`Replan`). A patient is marked by setting it to NULL, in the same transaction as
the change of their facts:

- facts written through the ORM (a patient, an appointment, a consent or cadence
  change added, changed or deleted in a session) mark their patient by themselves:
  the flush hook below sees every such write, whoever makes it;
- a statement that writes facts in bulk (`update(Patient)`, `insert(Appointment)`)
  calls `mark_for_planning` with the patients it touched.

A new patient is marked from the start: the flush hook gives a patient added
through the ORM a row with a NULL moment, and a bulk insert of patients calls
`add_replans`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, Table, event, exists, insert, inspect, or_, select, update
from sqlalchemy.orm import Session, UOWTransaction

from scheduler.store.batches import batches
from scheduler.store.bulk import DriverRows, update_by_key
from scheduler.store.clinics import clinic_of
from scheduler.store.models import (
    Appointment,
    CadenceChange,
    ConsentChange,
    Delivery,
    Patient,
    PlanningSettings,
    Replan,
)

# The `replan_at` of a patient whom only new facts can change: NULL already means
# "at the next cycle".
NEVER = datetime(9999, 12, 31, tzinfo=UTC)

_FACTS = (Appointment, ConsentChange, CadenceChange)
_PENDING = "tayori_facts_changed"


def mark_for_planning(session: Session, patient_ids: Iterable[int]) -> None:
    """Plan these patients at the next cycle: their facts changed."""
    # Imported here: store.db imports this module for its flush hook.
    from scheduler.store.db import among

    # On the connection: the flush hook below marks through here while flushing.
    connection = session.connection()
    table = Replan.__table__
    for chunk in batches(sorted(set(patient_ids))):
        connection.execute(_hold(select(Patient.id).where(among(session, Patient.id, chunk))))
        connection.execute(
            update(table).where(among(session, table.c.patient_id, chunk)).values(replan_at=None)  # type: ignore[arg-type]
        )


def add_replans(session: Session) -> None:
    """Give the clinic's patients who have no `replans` row one, marked: after
    patients were inserted in bulk."""
    missing = select(Patient.id, Patient.clinic_id).where(
        Patient.clinic_id == clinic_of(session),
        ~exists().where(Replan.patient_id == Patient.id),
    )
    session.execute(insert(Replan).from_select(["patient_id", "clinic_id"], missing))


def mark_patient_of(session: Session, delivery_id: str) -> None:
    """Plan this delivery's patient at the next cycle: the delivery is `planned` again
    (queued by hand, or back from an attempt: the rules may no longer want it, or
    want it elsewhere in a campaign's pacing), or was skipped (the patient's contacts
    or campaigns changed under it: it may go another way)."""
    patient_id = session.scalar(select(Delivery.patient_id).where(Delivery.id == delivery_id))
    if patient_id is not None:  # the digest has no patient
        mark_for_planning(session, [patient_id])


def mark_everyone(session: Session) -> int:
    """Plan every patient of the clinic at the next cycle (the settings may have
    changed)."""
    session.execute(_hold(select(Patient.id).where(Patient.clinic_id == clinic_of(session))))
    result = session.execute(
        update(Replan).where(Replan.clinic_id == clinic_of(session)).values(replan_at=None)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _hold(patients: Select[int]) -> Select[int]:
    """These patients' rows, locked (FOR NO KEY UPDATE) before their `replans` rows
    are marked: every change takes the two in this order (see "Why the locks"
    below), whether or not it writes the patient's row itself."""
    return patients.with_for_update(key_share=True)


def set_replan_at(session: Session, moments: dict[int, datetime | None]) -> None:
    """Record when each planned patient is due to be planned again (None: only when
    their facts change)."""
    table: Table = Replan.__table__  # type: ignore[assignment]
    values = DriverRows(session.get_bind().dialect, table, ("replan_at", "patient_id"))
    # In bulk (store/bulk.py): a plan of everyone writes a row for every patient.
    update_by_key(
        session,
        values,
        [values.row(NEVER if at is None else at, patient) for patient, at in moments.items()],
    )


def patients_to_plan(session: Session, now: datetime) -> list[int]:
    """The patients whose facts changed or whose moment to be planned has come,
    locked until the plan commits. On PostgreSQL a patient another transaction holds
    is skipped: another worker plans it, or its change is not committed yet (the
    next cycle plans it)."""
    due = or_(Replan.replan_at.is_(None), Replan.replan_at <= now)
    query = _of_clinic(session).where(due).order_by(Replan.patient_id)
    return list(session.scalars(query.with_for_update(key_share=True, skip_locked=True)))


def patient_ids(session: Session) -> list[int]:
    """Every patient, locked until the plan commits, waiting for those that other
    transactions hold: a plan of everyone (a campaign occurrence's first, which
    paces its whole audience at once) must leave no one out."""
    query = _of_clinic(session).order_by(Replan.patient_id)
    return list(session.scalars(query.with_for_update(key_share=True)))


def lock_for_planning(session: Session, patient_id: int) -> None:
    """Lock one patient's row as a cycle locks those it plans, until the transaction
    ends: a plan of one patient (the desk's) and a cycle never plan it at once."""
    session.execute(
        select(Replan.patient_id)
        .where(Replan.patient_id == patient_id)
        .with_for_update(key_share=True)
    )


def planned_beyond(session: Session, until: datetime) -> set[int]:
    """The patients planned last with a moment after `until`: nothing but new facts
    changes their due messages before it."""
    query = _of_clinic(session).where(Replan.replan_at.is_not(None), Replan.replan_at > until)
    return set(session.scalars(query))


def _of_clinic(session: Session) -> Select[int]:
    return select(Replan.patient_id).where(Replan.clinic_id == clinic_of(session))


# Why the locks (PostgreSQL; SQLite has one writer at a time, which gives the same):
# the patients' `replans` rows are locked before their facts are read, and a change
# of facts marks its patient by updating that row, so the change waits for the plan
# to commit and its mark is never overwritten by a moment computed from older facts.
# The plan locks no `patients` row: an import running meanwhile (its appointments
# and consent changes take key-share locks on their patients) neither blocks the
# plan nor deadlocks with it; only its marks wait. The plan's own outbox rows take
# key-share locks on their patients too (their foreign key), so a change that locks
# its patient's row before marking them locks it FOR NO KEY UPDATE, never FOR
# UPDATE, which would make the two wait for each other (web/unsubscribe.py). And
# every mark locks its patient's row before the `replans` row (`_hold`): a change
# that marked a patient (a consent change flushed) and then wrote their row, beside
# one that wrote the row and then marked (an import), would each wait for the other.


def last_fingerprint(session: Session) -> str | None:
    """The digest of the settings of the clinic's last plan (None: never planned)."""
    return session.scalar(
        select(PlanningSettings.fingerprint).where(PlanningSettings.clinic_id == clinic_of(session))
    )


def settings_changed(session: Session, fingerprint: str, now: datetime) -> bool:
    """Whether the settings differ from those of the last plan; records these."""
    clinic_id = clinic_of(session)
    if last_fingerprint(session) == fingerprint:
        return False
    # Imported here: store.db imports this module for its flush hook.
    from scheduler.store.db import upsert_insert

    values = {"fingerprint": fingerprint, "recorded_at": now}
    statement = upsert_insert(session, PlanningSettings).values(clinic_id=clinic_id, **values)
    session.execute(statement.on_conflict_do_update(index_elements=["clinic_id"], set_=values))
    return True


@event.listens_for(Session, "before_flush")
def _note_changed_facts(session: Session, _flush: UOWTransaction, _instances: Any) -> None:
    pending: list[object] = session.info.setdefault(_PENDING, [])
    for instance in (*session.new, *session.dirty, *session.deleted):
        if isinstance(instance, _FACTS):
            pending.append(instance)


@event.listens_for(Session, "after_flush")
def _mark_changed_facts(session: Session, _flush: UOWTransaction) -> None:
    # The session still lists what it flushed, with the history of each change and
    # the ids new rows got.
    new_patients = [instance for instance in session.new if isinstance(instance, Patient)]
    if new_patients:
        session.connection().execute(
            insert(Replan), [{"patient_id": p.id, "clinic_id": p.clinic_id} for p in new_patients]
        )
    changed = {
        instance.id
        for instance in session.dirty
        if isinstance(instance, Patient) and _changed_beyond_bookkeeping(instance)
    }
    pending: list[Any] = session.info.pop(_PENDING, [])
    changed |= {i.patient_id for i in pending if i.patient_id is not None}
    mark_for_planning(session, changed)


def _changed_beyond_bookkeeping(patient: Patient) -> bool:
    state = inspect(patient)
    return any(
        attribute.history.has_changes()
        for attribute in state.attrs
        if attribute.key != "updated_at"
    )

"""Many rows at once (store/bulk.py): the same outcome on both databases, whether a
transaction writes once or several times, as a plan does a batch at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Table, select

from scheduler.core.domain import Reason
from scheduler.runtime import Runtime
from scheduler.store.bulk import DriverRows, insert_new, update_by_key
from scheduler.store.db import transaction
from scheduler.store.models import Replan, UnconsentedDue
from tests.integration.clinic import add_patient

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
UNCONSENTED: Table = UnconsentedDue.__table__  # type: ignore[assignment]
REPLANS: Table = Replan.__table__  # type: ignore[assignment]


def _due(patient_id: int, key: str, hours: int) -> dict[str, object]:
    return {
        "idempotency_key": key,
        "patient_id": patient_id,
        "reason": Reason.CADENCE_NUDGE,
        "due_at": NOW + timedelta(hours=hours),
        "created_at": NOW,
    }


def test_an_insert_of_new_rows_leaves_a_row_whose_key_exists_as_it_is(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        patient = add_patient(session, NOW, "P1").id
        first = insert_new(session, UNCONSENTED, [_due(patient, "a", 1), _due(patient, "b", 1)])
        again = insert_new(session, UNCONSENTED, [_due(patient, "b", 5), _due(patient, "c", 5)])
    with runtime.sessions() as session:
        rows = session.execute(
            select(UnconsentedDue.idempotency_key, UnconsentedDue.due_at).order_by(
                UnconsentedDue.idempotency_key
            )
        ).all()
    assert (first, again) == (2, 1)
    assert rows == [
        ("a", NOW + timedelta(hours=1)),
        ("b", NOW + timedelta(hours=1)),
        ("c", NOW + timedelta(hours=5)),
    ]


def test_each_update_in_a_transaction_sets_only_its_own_rows(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        one, two = (add_patient(session, NOW, external_id).id for external_id in ("P1", "P2"))
        values = DriverRows(session.get_bind().dialect, REPLANS, ("replan_at", "patient_id"))
        changed = [
            update_by_key(session, values, [values.row(NOW + timedelta(days=1), one)]),
            update_by_key(session, values, [values.row(NOW + timedelta(days=2), two)]),
            update_by_key(session, values, [values.row(NOW + timedelta(days=3), one)]),
        ]
    with runtime.sessions() as session:
        moments = {
            patient_id: at
            for patient_id, at in session.execute(select(Replan.patient_id, Replan.replan_at))
        }
    assert changed == [1, 1, 1]
    assert moments == {one: NOW + timedelta(days=3), two: NOW + timedelta(days=2)}

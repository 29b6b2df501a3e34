"""Many rows at once (store/bulk.py): the same outcome on both databases, whether a
transaction writes once or several times, as a plan does a batch at a time."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Table, select, text

from scheduler.core.domain import Reason
from scheduler.runtime import Runtime, open_runtime
from scheduler.settings import Settings
from scheduler.store.bulk import DriverRows, insert_new, update_by_key
from scheduler.store.db import transaction
from scheduler.store.models import Replan, UnconsentedDue
from tests.conftest import empty_database
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


@pytest.mark.postgres
def test_rows_staged_on_postgresql_never_meet_a_table_of_the_same_name(
    request: pytest.FixtureRequest, repo_settings: Settings, tmp_path: Path
) -> None:
    """The temporary table is named in the session's own schema: with pg_temp last
    in the search path (as hardened servers set it), a table of the database
    called the same is not the one filled and read."""
    url = empty_database(request, "postgresql", tmp_path)
    runtime = open_runtime(replace(repo_settings, database_url=url))
    try:
        with transaction(runtime.sessions) as session:
            session.execute(text("CREATE TABLE staged_unconsented_dues (LIKE unconsented_dues)"))
        with transaction(runtime.sessions) as session:
            schema = session.execute(text("SELECT current_schema()")).scalar_one()
            session.execute(text(f'SET LOCAL search_path TO "{schema}", pg_temp'))
            patient = add_patient(session, NOW, "P1").id
            added = insert_new(session, UNCONSENTED, [_due(patient, "a", 1)])
        with runtime.sessions() as session:
            kept = session.scalars(select(UnconsentedDue.idempotency_key)).all()
            strays = session.execute(text("SELECT count(*) FROM staged_unconsented_dues"))
            assert (added, kept, strays.scalar_one()) == (1, ["a"], 0)
    finally:
        with transaction(runtime.sessions) as session:
            session.execute(text("DROP TABLE staged_unconsented_dues"))
        runtime.close()

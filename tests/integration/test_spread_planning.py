"""A plan or dry run of many patients, spread over processes (outbox/spread.py),
decides what the same work in one process decides."""

from __future__ import annotations

import logging
import os
import random
import re
import signal
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scheduler.commands import main
from scheduler.outbox import fork_server
from scheduler.outbox import spread as spread_module
from scheduler.outbox.planner import PlannedMessage, PlanResult, dry_run, plan
from scheduler.outbox.spread import spread
from scheduler.runtime import Runtime, open_runtime
from scheduler.settings import Spreading, load_settings
from scheduler.store.db import transaction
from scheduler.store.models import Delivery, Patient, Replan, UnconsentedDue
from tests.conftest import DATABASES, clinic_variables, empty_database
from tests.integration.csv_files import LINE_ID, appointments_csv, patients_csv

JST = ZoneInfo("Asia/Tokyo")
IMPORTED = datetime(2026, 11, 25, 7, 0, tzinfo=JST)
PATIENTS = 2500  # batches of a thousand: three
SPREAD = Spreading(processes=2, from_patients=0)
IN_ONE = Spreading(processes=1, from_patients=0)


def _write_clinic(directory: Path) -> tuple[Path, Path]:
    """A clinic of every kind of patient: phases, channels, consents, visits long
    ago and lately, no-shows, bookings ahead."""
    rng = random.Random(14)
    patients, appointments = [], []
    for number in range(PATIENTS):
        external_id = f"P{number:05d}"
        phase = rng.choice(["acute", "rehab", "maintenance", ""])
        email = f"p{number}@example.jp" if rng.random() < 0.6 else ""
        line = LINE_ID if not email or rng.random() < 0.5 else ""
        preferred = rng.choice(["line", "email"])
        reminders, newsletter = (rng.choice(["yes", "no"]) for _ in range(2))
        contacts = f"{email},{line},{preferred}"
        patients.append(f"{external_id},患者 {number},{phase},{contacts},{reminders},{newsletter}")
        for days_ago in rng.sample(range(1, 200), rng.randint(1, 3)):
            visit = IMPORTED - timedelta(days=days_ago, hours=rng.randint(0, 9))
            status = "no_show" if rng.random() < 0.05 else "visited"
            appointments.append(f"{external_id},{visit.isoformat()},{status}")
        if rng.random() < 0.3:
            ahead = IMPORTED + timedelta(days=rng.randint(0, 12), hours=rng.randint(2, 12))
            appointments.append(f"{external_id},{ahead.isoformat()},booked")
    return patients_csv(directory, *patients), appointments_csv(directory, *appointments)


def _imported_clinic(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Runtime:
    folder = tmp_path_factory.mktemp("clinic")
    env = clinic_variables(empty_database(request, request.param, folder), folder)
    patients, appointments = _write_clinic(folder)
    moment = IMPORTED.isoformat()
    with pytest.MonkeyPatch.context() as environment:
        for name, value in env.items():
            environment.setenv(name, value)
        assert main(["import", "patients", str(patients), "--now", moment]) == 0
        assert main(["import", "appointments", str(appointments), "--now", moment]) == 0
    return open_runtime(load_settings(env))


@pytest.fixture(scope="module", params=DATABASES)
def clinic(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runtime]:
    """The clinic, imported once for the module on each database: its tests only read
    it, or roll back what they wrote."""
    runtime = _imported_clinic(request, tmp_path_factory)
    yield runtime
    runtime.close()


@pytest.fixture(scope="module", params=DATABASES)
def planned_clinic(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runtime]:
    """The clinic after the worker's first plan: most patients are answered from
    the outbox by the dry run."""
    runtime = _imported_clinic(request, tmp_path_factory)
    with transaction(runtime.sessions) as session:
        plan(session, IMPORTED, runtime.settings.rules, runtime.settings)
    yield runtime
    runtime.close()


def _written(session: Session) -> list[tuple[object, ...]]:
    """What a plan wrote, but its rows' random ids and clock."""
    return [
        *sorted(
            (row.idempotency_key, row.state, row.channel, row.template, row.send_after)
            for row in session.scalars(select(Delivery))
        ),
        *sorted(
            (row.idempotency_key, row.due_at) for row in session.scalars(select(UnconsentedDue))
        ),
        *session.execute(
            select(Replan.patient_id, Replan.replan_at).order_by(Replan.patient_id)
        ).all(),
    ]


def _plan(
    runtime: Runtime, now: datetime, spreading: Spreading
) -> tuple[PlanResult, list[tuple[object, ...]]]:
    """What a plan wrote, rolled back."""
    settings = replace(runtime.settings, spreading=spreading)
    with runtime.sessions() as session, session.begin() as in_progress:
        result = plan(session, now, settings.rules, settings)
        written = _written(session)
        in_progress.rollback()
    return result, written


def _spread_batches(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What `spread` said of the batches it sent to other processes, then forgotten."""
    said = [r.getMessage() for r in caplog.records if r.name == "scheduler.outbox.spread"]
    caplog.clear()
    return said


@pytest.mark.parametrize(
    "now",
    [
        pytest.param(IMPORTED, id="an ordinary day"),
        # The year-end letter's first plan paces its whole audience at once.
        pytest.param(datetime(2026, 12, 1, 10, 30, tzinfo=JST), id="a campaign starting"),
    ],
)
def test_a_plan_spread_over_processes_writes_what_a_plan_in_one_writes(
    clinic: Runtime, now: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="scheduler.outbox.spread")
    in_one = _plan(clinic, now, IN_ONE)
    assert _spread_batches(caplog) == []
    assert _plan(clinic, now, SPREAD) == in_one
    [said] = _spread_batches(caplog)
    assert re.fullmatch(r"[1-3] batches of patients sent to 2 other processes", said)
    assert in_one[0].created > 500


def _foreseen(runtime: Runtime, spreading: Spreading) -> list[PlannedMessage]:
    now = datetime(2026, 11, 28, 7, 0, tzinfo=JST)  # the year-end letter starts in the week
    settings = replace(runtime.settings, spreading=spreading)
    with runtime.sessions() as session:
        return dry_run(session, now, now + timedelta(days=7), settings.rules, settings)


def test_a_dry_run_spread_over_processes_foresees_what_one_in_one_process_foresees(
    clinic: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="scheduler.outbox.spread")
    in_one = _foreseen(clinic, IN_ONE)
    assert _spread_batches(caplog) == []
    assert _foreseen(clinic, SPREAD) == in_one
    assert _spread_batches(caplog) != []
    assert {m.reason for m in in_one} >= {"newsletter", "appointment_reminder"}


def test_a_spread_dry_run_answers_a_planned_clinic_as_one_in_one_process(
    planned_clinic: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="scheduler.outbox.spread")
    in_one = _foreseen(planned_clinic, IN_ONE)
    assert _spread_batches(caplog) == []
    assert _foreseen(planned_clinic, SPREAD) == in_one
    assert _spread_batches(caplog) != []
    assert {m.reason for m in in_one} >= {"newsletter", "appointment_reminder"}


def _process_and_patients(session: Session, ids: Sequence[int]) -> tuple[int, int]:
    """Which process read these patients, and how many it found."""
    found = session.scalar(select(func.count()).where(Patient.id.in_(ids)))
    return os.getpid(), found or 0


def _groups(session: Session) -> list[list[int]]:
    ids = list(session.scalars(select(Patient.id).order_by(Patient.id)))
    return [ids[start : start + 1000] for start in range(0, len(ids), 1000)]


def _readers(clinic: Runtime, spreading: Spreading) -> list[int]:
    """The process that read each batch of the clinic's patients, in their order."""
    with clinic.sessions() as session:
        groups = _groups(session)
        with spread(session, _process_and_patients, groups, spreading) as answering:
            answers = list(answering)
    assert [found for _, found in answers] == [len(group) for group in groups]
    return [process for process, _ in answers]


def test_the_batches_of_many_patients_are_read_by_other_processes(clinic: Runtime) -> None:
    # This process reads at most the first of the three, while the others start.
    assert os.getpid() not in _readers(clinic, SPREAD)[1:]


@pytest.mark.parametrize(
    "spreading",
    [
        pytest.param(Spreading(processes=2, from_patients=PATIENTS + 1), id="few patients"),
        pytest.param(IN_ONE, id="one planning process"),
    ],
)
def test_the_batches_are_read_by_this_process_when_spreading_is_not_worth_it_or_is_off(
    clinic: Runtime, spreading: Spreading
) -> None:
    assert set(_readers(clinic, spreading)) == {os.getpid()}


@pytest.fixture
def fork_server_started(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Whether this process's fork server counts as started (the parameter). If not,
    the next spread is taken for the process's first (the server, running or not, is
    asked again), and the server for one slow to start."""
    started: bool = request.param
    monkeypatch.setattr(fork_server, "_started", started)
    monkeypatch.setattr(spread_module, "_FORK_SERVER_START_SECONDS", 60.0)
    return started


@pytest.mark.parametrize("fork_server_started", [False], indirect=True)
@pytest.mark.usefixtures("fork_server_started")
def test_the_first_spread_of_a_process_reads_its_share_here_while_the_fork_server_starts(
    clinic: Runtime,
) -> None:
    # Three batches, two other processes: this one's share is one in three.
    first, *rest = _readers(clinic, SPREAD)
    assert first == os.getpid()
    assert os.getpid() not in rest


def _dying_in_a_child(session: Session, ids: Sequence[int], parent: int) -> tuple[int, int]:
    """As `_process_and_patients`, but a child process is killed on its first batch."""
    if os.getpid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
    return _process_and_patients(session, ids)


@pytest.mark.parametrize(
    "fork_server_started",
    [pytest.param(True, id="later"), pytest.param(False, id="first")],
    indirect=True,
)
def test_a_planning_process_that_dies_leaves_its_work_to_this_one(
    clinic: Runtime, caplog: pytest.LogCaptureFixture, fork_server_started: bool
) -> None:
    with clinic.sessions() as session:
        groups = _groups(session)
        with spread(session, _dying_in_a_child, groups, SPREAD, os.getpid()) as answering:
            answers = list(answering)
    assert answers == [(os.getpid(), len(group)) for group in groups]
    # A process's first spread has read its share, the first batch, already.
    left = len(groups) if fork_server_started else len(groups) - 1
    assert f"{left} batch(es) of patients are planned in this process instead" in caplog.text

"""A worker cycle plans only the patients whose facts changed or whose moment has
come, and that gives the same outbox as planning every patient every cycle."""

from __future__ import annotations

import random
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from scheduler.commands import main
from scheduler.core.domain import (
    AppointmentStatus,
    ChannelName,
    ConsentKind,
    DeliveryState,
    Phase,
    Reason,
)
from scheduler.messages.templates import Renderer
from scheduler.outbox.planner import PlannedMessage, PlanResult, dry_run, plan, plan_patient
from scheduler.outbox.transitions import requeue
from scheduler.runtime import Runtime, open_runtime
from scheduler.settings import Settings
from scheduler.store.consent import record_consent
from scheduler.store.db import transaction
from scheduler.store.forget import forget_patient
from scheduler.store.models import Appointment, Delivery, Patient, Replan
from scheduler.store.patients import mark_contact_unusable, record_cadence
from scheduler.store.replan import mark_everyone, mark_for_planning, patients_to_plan
from tests.conftest import ROOT, empty_database
from tests.integration.clinic import LINE_ID, add_appointment, add_patient
from tests.integration.locks import wait_until_a_lock_is_awaited

JST = ZoneInfo("Asia/Tokyo")
START = datetime(2026, 11, 16, 0, 0, tzinfo=JST)  # a month around the year_end campaign
PATIENTS = 24
# Clinic-local times a day at which the cycles of the simulation run: around the
# send window's edges and the rules' moments (reminders 18:00, cadence 10:00).
CYCLE_TIMES = [(0, 5), (8, 59), (10, 0), (13, 17), (18, 0), (18, 1), (20, 0)]

Change = Callable[[Session, datetime], None]


def _runtime(settings: Settings, template: Path, folder: Path) -> Runtime:
    folder.mkdir()
    shutil.copy(template, folder / "tayori.db")
    return open_runtime(
        replace(
            settings,
            database_url=f"sqlite:///{folder / 'tayori.db'}",
            outbox_dir=folder / "outbox",
        )
    )


@pytest.fixture
def twins(
    request: pytest.FixtureRequest, repo_settings: Settings, tmp_path: Path
) -> Iterator[tuple[Runtime, Runtime]]:
    """Two clinics on SQLite with the shipped settings: one planned incrementally,
    one planned whole at every cycle."""
    template = request.getfixturevalue("sqlite_template")
    incremental = _runtime(repo_settings, template, tmp_path / "incremental")
    whole = _runtime(repo_settings, template, tmp_path / "whole")
    yield incremental, whole
    incremental.close()
    whole.close()


@pytest.fixture
def postgresql_runtime(
    request: pytest.FixtureRequest, repo_settings: Settings, tmp_path: Path
) -> Iterator[Runtime]:
    """The shipped settings on PostgreSQL alone, for the tests of its row locks."""
    url = empty_database(request, "postgresql", tmp_path)
    runtime = open_runtime(replace(repo_settings, database_url=url))
    yield runtime
    runtime.close()


def _clinic(session: Session, now: datetime, rng: random.Random) -> None:
    for number in range(PATIENTS):
        external_id = f"P{number}"
        add_patient(
            session,
            now,
            external_id,
            rng.choice([Phase.ACUTE, Phase.REHAB, Phase.MAINTENANCE]),
            email=f"p{number}@example.jp",
            line_user_id=LINE_ID if rng.random() < 0.5 else None,
            preferred=rng.choice([ChannelName.LINE, ChannelName.EMAIL]),
            reminders=rng.random() < 0.9,
            newsletter=rng.random() < 0.7,
        )
        for _ in range(rng.randint(1, 3)):
            visit = now - timedelta(days=rng.randint(1, 70), hours=rng.randint(0, 8))
            add_appointment(session, now, visit, AppointmentStatus.VISITED, external_id)
        if rng.random() < 0.3:
            ahead = now + timedelta(days=rng.randint(1, 10), hours=rng.randint(1, 8))
            add_appointment(session, now, ahead, AppointmentStatus.BOOKED, external_id)


def _a_change(rng: random.Random) -> Change:
    """One change of a patient's facts, as the desk, an import or LINE makes it."""
    external_id = f"P{rng.randrange(PATIENTS)}"
    kind = rng.choice(["book", "mark", "consent", "phase", "blocked"])
    days, hours, minutes = rng.randint(0, 12), rng.randint(0, 10), rng.choice([0, 30])
    status = rng.choice([AppointmentStatus.VISITED, AppointmentStatus.NO_SHOW])
    consent = rng.choice(list(ConsentKind)), rng.random() < 0.5
    phase = rng.choice(list(Phase))

    def change(session: Session, now: datetime) -> None:
        patient = session.scalars(select(Patient).filter_by(external_id=external_id)).one()
        if kind == "book":
            starts_at = (now + timedelta(days=days, hours=hours)).replace(minute=minutes)
            add_appointment(session, now, starts_at, AppointmentStatus.BOOKED, external_id)
        elif kind == "mark":
            # The clinic marks the latest appointment that has passed.
            passed = session.scalars(
                select(Appointment)
                .where(Appointment.patient_id == patient.id, Appointment.starts_at <= now)
                .order_by(Appointment.starts_at.desc())
            ).first()
            if passed is not None:
                passed.status = status
        elif kind == "consent":
            record_consent(session, patient.id, consent[0], consent[1], "desk", now)
        elif kind == "phase":
            record_cadence(
                session,
                patient,
                now,
                "desk",
                phase=phase,
                nudge_after_days=None,
                follow_up_days=None,
            )
        else:
            mark_contact_unusable(session, patient.id, ChannelName.LINE, "blocked", now, JST)

    return change


def _cycle(runtime: Runtime, now: datetime, *, everyone: bool) -> None:
    with transaction(runtime.sessions) as session:
        if everyone:
            mark_everyone(session)
        plan(session, now, runtime.settings.rules, runtime.settings)
    runtime.dispatcher.dispatch_due(now)


def _outbox(runtime: Runtime) -> list[tuple[object, ...]]:
    with runtime.sessions() as session:
        return sorted(
            (row.idempotency_key, row.state.value, row.send_after, row.channel, row.last_error)
            for row in session.scalars(select(Delivery))
        )


def test_planning_the_changed_patients_gives_the_outbox_of_planning_everyone(
    twins: tuple[Runtime, Runtime],
) -> None:
    incremental, whole = twins
    rng = random.Random(14)
    facts = random.Random(1400)
    for runtime in twins:
        with transaction(runtime.sessions) as session:
            _clinic(session, START, random.Random(7))
    compared = 0
    for day in range(31):
        for hour, minute in CYCLE_TIMES:
            now = (START + timedelta(days=day)).replace(hour=hour, minute=minute)
            changes = [_a_change(facts) for _ in range(rng.choice([0, 0, 1, 2]))]
            for runtime in twins:
                with transaction(runtime.sessions) as session:
                    for change in changes:
                        change(session, now)
            _cycle(incremental, now, everyone=False)
            _cycle(whole, now, everyone=True)
            assert _outbox(incremental) == _outbox(whole), f"at {now.isoformat()}"
            compared += 1
    assert compared == 31 * len(CYCLE_TIMES)
    assert any(row[1] == "sent" for row in _outbox(whole))


def _week_ahead(runtime: Runtime, now: datetime, *, everyone: bool) -> list[PlannedMessage]:
    with runtime.sessions() as session:
        settings = runtime.settings
        return dry_run(
            session, now, now + timedelta(days=7), settings.rules, settings, everyone=everyone
        )


def test_the_dry_run_answers_settled_patients_from_the_outbox_as_the_rules_would(
    twins: tuple[Runtime, Runtime],
) -> None:
    """Over a month of daily changes, the week ahead read partly from the outbox (the
    patients whose due messages cannot change within it) is the week the rules give
    for every patient."""
    runtime, _ = twins
    rng, facts = random.Random(15), random.Random(1500)
    with transaction(runtime.sessions) as session:
        _clinic(session, START, random.Random(8))
    settled_seen = 0
    for day in range(31):
        now = (START + timedelta(days=day)).replace(hour=13, minute=17)
        with transaction(runtime.sessions) as session:
            for change in [_a_change(facts) for _ in range(rng.choice([0, 1, 2, 3]))]:
                change(session, now)
        _cycle(runtime, now, everyone=False)
        with runtime.sessions() as session:
            settled_seen += len(
                session.scalars(
                    select(Replan.patient_id).where(Replan.replan_at > now + timedelta(days=7))
                ).all()
            )
        week = _week_ahead(runtime, now, everyone=False)
        assert week == _week_ahead(runtime, now, everyone=True), f"at {now.isoformat()}"
    assert settled_seen > 0, "no patient was answered from the outbox: nothing was shown"


NOW = datetime(2026, 11, 20, 12, 0, tzinfo=JST)


def _planned_patients(runtime: Runtime, now: datetime) -> list[int]:
    with runtime.sessions() as session:
        return patients_to_plan(session, now)


def _seen_a_week_ago(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        add_patient(session, NOW, "P1")
        add_appointment(session, NOW, NOW - timedelta(days=7), AppointmentStatus.VISITED)


def _plan(runtime: Runtime, now: datetime) -> None:
    with transaction(runtime.sessions) as session:
        plan(session, now, runtime.settings.rules, runtime.settings)


def test_a_new_patient_is_planned_at_the_next_cycle(runtime: Runtime) -> None:
    _seen_a_week_ago(runtime)
    assert len(_planned_patients(runtime, NOW)) == 1


def test_a_cycle_after_nothing_changed_plans_no_patient(runtime: Runtime) -> None:
    _seen_a_week_ago(runtime)
    _plan(runtime, NOW)
    assert _planned_patients(runtime, NOW + timedelta(minutes=1)) == []


def test_a_patient_whom_only_new_facts_can_change_is_not_planned_again(
    runtime: Runtime,
) -> None:
    with transaction(runtime.sessions) as session:
        add_patient(session, NOW, "P1", reminders=False)
    _plan(runtime, NOW)
    assert _planned_patients(runtime, NOW + timedelta(days=365)) == []


def test_a_new_appointment_marks_its_patient_for_the_next_cycle(runtime: Runtime) -> None:
    _seen_a_week_ago(runtime)
    _plan(runtime, NOW)
    with transaction(runtime.sessions) as session:
        add_appointment(session, NOW, NOW + timedelta(days=3), AppointmentStatus.BOOKED)
    assert len(_planned_patients(runtime, NOW + timedelta(minutes=1))) == 1


def test_a_blocked_contact_marks_its_patient_for_the_next_cycle(runtime: Runtime) -> None:
    _seen_a_week_ago(runtime)
    _plan(runtime, NOW)
    with transaction(runtime.sessions) as session:
        patient_id = session.scalars(select(Patient.id)).one()
        mark_contact_unusable(session, patient_id, ChannelName.LINE, "blocked", NOW, JST)
    assert _planned_patients(runtime, NOW + timedelta(minutes=1)) == [patient_id]


def test_a_change_of_the_rules_plans_every_patient_again(runtime: Runtime) -> None:
    _seen_a_week_ago(runtime)
    _plan(runtime, NOW)
    later = replace(runtime.settings.rules.cadence, lapsed_after_days=5)
    changed = replace(
        runtime.settings,
        config=replace(
            runtime.settings.config, rules=replace(runtime.settings.rules, cadence=later)
        ),
    )
    with transaction(runtime.sessions) as session:
        plan(session, NOW + timedelta(minutes=1), changed.rules, changed)
        follow_up = session.scalars(select(Delivery.state)).all()
    assert follow_up and set(follow_up) == {DeliveryState.WITHDRAWN}  # lapsed now


def test_replan_all_marks_every_patient(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    _seen_a_week_ago(runtime)
    _plan(runtime, NOW)
    assert main(["replan", "--all"]) == 0
    assert "1 patient(s) will be planned again" in capsys.readouterr().out
    assert len(_planned_patients(runtime, NOW + timedelta(minutes=1))) == 1


@pytest.mark.postgres
def test_a_change_made_while_a_plan_runs_is_planned_at_the_next_cycle(
    postgresql_runtime: Runtime,
) -> None:
    """The plan locks its patients' rows first: the change waits for it to commit,
    and its mark is not overwritten by a moment computed from the older facts."""
    runtime = postgresql_runtime
    _seen_a_week_ago(runtime)
    with transaction(runtime.sessions) as planning:
        assert patients_to_plan(planning, NOW)  # now locked
        change = threading.Thread(target=_mark_everyone, args=(runtime,))
        change.start()
        wait_until_a_lock_is_awaited(planning)
        plan(planning, NOW, runtime.settings.rules, runtime.settings)
    change.join(timeout=30)
    assert len(_planned_patients(runtime, NOW + timedelta(minutes=1))) == 1


@pytest.mark.postgres
def test_a_plan_of_one_patient_waits_for_the_cycle_that_plans_them(
    postgresql_runtime: Runtime,
) -> None:
    """The desk plans a patient at once; a cycle planning them meanwhile holds their
    row, so the desk's plan waits and then finds its messages written."""
    runtime = postgresql_runtime
    _seen_a_week_ago(runtime)
    with runtime.sessions() as session:
        patient_id = session.scalars(select(Patient.id)).one()
    results: list[PlanResult | None] = []
    with transaction(runtime.sessions) as planning:
        assert patients_to_plan(planning, NOW) == [patient_id]  # now locked
        desk = threading.Thread(target=_plan_one, args=(runtime, patient_id, results))
        desk.start()
        wait_until_a_lock_is_awaited(planning)
        cycle = plan(planning, NOW, runtime.settings.rules, runtime.settings)
    desk.join(timeout=30)
    assert cycle.created > 0
    assert results == [PlanResult(created=0, revived=0, withdrawn=0)]


def _plan_one(runtime: Runtime, patient_id: int, results: list[PlanResult | None]) -> None:
    settings = runtime.settings
    with transaction(runtime.sessions) as session:
        results.append(plan_patient(session, patient_id, NOW, settings.rules, settings))


@pytest.mark.postgres
def test_a_change_that_marks_then_writes_and_one_that_writes_then_marks_take_turns(
    postgresql_runtime: Runtime,
) -> None:
    """Forgetting a patient records a consent change (which marks them) before it
    erases their row; an import updates patients' rows before it marks them. Every
    mark locks the patient's row first, so the two take turns instead of each
    holding the row the other waits for."""
    runtime = postgresql_runtime
    _seen_a_week_ago(runtime)
    with runtime.sessions() as session:
        patient_id = session.scalars(select(Patient.id)).one()
    errors: list[Exception] = []
    with transaction(runtime.sessions) as importing:
        # The import's first step: the patient's row, changed (and so locked).
        importing.execute(update(Patient).values(name="山田 花"))
        forgetting = threading.Thread(target=_forget, args=(runtime, patient_id, errors))
        forgetting.start()
        wait_until_a_lock_is_awaited(importing)
        mark_for_planning(importing, [patient_id])  # the import's last step
    forgetting.join(timeout=30)
    assert errors == []
    with runtime.sessions() as session:
        forgotten = session.get_one(Patient, patient_id)
        assert forgotten.forgotten_at is not None
        assert session.get_one(Replan, patient_id).replan_at is None


def _forget(runtime: Runtime, patient_id: int, errors: list[Exception]) -> None:
    try:
        with transaction(runtime.sessions) as session:
            forget_patient(session, session.get_one(Patient, patient_id), NOW)
    except Exception as error:  # the test asserts there was none
        errors.append(error)


def _mark_everyone(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        mark_everyone(session)


def test_a_message_queued_again_by_hand_is_withdrawn_if_no_longer_due(runtime: Runtime) -> None:
    _seen_a_week_ago(runtime)
    with transaction(runtime.sessions) as session:
        add_appointment(session, NOW, NOW + timedelta(days=2), AppointmentStatus.BOOKED)
    _plan(runtime, NOW)
    reminder = _the(runtime, Reason.APPOINTMENT_REMINDER)
    with transaction(runtime.sessions) as session:  # it failed, as a refused push leaves it
        session.execute(
            update(Delivery)
            .where(Delivery.id == reminder)
            .values(state=DeliveryState.FAILED, last_error="refused")
        )
    after = NOW + timedelta(days=2, hours=1)  # the appointment has passed
    _plan(runtime, after)
    with transaction(runtime.sessions) as session:
        requeue(session, reminder, after, after)
    _plan(runtime, after + timedelta(minutes=1))
    assert _state(runtime, reminder) is DeliveryState.WITHDRAWN


def test_newsletters_a_template_problem_put_at_one_moment_are_spread_again(
    runtime: Runtime, tmp_path: Path
) -> None:
    before = datetime(2026, 11, 30, 12, 0, tzinfo=JST)
    with transaction(runtime.sessions) as session:
        for external_id in ("P1", "P2", "P3"):
            add_patient(session, before, external_id, reminders=False, newsletter=True)
            visit = before - timedelta(days=10)
            add_appointment(session, before, visit, AppointmentStatus.VISITED, external_id)
    _plan(runtime, before)
    start = datetime(2026, 12, 1, 10, 0, tzinfo=JST)  # the year-end letter's moment
    _plan(runtime, start)
    messages = tmp_path / "messages"
    shutil.copytree(ROOT / "messages", messages)
    (messages / "year_end" / "line.j2").write_text("{{ no_such_thing }}\n", encoding="utf-8")
    runtime.dispatcher.renderer = Renderer(messages)
    held = start + timedelta(days=3, hours=4)  # the pacing's five days: all three due
    runtime.dispatcher.dispatch_due(held)  # each waits for the template's mending: one moment
    _plan(runtime, held + timedelta(minutes=1))
    with runtime.sessions() as session:
        moments = session.scalars(
            select(Delivery.send_after).where(Delivery.reason == Reason.NEWSLETTER)
        ).all()
    assert len(moments) == len(set(moments)) == 3


def _the(runtime: Runtime, reason: Reason) -> str:
    with runtime.sessions() as session:
        return session.scalars(select(Delivery.id).where(Delivery.reason == reason)).one()


def _state(runtime: Runtime, delivery_id: str) -> DeliveryState:
    with runtime.sessions() as session:
        return session.scalars(select(Delivery.state).where(Delivery.id == delivery_id)).one()


@pytest.mark.postgres
def test_an_occurrences_first_plan_waits_for_a_patient_being_changed(
    postgresql_runtime: Runtime,
) -> None:
    """Its pacing spreads the whole audience once: no one may be left out."""
    runtime = postgresql_runtime
    before = datetime(2026, 11, 30, 12, 0, tzinfo=JST)
    with transaction(runtime.sessions) as session:
        for external_id in ("P1", "P2"):
            add_patient(session, before, external_id, reminders=False, newsletter=True)
            visit = before - timedelta(days=10)
            add_appointment(session, before, visit, AppointmentStatus.VISITED, external_id)
    _plan(runtime, before)
    with transaction(runtime.sessions) as changing:
        second = changing.scalars(select(Patient.id).filter_by(external_id="P2")).one()
        mark_for_planning(changing, [second])  # a change of P2, not yet committed
        start = datetime(2026, 12, 1, 10, 0, tzinfo=JST)  # the year-end letter's moment
        planning = threading.Thread(target=_plan, args=(runtime, start))
        planning.start()
        wait_until_a_lock_is_awaited(changing)
    planning.join(timeout=30)
    with runtime.sessions() as session:
        readers = session.scalars(
            select(Delivery.patient_id).where(Delivery.reason == Reason.NEWSLETTER)
        ).all()
    assert len(readers) == 2

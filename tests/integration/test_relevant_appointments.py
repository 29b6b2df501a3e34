"""The planner reads only the appointments the rules can still read: from them the
rules give what they give from every appointment, at `now` and at any later moment."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from scheduler.core.campaigns import audience, occurrences_between
from scheduler.core.closures import period_start
from scheduler.core.domain import AppointmentStatus, PatientFacts
from scheduler.core.replan import next_change
from scheduler.core.rules import messages_due
from scheduler.runtime import Runtime
from scheduler.store.db import transaction
from scheduler.store.facts import load_facts, load_facts_of
from scheduler.store.models import Patient
from tests.integration.clinic import add_appointment, add_patient

JST = ZoneInfo("Asia/Tokyo")
START = datetime(2026, 10, 1, 9, 0, tzinfo=JST)
LATER = [timedelta(0), timedelta(hours=5), timedelta(days=1), timedelta(days=4), timedelta(days=40)]


def _clinic(runtime: Runtime, rng: random.Random) -> None:
    with transaction(runtime.sessions) as session:
        for number in range(40):
            external_id = f"P{number}"
            add_patient(session, START, external_id, newsletter=True)
            moments = {
                START + timedelta(days=rng.randint(-200, 90), hours=rng.randint(0, 9))
                for _ in range(rng.randint(0, 8))
            }
            for moment in moments:
                status = rng.choice(list(AppointmentStatus))
                add_appointment(session, START, moment, status, external_id)


def _outcome(facts: list[PatientFacts], runtime: Runtime, now: datetime) -> object:
    rules, settings = runtime.settings.rules, runtime.settings
    tz = rules.timezone
    occurrences = occurrences_between(
        settings.campaigns,
        (now - timedelta(days=10)).date(),
        (now + timedelta(days=60)).date(),
        tz,
        lambda name, year: period_start(name, year, settings.config.closures),
    )
    campaigns = {campaign.id: campaign for campaign in settings.campaigns}
    return (
        [[messages_due(f, now + later, rules) for f in facts] for later in LATER],
        [next_change(f, now, rules) for f in facts],
        [audience(campaigns[o.campaign_id], o, facts, tz) for o in occurrences],
    )


def test_the_rules_give_the_same_from_the_relevant_appointments_as_from_all(
    runtime: Runtime,
) -> None:
    _clinic(runtime, random.Random(3))
    for day in range(0, 120, 9):
        now = START + timedelta(days=day, hours=day % 11)
        with runtime.sessions() as session:
            ids = list(session.scalars(select(Patient.id).order_by(Patient.id)))
            everything = load_facts(session, now)
            relevant = load_facts_of(session, now, ids)
        assert sum(len(f.appointments) for f in relevant) < sum(
            len(f.appointments) for f in everything
        )
        assert _outcome(relevant, runtime, now) == _outcome(everything, runtime, now), now


def _kept(facts: PatientFacts, now: datetime) -> tuple[int, ...]:
    """The appointments `_relevant_appointments` promises, worked out from them all."""
    visits = [
        a.starts_at
        for a in facts.appointments
        if a.status is AppointmentStatus.VISITED and a.starts_at <= now
    ]
    latest = max(visits, default=None)
    return tuple(
        a.id
        for a in facts.appointments
        if a.starts_at > now
        or a.status is AppointmentStatus.BOOKED
        or (latest is not None and a.starts_at >= latest)
        or (latest is None and a.status is AppointmentStatus.NO_SHOW)
    )


def test_the_relevant_appointments_are_the_latest_visit_what_follows_and_every_booking(
    runtime: Runtime,
) -> None:
    _clinic(runtime, random.Random(5))
    for day in range(-150, 120, 13):
        now = START + timedelta(days=day, hours=day % 7)
        with runtime.sessions() as session:
            ids = list(session.scalars(select(Patient.id).order_by(Patient.id)))
            everything = load_facts(session, now)
            relevant = load_facts_of(session, now, ids)
        assert [tuple(a.id for a in f.appointments) for f in relevant] == [
            _kept(f, now) for f in everything
        ], now

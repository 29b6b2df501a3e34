"""The audience query (scheduler/store/audiences.py) answers as the audience rule
(scheduler/core/campaigns.py `audience`) does from the facts, on SQLite and
PostgreSQL: over a population that walks every condition and its edges."""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import true
from sqlalchemy.orm import Session, sessionmaker

from scheduler.core.campaigns import Audience, Campaign, DateTrigger, Occurrence, Pacing, audience
from scheduler.core.domain import AppointmentStatus, ChannelName, ConsentKind, Phase
from scheduler.core.routing import choose_channel
from scheduler.store.audiences import audience_members
from scheduler.store.consent import ConsentSource, record_consent
from scheduler.store.db import transaction
from scheduler.store.facts import load_facts
from scheduler.store.models import Patient
from scheduler.store.patients import mark_contact_unusable, record_cadence
from tests.integration.clinic import add_appointment, add_patient

JST = ZoneInfo("Asia/Tokyo")
NOW = datetime(2026, 11, 25, 9, 30, tzinfo=JST)
DAY = date(2026, 12, 1)
OCCURRENCE = Occurrence("year_end", DAY, datetime.combine(DAY, time(10), tzinfo=JST))
PHASES = [Phase.ACUTE, Phase.REHAB, Phase.MAINTENANCE, None]
# Around each edge the rules draw: the visit window opens 180 days before the day,
# the excluded bookings run from the day to 28 days after it.
VISITS = [
    datetime.combine(DAY - timedelta(days=180), time.min, tzinfo=JST),
    datetime.combine(DAY - timedelta(days=180), time.min, tzinfo=JST) - timedelta(minutes=1),
    NOW - timedelta(days=3),
    NOW - timedelta(days=400),
    NOW + timedelta(days=2),  # marked visited ahead of its time: still a visit
]
BOOKINGS = [
    datetime.combine(DAY, time.min, tzinfo=JST),
    datetime.combine(DAY, time.min, tzinfo=JST) - timedelta(minutes=1),
    datetime.combine(DAY + timedelta(days=28), time(23, 59), tzinfo=JST),
    datetime.combine(DAY + timedelta(days=29), time.min, tzinfo=JST),
    NOW - timedelta(days=10),  # booked in the past, not marked
]
RULES = [
    Audience(),
    Audience(visited_within_days=180, exclude_booked_within_days=28),
    Audience(phases=frozenset({Phase.MAINTENANCE}), visited_within_days=None),
    Audience(phases=frozenset({Phase.ACUTE, Phase.REHAB}), exclude_booked_within_days=28),
]


def _population(sessions: sessionmaker[Session], count: int, seed: int) -> None:
    rng = random.Random(seed)
    with transaction(sessions) as session:
        for n in range(count):
            _a_patient(session, f"A{n:03d}", rng)


def _a_patient(session: Session, external_id: str, rng: random.Random) -> None:
    line = rng.choice(["U" + "ab" * 16, "", None])
    email = rng.choice([f"{external_id.lower()}@example.jp", "", None])
    patient = add_patient(
        session,
        NOW - timedelta(days=500),
        external_id,
        rng.choice(PHASES),
        email=email,
        line_user_id=line,
        preferred=rng.choice(list(ChannelName)),
        newsletter=rng.random() < 0.7,
    )
    if rng.random() < 0.2:
        record_consent(
            session, patient.id, ConsentKind.NEWSLETTER, rng.random() < 0.5, ConsentSource.CLI, NOW
        )
    for channel in ChannelName:
        if rng.random() < 0.15:
            mark_contact_unusable(session, patient.id, channel, "refused", NOW, JST)
    for _ in range(rng.choice([0, 0, 1, 2])):
        # A change already made, or one recorded for later (not in force at NOW).
        when = NOW + timedelta(days=rng.choice([-30, -1, 0, 1, 30]))
        record_cadence(
            session,
            patient,
            when,
            "cli",
            phase=rng.choice(PHASES),
            nudge_after_days=None,
            follow_up_days=None,
        )
    for starts_at in rng.sample(VISITS, rng.randint(0, 2)):
        add_appointment(session, NOW, starts_at, AppointmentStatus.VISITED, external_id)
    for starts_at in rng.sample(BOOKINGS, rng.randint(0, 2)):
        add_appointment(session, NOW, starts_at, AppointmentStatus.BOOKED, external_id)


@pytest.mark.parametrize(
    "rules", RULES, ids=["default", "no-bookings", "maintenance", "acute-rehab"]
)
def test_the_query_chooses_the_patients_the_rule_chooses(
    sessions: sessionmaker[Session], rules: Audience
) -> None:
    _population(sessions, 300, seed=16)
    campaign = Campaign("year_end", "year_end", DateTrigger(12, 1), rules, Pacing())
    with sessions() as session:
        facts = load_facts(session, NOW)
        expected = audience(campaign, OCCURRENCE, facts, JST)
        members = list(audience_members(session, campaign, OCCURRENCE, NOW, JST, true()))
    assert [m.patient_id for m in members] == expected
    assert 0 < len(expected) < len(facts)  # the population is not all in or all out
    channels = {f.id: choose_channel(f.preferred_channel, f.contacts) for f in facts}
    assert {m.patient_id: m.channel for m in members} == {i: channels[i] for i in expected}


def test_the_query_answers_only_for_the_patients_asked_about(
    sessions: sessionmaker[Session],
) -> None:
    _population(sessions, 40, seed=3)
    campaign = Campaign("year_end", "year_end", DateTrigger(12, 1), Audience(), Pacing())
    with sessions() as session:
        everyone = [
            m.patient_id for m in audience_members(session, campaign, OCCURRENCE, NOW, JST, true())
        ]
        some = set(everyone[::2])
        asked = list(
            audience_members(session, campaign, OCCURRENCE, NOW, JST, Patient.id.in_(some))
        )
    assert [m.patient_id for m in asked] == sorted(some)

"""Seasonal newsletters through the outbox: who gets them, when, how they are paced,
and that an occurrence is planned once however many cycles and restarts."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from scheduler.commands import main
from scheduler.core.campaigns import Pacing
from scheduler.core.domain import AppointmentStatus, DeliveryState, Reason
from scheduler.core.unsubscribe import read_unsubscribe_token
from scheduler.outbox.planner import plan
from scheduler.runtime import Runtime, open_runtime
from scheduler.store.db import transaction
from scheduler.store.models import Delivery, Patient
from scheduler.store.replan import mark_everyone
from tests.integration.channel_env import SECRET_KEY
from tests.integration.clinic import add_appointment, add_patient, visited
from tests.integration.dispatching import RecordingTransport, dispatcher_with

JST = ZoneInfo("Asia/Tokyo")
BEFORE = datetime(2026, 11, 20, 12, 0, tzinfo=JST)  # when the clinic's facts are known
YEAR_END = datetime(2026, 12, 1, 10, 0, tzinfo=JST)  # the year_end campaign's moment
DOYO_WINTER = datetime(2027, 1, 17, 10, 0, tzinfo=JST)  # 冬の土用の入り 2027


def _readers(runtime: Runtime, count: int, **patient: object) -> None:
    """Patients who want newsletters and visited a month before BEFORE."""
    with transaction(runtime.sessions) as session:
        for n in range(1, count + 1):
            external_id = f"N{n:03d}"
            add_patient(session, BEFORE, external_id, newsletter=True, **patient)  # type: ignore[arg-type]
            visited(session, BEFORE, days_ago=30, external_id=external_id)


def _plan(runtime: Runtime, now: datetime) -> None:
    with transaction(runtime.sessions) as session:
        plan(session, now, runtime.settings.rules, runtime.settings)


def _newsletters(runtime: Runtime) -> list[Delivery]:
    with runtime.sessions() as session:
        return list(session.scalars(select(Delivery).where(Delivery.reason == Reason.NEWSLETTER)))


def test_nothing_is_planned_before_the_campaigns_moment(runtime: Runtime) -> None:
    _readers(runtime, 3)
    _plan(runtime, YEAR_END - timedelta(minutes=1))
    assert _newsletters(runtime) == []


def test_year_end_newsletter_is_planned_for_every_reader_at_its_moment(runtime: Runtime) -> None:
    _readers(runtime, 3)
    _plan(runtime, YEAR_END)
    rows = _newsletters(runtime)
    assert (
        sorted(r.idempotency_key.split(":")[1:3] for r in rows) == [["year_end", "2026-12-01"]] * 3
    )
    assert {(r.campaign_id, r.template) for r in rows} == {("year_end", "year_end/line.j2")}


def test_patients_without_newsletter_consent_or_a_recent_visit_are_left_out(
    runtime: Runtime,
) -> None:
    with transaction(runtime.sessions) as session:
        add_patient(session, BEFORE, "NO_CONSENT", newsletter=False)
        visited(session, BEFORE, days_ago=30, external_id="NO_CONSENT")
        add_patient(session, BEFORE, "LONG_AGO", newsletter=True)
        visited(session, BEFORE, days_ago=200, external_id="LONG_AGO")
        add_patient(session, BEFORE, "READER", newsletter=True)
        visited(session, BEFORE, days_ago=30, external_id="READER")
    _plan(runtime, YEAR_END)
    with runtime.sessions() as session:
        names = {p.id: p.external_id for p in session.scalars(select(Patient))}
    assert [names[r.patient_id] for r in _newsletters(runtime) if r.patient_id] == ["READER"]


def test_a_patient_who_books_before_the_year_end_rush_is_not_told_to_book(
    runtime: Runtime,
) -> None:
    _readers(runtime, 2)
    _plan(runtime, YEAR_END)
    with transaction(runtime.sessions) as session:
        add_appointment(
            session, YEAR_END, datetime(2026, 12, 10, 10, 0, tzinfo=JST), external_id="N001"
        )
    _plan(runtime, YEAR_END + timedelta(minutes=1))
    states = sorted(r.state for r in _newsletters(runtime))
    assert states == [DeliveryState.PLANNED, DeliveryState.WITHDRAWN]


def test_an_occurrence_is_planned_once_across_cycles_and_a_restart(runtime: Runtime) -> None:
    _readers(runtime, 5)
    _plan(runtime, YEAR_END)
    first = {r.idempotency_key: r.send_after for r in _newsletters(runtime)}
    _plan(runtime, YEAR_END + timedelta(minutes=1))
    restarted = open_runtime(runtime.settings)
    try:
        _plan(restarted, YEAR_END + timedelta(hours=3))
    finally:
        restarted.close()
    assert {r.idempotency_key: r.send_after for r in _newsletters(runtime)} == first


def test_pacing_keeps_to_the_hourly_cap_inside_the_window_and_the_spread(
    runtime: Runtime,
) -> None:
    _readers(runtime, 100)
    _plan(runtime, DOYO_WINTER)
    moments = [r.send_after.astimezone(JST) for r in _newsletters(runtime)]
    per_hour = Counter(m.replace(minute=0, second=0, microsecond=0) for m in moments)
    assert len(moments) == 100
    assert max(per_hour.values()) <= 30
    assert all(9 <= m.hour < 20 for m in moments)
    assert min(moments) >= DOYO_WINTER
    assert max(moments).date() <= (DOYO_WINTER + timedelta(days=2)).date()  # spread: 3 days


def test_a_newsletter_on_the_day_of_a_cadence_nudge_waits_a_day(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        add_patient(session, BEFORE, "N001", newsletter=True)
        # Acute: nudged 3 days after this visit, on 1 December.
        visited(session, datetime(2026, 11, 28, 10, 0, tzinfo=JST), days_ago=0, external_id="N001")
    _plan(runtime, YEAR_END)
    with runtime.sessions() as session:
        rows = {r.reason: r for r in session.scalars(select(Delivery))}
    nudge, newsletter = rows[Reason.CADENCE_NUDGE], rows[Reason.NEWSLETTER]
    assert nudge.send_after.astimezone(JST).date() == YEAR_END.date()
    assert newsletter.send_after.astimezone(JST).date() == (YEAR_END + timedelta(days=1)).date()


def _paced(runtime: Runtime, pacing: Pacing) -> Runtime:
    campaigns = tuple(replace(c, pacing=pacing) for c in runtime.settings.campaigns)
    return replace(runtime, settings=replace(runtime.settings, campaigns=campaigns))


def _nudged_readers(runtime: Runtime, count: int, nudged_on: datetime) -> None:
    """Acute patients who want newsletters, each with a cadence nudge at `nudged_on`
    (an acute patient is nudged 3 days after a visit)."""
    with transaction(runtime.sessions) as session:
        for n in range(1, count + 1):
            external_id = f"A{n:03d}"
            add_patient(session, BEFORE, external_id, newsletter=True)
            last_visit = nudged_on - timedelta(days=3)
            visited(session, last_visit, days_ago=0, external_id=external_id)


def _per_clock_hour(rows: list[Delivery]) -> Counter[datetime]:
    return Counter(
        r.send_after.astimezone(JST).replace(minute=0, second=0, microsecond=0) for r in rows
    )


def test_newsletters_deferred_to_a_day_with_its_own_newsletters_keep_to_the_hourly_cap(
    runtime: Runtime,
) -> None:
    """Two days at 2 an hour hold 42 slots; each of the 30 patients is nudged on the
    first day, so the newsletters paced on it move into the second day, which has
    newsletters of its own."""
    runtime = _paced(runtime, Pacing(spread_days=2, per_hour=2))
    _nudged_readers(runtime, 30, DOYO_WINTER)
    _plan(runtime, DOYO_WINTER)
    rows = _newsletters(runtime)
    assert len(rows) == 30
    assert min(r.send_after for r in rows).astimezone(JST).date() > DOYO_WINTER.date()
    assert max(_per_clock_hour(rows).values()) <= 2
    assert len({r.send_after for r in rows}) == len(rows)


def test_a_deferred_newsletter_keeps_its_new_moment_in_later_cycles(runtime: Runtime) -> None:
    runtime = _paced(runtime, Pacing(spread_days=2, per_hour=2))
    _nudged_readers(runtime, 30, DOYO_WINTER)
    _plan(runtime, DOYO_WINTER)
    first = {r.idempotency_key: r.send_after for r in _newsletters(runtime)}
    for later in (DOYO_WINTER + timedelta(minutes=1), DOYO_WINTER + timedelta(hours=9)):
        _plan(runtime, later)
    assert {r.idempotency_key: r.send_after for r in _newsletters(runtime)} == first


def test_newsletters_planned_at_one_moment_are_parted_at_the_next_cycle(
    runtime: Runtime,
) -> None:
    """As an earlier planner left them when it deferred one onto another's slot."""
    runtime = _paced(runtime, Pacing(spread_days=1, per_hour=2))
    _readers(runtime, 3)
    _plan(runtime, YEAR_END)
    first, second, _ = sorted(_newsletters(runtime), key=lambda r: r.send_after)
    with transaction(runtime.sessions) as session:
        session.execute(
            update(Delivery).where(Delivery.id == second.id).values(send_after=first.send_after)
        )
        mark_everyone(session)  # as the upgrade from that version does
    _plan(runtime, YEAR_END + timedelta(minutes=1))
    assert len({r.send_after for r in _newsletters(runtime)}) == 3


def test_year_end_message_gives_the_closure_and_the_day_the_clinic_reopens(
    runtime: Runtime,
) -> None:
    _readers(runtime, 1)
    _plan(runtime, YEAR_END)
    transport = RecordingTransport()
    [row] = _newsletters(runtime)
    dispatcher_with(runtime, transport).dispatch_due(row.send_after)
    [message] = [m for m in transport.received if m.reason is Reason.NEWSLETTER]
    assert "12月29日（火）〜1月3日（日）" in message.text
    assert "1月4日（月）から" in message.text


def test_season_change_message_names_the_doyo(runtime: Runtime) -> None:
    _readers(runtime, 1)
    _plan(runtime, DOYO_WINTER)
    transport = RecordingTransport()
    [row] = _newsletters(runtime)
    dispatcher_with(runtime, transport).dispatch_due(row.send_after)
    [message] = [m for m in transport.received if m.reason is Reason.NEWSLETTER]
    assert "土用" in message.text
    assert row.state is DeliveryState.PLANNED  # the row as read before sending
    assert _newsletters(runtime)[0].state is DeliveryState.SENT


def test_a_newsletter_email_stops_newsletters_in_one_click(runtime: Runtime) -> None:
    settings = replace(runtime.settings, public_url="https://t.example", secret_key=SECRET_KEY)
    runtime = replace(runtime, settings=settings)
    _readers(runtime, 1, line_user_id=None, email="reader@example.jp")
    _plan(runtime, YEAR_END)
    transport = RecordingTransport()
    [row] = _newsletters(runtime)
    dispatcher_with(runtime, transport).dispatch_due(row.send_after)
    [message] = [m for m in transport.received if m.reason is Reason.NEWSLETTER]
    assert message.unsubscribe_url is not None
    token = message.unsubscribe_url.rsplit("/", 1)[1]
    assert read_unsubscribe_token(SECRET_KEY, token, "x")[2] == "newsletter"


def test_a_booked_patient_stays_in_a_campaign_that_does_not_exclude_them(
    runtime: Runtime,
) -> None:
    _readers(runtime, 1)
    with transaction(runtime.sessions) as session:
        add_appointment(
            session, BEFORE, DOYO_WINTER + timedelta(days=3), AppointmentStatus.BOOKED, "N001"
        )
    _plan(runtime, DOYO_WINTER)
    assert len(_newsletters(runtime)) == 1


def test_campaigns_command_lists_coming_occurrences_with_audience_and_channels(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    _readers(runtime, 2)
    _readers_by_email(runtime)
    assert main(["campaigns", "--year", "2027", "--json", "--now", BEFORE.isoformat()]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["campaign"], r["day"]) for r in rows] == [
        ("season_change", "2027-01-17"),
        ("season_change", "2027-04-17"),
        ("season_change", "2027-07-20"),
        ("season_change", "2027-10-21"),
        ("year_end", "2027-12-01"),
    ]
    # The last visits (21 October 2026) are within 180 days of April, not of July.
    audiences = [(r["audience"], r["line"], r["email"]) for r in rows]
    assert audiences[:3] == [(3, 2, 1), (3, 2, 1), (0, 0, 0)]
    assert rows[0]["line_left_that_month"] == 200


def _readers_by_email(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        add_patient(
            session, BEFORE, "MAIL", newsletter=True, line_user_id=None, email="m@example.jp"
        )
        visited(session, BEFORE, days_ago=30, external_id="MAIL")


def test_plan_shows_the_coming_newsletters(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    _readers(runtime, 2)
    now = (YEAR_END - timedelta(days=1)).isoformat()
    assert main(["plan", "--now", now, "--days", "7", "--json"]) == 0
    newsletters = [m for m in json.loads(capsys.readouterr().out) if m["reason"] == "newsletter"]
    assert [m["template"] for m in newsletters] == ["year_end/line.j2"] * 2
    assert all(m["send_at"] >= YEAR_END.isoformat() for m in newsletters)


def test_newsletters_beyond_the_spread_are_still_sent_not_withdrawn(runtime: Runtime) -> None:
    """At 2 an hour, one day's window holds 20: the rest go on the next open days,
    and those rows wait there after the occurrence's own spread has ended."""
    slow = tuple(
        replace(c, pacing=Pacing(spread_days=1, per_hour=2)) for c in runtime.settings.campaigns
    )
    runtime = replace(runtime, settings=replace(runtime.settings, campaigns=slow))
    _readers(runtime, 30)
    _plan(runtime, DOYO_WINTER)
    last = max(r.send_after for r in _newsletters(runtime))
    _plan(runtime, last - timedelta(minutes=1))
    assert last.astimezone(JST).date() > DOYO_WINTER.date()
    assert {r.state for r in _newsletters(runtime)} == {DeliveryState.PLANNED}


def test_plan_shows_newsletters_of_a_campaign_under_way(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    _readers(runtime, 5)
    _plan(runtime, YEAR_END)
    day_two = (YEAR_END + timedelta(days=1)).replace(hour=8)
    assert main(["plan", "--now", day_two.isoformat(), "--days", "7", "--json"]) == 0
    newsletters = [m for m in json.loads(capsys.readouterr().out) if m["reason"] == "newsletter"]
    assert len(newsletters) == len([r for r in _newsletters(runtime) if r.send_after >= day_two])
    assert newsletters


def test_every_newsletter_is_sent_by_the_end_of_the_spread_within_the_cap(
    runtime: Runtime,
) -> None:
    _readers(runtime, 60)
    transport = RecordingTransport()
    dispatcher = dispatcher_with(runtime, transport)
    sent_per_hour: Counter[datetime] = Counter()
    # The worker's cycles through the send windows of the spread, every half hour:
    # any 60 minutes of the pacing grid hold at most the cap.
    cycles = [
        (DOYO_WINTER + timedelta(days=day)).replace(hour=hour, minute=minute)
        for day in range(3)
        for hour in range(9, 20)
        for minute in (0, 30)
    ]
    for moment in cycles:
        _plan(runtime, moment)
        before = len(transport.received)
        dispatcher.dispatch_due(moment)
        sent_per_hour[moment.replace(minute=0)] += len(transport.received) - before
    assert {r.state for r in _newsletters(runtime)} == {DeliveryState.SENT}
    assert max(sent_per_hour.values()) <= 30

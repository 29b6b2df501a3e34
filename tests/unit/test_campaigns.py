"""Seasonal campaigns: their config, when they occur, who receives them, and pacing."""

from __future__ import annotations

import copy
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from scheduler.core.campaigns import (
    Audience,
    Campaign,
    ClosureTrigger,
    DateTrigger,
    Displaced,
    Occurrence,
    Pacing,
    SeasonTrigger,
    audience,
    free_slots,
    live_occurrences,
    occurrences,
    occurrences_between,
    pace,
    sending_days,
)
from scheduler.core.config import ConfigError, SendWindow
from scheduler.core.domain import AppointmentFact, AppointmentStatus, PatientFacts, Phase
from scheduler.core.seasons import SeasonalMoment, date_of, seasonal_dates
from scheduler.settings.campaigns import parse_campaigns
from tests.unit.facts import JST, appointment, patient

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "campaigns.toml"
DOYO = (
    SeasonalMoment.DOYO_WINTER,
    SeasonalMoment.DOYO_SPRING,
    SeasonalMoment.DOYO_SUMMER,
    SeasonalMoment.DOYO_AUTUMN,
)
WINDOW = SendWindow()  # 09:00–20:00


def no_closures(name: str, year: int) -> date | None:
    return None


def campaign(
    trigger: SeasonTrigger | DateTrigger | ClosureTrigger,
    audience: Audience | None = None,
    pacing: Pacing | None = None,
    enabled: bool = True,
) -> Campaign:
    return Campaign(
        "c", "c", trigger, audience or Audience(), pacing or Pacing(spread_days=3), enabled
    )


def days_of(found: list[Occurrence]) -> list[date]:
    return [o.day for o in found]


# --- config/campaigns.toml ----------------------------------------------------------


def document(**changes: Any) -> dict[str, Any]:
    """Two valid campaigns; `changes` maps 'n.table.key' (n from 1) to a new value."""
    doc: dict[str, Any] = {
        "campaign": [
            {
                "id": "season_change",
                "trigger": {"season": ["doyo_winter"], "at": "10:00"},
                "audience": {"visited_within_days": 180},
                "pacing": {"spread_days": 3, "per_hour": 30},
            },
            {
                "id": "year_end",
                "trigger": {"month_day": "12-01"},
                "pacing": {"spread_days": 5},
            },
        ]
    }
    doc = copy.deepcopy(doc)
    for path, value in changes.items():
        number, *keys = path.split(".")
        table = doc["campaign"][int(number) - 1]
        for key in keys[:-1]:
            table = table.setdefault(key, {})
        table[keys[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        pytest.param(
            document(**{"2.trigger.month_day": "12-32"}),
            "t.toml: campaign[2].trigger.month_day: expected MM-DD, got '12-32'",
            id="month-day-out-of-range",
        ),
        pytest.param(
            document(**{"2.trigger.month_day": "02-30"}),
            "t.toml: campaign[2].trigger.month_day: expected MM-DD, got '02-30'",
            id="month-day-not-a-date",
        ),
        pytest.param(
            document(**{"2.trigger.month_day": "12/01"}),
            "t.toml: campaign[2].trigger.month_day: expected MM-DD, got '12/01'",
            id="month-day-format",
        ),
        pytest.param(
            document(**{"1.trigger.at": "25:00"}),
            "t.toml: campaign[1].trigger.at: expected a time of day",
            id="bad-time",
        ),
        pytest.param(
            document(**{"1.trigger.season": ["doyo_wintr"]}),
            "t.toml: campaign[1].trigger.season: expected a list of one or more of "
            "doyo_winter, risshun",
            id="unknown-moment",
        ),
        pytest.param(
            document(**{"1.trigger.season": "doyo_winter"}),
            "t.toml: campaign[1].trigger.season: expected a list",
            id="moment-not-a-list",
        ),
        pytest.param(
            document(**{"1.trigger.season": ["ritto", "ritto"]}),
            "t.toml: campaign[1].trigger.season: expected each name once",
            id="moment-twice",
        ),
        pytest.param(
            document(**{"1.trigger.month_day": "12-01"}),
            "t.toml: campaign[1].trigger: expected exactly one of 'season', 'month_day' or "
            "'closure', got 'season and month_day'",
            id="two-trigger-kinds",
        ),
        pytest.param(
            document(**{"2.trigger": {"at": "10:00"}}),
            "t.toml: campaign[2].trigger: expected exactly one of",
            id="no-trigger-kind",
        ),
        pytest.param(
            document(**{"2.trigger.offset_days": 3}),
            "t.toml: campaign[2].trigger.offset_days: expected no offset with month_day",
            id="offset-with-month-day",
        ),
        pytest.param(
            document(**{"1.trigger.offset_days": 400}),
            "t.toml: campaign[1].trigger.offset_days: expected a whole number from -365 to 365",
            id="offset-too-far",
        ),
        pytest.param(
            document(**{"1.trigger": {"closure": ""}}),
            "t.toml: campaign[1].trigger.closure: expected the name of a closure period",
            id="empty-closure-name",
        ),
        pytest.param(
            document(**{"1.trigger.offset": 3}),
            "t.toml: campaign[1].trigger: unknown key 'offset'",
            id="unknown-trigger-key",
        ),
        pytest.param(
            document(**{"1.colour": "red"}),
            "t.toml: campaign[1]: unknown key 'colour'",
            id="unknown-campaign-key",
        ),
        pytest.param(
            document(**{"2.id": "season_change"}),
            "t.toml: campaign[2].id: expected an id no other campaign uses, got 'season_change'",
            id="duplicate-id",
        ),
        pytest.param(
            document(**{"1.id": "Season Change"}),
            "t.toml: campaign[1].id: expected an id of lower-case letters, digits and _",
            id="bad-id",
        ),
        pytest.param(
            {"campaign": [{"trigger": {"month_day": "12-01"}}]},
            "t.toml: campaign[1].id: expected an id of lower-case letters, digits and _, got None",
            id="missing-id",
        ),
        pytest.param(
            document(**{"1.template": "../secrets"}),
            "t.toml: campaign[1].template: expected a folder name in messages/",
            id="template-path",
        ),
        pytest.param(
            document(**{"1.enabled": "yes"}),
            "t.toml: campaign[1].enabled: expected true or false, got 'yes'",
            id="enabled-not-boolean",
        ),
        pytest.param(
            document(**{"1.pacing.per_hour": 0}),
            "t.toml: campaign[1].pacing.per_hour: expected a whole number from 1 to 3600, got 0",
            id="per-hour-zero",
        ),
        pytest.param(
            document(**{"1.pacing.per_hour": "30"}),
            "t.toml: campaign[1].pacing.per_hour: expected a whole number from 1 to 3600, got '30'",
            id="per-hour-text",
        ),
        pytest.param(
            document(**{"2.pacing.spread_days": 0}),
            "t.toml: campaign[2].pacing.spread_days: expected a whole number from 1 to 30, got 0",
            id="spread-days-zero",
        ),
        pytest.param(
            document(**{"1.audience.phases": ["acute", "chronic"]}),
            "t.toml: campaign[1].audience.phases: expected a list of one or more of "
            "acute, rehab, maintenance, got 'chronic'",
            id="unknown-phase",
        ),
        pytest.param(
            document(**{"1.audience.visited_within_days": -1}),
            "t.toml: campaign[1].audience.visited_within_days: expected a whole number from 0",
            id="visited-negative",
        ),
        pytest.param(
            document(**{"1.audience": "everyone"}),
            "t.toml: campaign[1].audience: expected a table, got 'everyone'",
            id="audience-not-a-table",
        ),
        pytest.param(
            {"campaign": {"id": "x"}},
            "t.toml: campaign: expected tables written as [[campaign]]",
            id="campaign-not-an-array",
        ),
        pytest.param(
            {"campaigns": []},
            "t.toml: top level: unknown key 'campaigns'",
            id="unknown-top-level-key",
        ),
    ],
)
def test_a_malformed_campaign_names_the_file_and_key(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_campaigns(doc, "t.toml")
    assert str(raised.value).startswith(message)


def test_an_empty_file_has_no_campaigns() -> None:
    assert parse_campaigns({}, "t.toml") == ()


def test_left_out_keys_take_the_defaults_and_the_template_is_the_id() -> None:
    (parsed,) = parse_campaigns({"campaign": [{"id": "x", "trigger": {"closure": "夏季休業"}}]}, "")
    assert parsed == Campaign(
        "x", "x", ClosureTrigger("夏季休業", 0, time(10, 0)), Audience(), Pacing(), True
    )


def test_visited_within_zero_days_means_no_visit_needed() -> None:
    (parsed, _) = parse_campaigns(document(**{"1.audience.visited_within_days": 0}), "")
    assert parsed.audience.visited_within_days is None


def test_the_shipped_campaigns_file_parses_to_the_documented_defaults() -> None:
    with SHIPPED.open("rb") as f:
        parsed = parse_campaigns(tomllib.load(f), str(SHIPPED))
    assert parsed == (
        Campaign(
            id="season_change",
            template="season_change",
            trigger=SeasonTrigger(DOYO, 0, time(10, 0)),
            audience=Audience(None, 180, 0),
            pacing=Pacing(spread_days=3, per_hour=30),
        ),
        Campaign(
            id="year_end",
            template="year_end",
            trigger=DateTrigger(12, 1, time(10, 0)),
            audience=Audience(None, 180, 28),
            pacing=Pacing(spread_days=5, per_hour=30),
        ),
    )


def test_every_shipped_campaign_has_its_templates() -> None:
    with SHIPPED.open("rb") as f:
        parsed = parse_campaigns(tomllib.load(f), str(SHIPPED))
    messages = SHIPPED.parents[1] / "messages"
    for c in parsed:
        assert (messages / c.template / "line.j2").is_file()
        assert (messages / c.template / "email.j2").is_file()


# --- When a campaign occurs ---------------------------------------------------------


@pytest.mark.parametrize("year", [2026, 2028], ids=["2026", "leap-2028"])
def test_season_trigger_occurs_on_each_doyo_at_ten(year: int) -> None:
    dates = seasonal_dates(year, JST)
    found = occurrences(campaign(SeasonTrigger(DOYO)), year, JST, no_closures)
    assert [(o.day, o.moment, o.anchor) for o in found] == [(dates[m], m, dates[m]) for m in DOYO]
    assert [o.starts_at for o in found] == [
        datetime.combine(dates[m], time(10, 0), tzinfo=JST).astimezone(UTC) for m in DOYO
    ]
    assert all(o.starts_at.tzinfo is UTC for o in found)


def test_an_occurrence_belongs_to_the_year_of_its_own_day() -> None:
    # 20 days before 冬の土用の入り (about 17 January) is late December of the year before.
    trigger = SeasonTrigger((SeasonalMoment.DOYO_WINTER,), offset_days=-20)
    in_2026 = occurrences(campaign(trigger), 2026, JST, no_closures)
    anchor_2027 = date_of(SeasonalMoment.DOYO_WINTER, 2027, JST)
    assert days_of(in_2026) == [anchor_2027 - timedelta(days=20)]
    assert in_2026[0].day.month == 12
    assert in_2026[0].anchor == anchor_2027
    anchor_2026 = date_of(SeasonalMoment.DOYO_WINTER, 2026, JST)
    in_2025 = occurrences(campaign(trigger), 2025, JST, no_closures)
    assert days_of(in_2025) == [anchor_2026 - timedelta(days=20)]


@pytest.mark.parametrize("year", [2025, 2026, 2027, 2028, 2100])
def test_month_day_trigger_occurs_every_year(year: int) -> None:
    found = occurrences(campaign(DateTrigger(12, 1)), year, JST, no_closures)
    assert found == [Occurrence("c", date(year, 12, 1), datetime(year, 12, 1, 1, 0, tzinfo=UTC))]
    assert found[0].key == f"c:{year}-12-01"


@pytest.mark.parametrize(
    ("year", "occurs"),
    [(2024, True), (2026, False), (2027, False), (2028, True), (2100, False)],
)
def test_february_29_occurs_in_leap_years_only(year: int, occurs: bool) -> None:
    found = occurrences(campaign(DateTrigger(2, 29)), year, JST, no_closures)
    assert days_of(found) == ([date(year, 2, 29)] if occurs else [])


def summer_break(name: str, year: int) -> date | None:
    """The clinic's closures as the caller knows them: a summer break each August, a
    New Year break starting 2 January, and no spring break in 2027."""
    if name == "夏季休業":
        return date(year, 8, 13)
    if name == "新年休業":
        return date(year, 1, 2)
    if name == "春休み" and year != 2027:
        return date(year, 4, 1)
    return None


@pytest.mark.parametrize(
    ("closure", "offset", "year", "days"),
    [
        pytest.param("夏季休業", -14, 2026, [date(2026, 7, 30)], id="two-weeks-before"),
        pytest.param("夏季休業", 0, 2026, [date(2026, 8, 13)], id="on-the-first-day"),
        pytest.param("新年休業", -14, 2026, [date(2026, 12, 19)], id="before-next-years"),
        pytest.param("春休み", 0, 2027, [], id="no-closure-that-year"),
        pytest.param("存在しない", 0, 2026, [], id="unknown-closure"),
    ],
)
def test_closure_trigger_counts_from_the_closures_first_day(
    closure: str, offset: int, year: int, days: list[date]
) -> None:
    trigger = ClosureTrigger(closure, offset_days=offset)
    found = occurrences(campaign(trigger), year, JST, summer_break)
    assert days_of(found) == days
    assert all(o.closure == closure and o.anchor is not None for o in found)


def test_occurrences_between_lists_enabled_campaigns_by_start() -> None:
    year_end = replace(campaign(DateTrigger(12, 1)), id="year_end")
    paused = replace(campaign(DateTrigger(12, 2)), id="paused", enabled=False)
    season = replace(campaign(SeasonTrigger(DOYO)), id="season_change")
    found = occurrences_between(
        [year_end, paused, season], date(2026, 11, 1), date(2027, 1, 31), JST, no_closures
    )
    winter_2027 = date_of(SeasonalMoment.DOYO_WINTER, 2027, JST)
    assert [(o.campaign_id, o.day) for o in found] == [
        ("year_end", date(2026, 12, 1)),
        ("season_change", winter_2027),
    ]


# --- Live occurrences at pinned times -----------------------------------------------

DOYO_WINTER_2026 = date_of(SeasonalMoment.DOYO_WINTER, 2026, JST)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=JST)


def live_days(
    now: datetime, c: Campaign, is_closed: Callable[[date], bool] = lambda d: False
) -> list[tuple[str, date]]:
    return [
        (o.campaign_id, o.day) for _, o in live_occurrences([c], now, JST, no_closures, is_closed)
    ]


@pytest.mark.parametrize(
    ("now", "live"),
    [
        pytest.param(at(DOYO_WINTER_2026, 9, 59), False, id="before-ten-on-the-day"),
        pytest.param(at(DOYO_WINTER_2026, 10, 0), True, id="at-ten"),
        pytest.param(at(DOYO_WINTER_2026 + timedelta(days=2), 23, 59), True, id="last-day"),
        pytest.param(at(DOYO_WINTER_2026 + timedelta(days=3), 0, 0), False, id="after-spread"),
        pytest.param(at(DOYO_WINTER_2026 - timedelta(days=1), 10, 0), False, id="day-before"),
    ],
)
def test_an_occurrence_is_live_from_its_start_to_the_end_of_its_spread(
    now: datetime, live: bool
) -> None:
    c = campaign(SeasonTrigger(DOYO), pacing=Pacing(spread_days=3))
    assert live_days(now, c) == ([("c", DOYO_WINTER_2026)] if live else [])


def test_closed_days_lengthen_the_time_an_occurrence_is_live() -> None:
    c = campaign(DateTrigger(12, 1), pacing=Pacing(spread_days=2))
    closed = {date(2026, 12, 2), date(2026, 12, 3)}
    assert live_days(at(date(2026, 12, 4), 12), c, closed.__contains__) == [
        ("c", date(2026, 12, 1))
    ]
    assert live_days(at(date(2026, 12, 5), 12), c, closed.__contains__) == []


def test_a_late_december_occurrence_is_still_live_in_january() -> None:
    c = campaign(DateTrigger(12, 30), pacing=Pacing(spread_days=5))
    assert live_days(at(date(2027, 1, 3), 12), c) == [("c", date(2026, 12, 30))]
    assert live_days(at(date(2027, 1, 4), 0), c) == []


def test_a_disabled_campaign_is_never_live() -> None:
    c = campaign(DateTrigger(12, 1), enabled=False)
    assert live_days(at(date(2026, 12, 1), 12), c) == []


def test_live_occurrences_come_with_their_campaign() -> None:
    c = campaign(DateTrigger(12, 1))
    [(found, occurrence)] = live_occurrences([c], at(date(2026, 12, 1), 12), JST, no_closures)
    assert found is c and occurrence.day == date(2026, 12, 1)


# --- Audience -----------------------------------------------------------------------

DAY = date(2026, 12, 1)
OCCURRENCE = Occurrence("c", DAY, at(DAY, 10).astimezone(UTC))


def person(
    patient_id: int,
    *appointments: AppointmentFact,
    newsletter: bool = True,
    phase: Phase | None = Phase.MAINTENANCE,
    line: bool = True,
    email: bool = False,
) -> PatientFacts:
    return patient(*appointments, phase=phase, line=line, email=email)._replace(
        id=patient_id, newsletter_opt_in=newsletter
    )


def visited_days_before(days: int) -> AppointmentFact:
    return appointment(at(DAY - timedelta(days=days), 15))


def chosen(patients: list[PatientFacts], rules: Audience | None = None) -> list[int]:
    return audience(campaign(DateTrigger(12, 1), rules), OCCURRENCE, patients, JST)


def test_audience_is_opted_in_patients_with_a_usable_contact_sorted_by_id() -> None:
    recent = visited_days_before(10)
    patients = [
        person(3, recent),
        person(1, recent, line=False, email=True),
        person(2, recent, newsletter=False),
        person(4, recent, line=False, email=False),
    ]
    assert chosen(patients) == [1, 3]


def test_audience_without_a_phase_filter_includes_patients_without_a_phase() -> None:
    patients = [person(1, visited_days_before(3), phase=None), person(2, visited_days_before(3))]
    assert chosen(patients) == [1, 2]


def test_audience_phase_filter_keeps_only_those_phases() -> None:
    recent = visited_days_before(3)
    patients = [
        person(1, recent, phase=Phase.ACUTE),
        person(2, recent, phase=Phase.REHAB),
        person(3, recent, phase=Phase.MAINTENANCE),
        person(4, recent, phase=None),
    ]
    rules = Audience(phases=frozenset({Phase.REHAB, Phase.MAINTENANCE}))
    assert chosen(patients, rules) == [2, 3]


@pytest.mark.parametrize(
    ("days", "included"),
    [
        pytest.param(0, True, id="same-day"),
        pytest.param(180, True, id="180-days"),
        pytest.param(181, False, id="181-days"),
    ],
)
def test_audience_needs_a_visit_within_180_days(days: int, included: bool) -> None:
    assert chosen([person(1, visited_days_before(days))]) == ([1] if included else [])


@pytest.mark.parametrize(
    "status", [AppointmentStatus.BOOKED, AppointmentStatus.CANCELLED, AppointmentStatus.NO_SHOW]
)
def test_only_a_visited_appointment_counts_as_a_visit(status: AppointmentStatus) -> None:
    assert chosen([person(1, appointment(at(DAY - timedelta(days=5), 15), status))]) == []


def test_no_visit_is_needed_when_the_campaign_says_so() -> None:
    assert chosen([person(1)], Audience(visited_within_days=None)) == [1]


@pytest.mark.parametrize(
    ("booked", "status", "included"),
    [
        pytest.param(at(DAY, 9), AppointmentStatus.BOOKED, False, id="on-the-day"),
        pytest.param(
            at(DAY + timedelta(days=28), 19), AppointmentStatus.BOOKED, False, id="28-days-after"
        ),
        pytest.param(
            at(DAY + timedelta(days=29), 10), AppointmentStatus.BOOKED, True, id="29-days-after"
        ),
        pytest.param(
            at(DAY - timedelta(days=1), 10), AppointmentStatus.BOOKED, True, id="the-day-before"
        ),
        pytest.param(
            at(DAY + timedelta(days=7), 10), AppointmentStatus.CANCELLED, True, id="cancelled"
        ),
    ],
)
def test_a_booking_inside_the_window_excludes_the_patient(
    booked: datetime, status: AppointmentStatus, included: bool
) -> None:
    facts = person(1, visited_days_before(30), appointment(booked, status))
    rules = Audience(exclude_booked_within_days=28)
    assert chosen([facts], rules) == ([1] if included else [])


def test_bookings_do_not_exclude_when_the_campaign_keeps_them() -> None:
    facts = person(
        1,
        visited_days_before(30),
        appointment(at(DAY + timedelta(days=2), 10), AppointmentStatus.BOOKED),
    )
    assert chosen([facts], Audience(exclude_booked_within_days=0)) == [1]


# --- Pacing -------------------------------------------------------------------------

# 2026-12-01 is a Tuesday; sending starts at 10:00.
SPREAD_3 = Pacing(spread_days=3, per_hour=30)
# Day 1 holds 10 hours from 10:00, days 2 and 3 eleven hours from 09:00: at 30 an hour
# the three days hold 300 + 330 + 330 slots.
CAPACITY_3 = 960


def local_moments(moments: dict[int, datetime]) -> list[datetime]:
    return sorted(m.astimezone(JST) for m in moments.values())


def per_clock_hour(moments: dict[int, datetime]) -> Counter[tuple[date, int]]:
    return Counter((m.date(), m.hour) for m in local_moments(moments))


@pytest.mark.parametrize("recipients", [1, 29, 31, 400, CAPACITY_3, 2500])
def test_pacing_never_exceeds_the_cap_in_any_clock_hour(recipients: int) -> None:
    moments = pace(range(recipients), OCCURRENCE, SPREAD_3, WINDOW, JST)
    assert len(moments) == recipients
    assert max(per_clock_hour(moments).values()) <= 30


@pytest.mark.parametrize("recipients", [31, CAPACITY_3, 2500])
def test_pacing_never_exceeds_the_cap_in_any_sixty_minutes(recipients: int) -> None:
    ordered = local_moments(pace(range(recipients), OCCURRENCE, SPREAD_3, WINDOW, JST))
    assert all(
        later - earlier >= timedelta(hours=1)
        for earlier, later in zip(ordered, ordered[30:], strict=False)
    )


def test_every_moment_is_inside_the_send_window_and_after_the_start() -> None:
    moments = pace(range(2500), OCCURRENCE, SPREAD_3, WINDOW, JST)
    assert all(m.tzinfo is UTC for m in moments.values())
    assert min(moments.values()) == OCCURRENCE.starts_at
    assert all(time(9, 0) <= m.time() < time(20, 0) for m in local_moments(moments))


@pytest.mark.parametrize("recipients", [3, 100, 400, CAPACITY_3])
def test_pacing_finishes_within_the_spread_when_the_cap_allows(recipients: int) -> None:
    moments = local_moments(pace(range(recipients), OCCURRENCE, SPREAD_3, WINDOW, JST))
    assert moments[-1].date() <= DAY + timedelta(days=2)


@pytest.mark.parametrize("recipients", [400, 2500], ids=["within-the-spread", "beyond-the-cap"])
def test_pacing_until_a_moment_leaves_out_only_the_later_recipients(recipients: int) -> None:
    until = at(DAY + timedelta(days=1), 15).astimezone(UTC)
    every = pace(range(recipients), OCCURRENCE, SPREAD_3, WINDOW, JST)
    early = pace(range(recipients), OCCURRENCE, SPREAD_3, WINDOW, JST, until=until)
    assert early == {p: moment for p, moment in every.items() if moment <= until}
    assert 0 < len(early) < recipients


def test_pacing_spreads_a_small_audience_over_every_sending_day() -> None:
    moments = local_moments(pace(range(90), OCCURRENCE, SPREAD_3, WINDOW, JST))
    per_day = Counter(m.date() for m in moments)
    assert sorted(per_day) == [DAY, DAY + timedelta(days=1), DAY + timedelta(days=2)]
    assert all(25 <= n <= 35 for n in per_day.values())


def test_an_audience_beyond_the_cap_goes_on_the_next_open_days() -> None:
    moments = local_moments(pace(range(CAPACITY_3 + 40), OCCURRENCE, SPREAD_3, WINDOW, JST))
    overflow = [m for m in moments if m.date() > DAY + timedelta(days=2)]
    assert len(overflow) == 40
    # The overflow fills the next day from its opening, hour by hour.
    assert overflow[0] == at(DAY + timedelta(days=3), 9, 0)
    assert overflow[-1] == at(DAY + timedelta(days=3), 10, 18)


def test_pacing_is_deterministic_and_ignores_the_recipients_order() -> None:
    forward = pace(list(range(1, 200)), OCCURRENCE, SPREAD_3, WINDOW, JST)
    backward = pace(list(range(199, 0, -1)), OCCURRENCE, SPREAD_3, WINDOW, JST)
    assert forward == backward


def test_the_order_is_not_the_patient_ids_and_changes_with_the_occurrence() -> None:
    first = pace(range(50), OCCURRENCE, SPREAD_3, WINDOW, JST)
    by_moment = sorted(first, key=lambda p: first[p])
    assert by_moment != sorted(by_moment)
    later = replace(OCCURRENCE, day=date(2027, 12, 1), starts_at=at(date(2027, 12, 1), 10))
    second = pace(range(50), later, SPREAD_3, WINDOW, JST)
    assert sorted(second, key=lambda p: second[p]) != by_moment


def test_pacing_skips_closed_days() -> None:
    closed = {DAY + timedelta(days=1)}
    moments = local_moments(
        pace(range(600), OCCURRENCE, SPREAD_3, WINDOW, JST, closed.__contains__)
    )
    assert {m.date() for m in moments} == {DAY, DAY + timedelta(days=2), DAY + timedelta(days=3)}
    assert sending_days(OCCURRENCE, SPREAD_3, closed.__contains__)[-1] == DAY + timedelta(days=3)


def test_a_closed_occurrence_day_starts_on_the_next_open_day_at_the_trigger_time() -> None:
    closed = {DAY}
    moments = local_moments(pace(range(10), OCCURRENCE, SPREAD_3, WINDOW, JST, closed.__contains__))
    assert moments[0] == at(DAY + timedelta(days=1), 10, 0)
    assert DAY not in {m.date() for m in moments}


def test_moments_sit_on_an_even_grid_never_closer_than_the_spacing() -> None:
    moments = local_moments(pace(range(CAPACITY_3 + 40), OCCURRENCE, SPREAD_3, WINDOW, JST))
    assert all(m.minute % 2 == 0 and m.second == 0 and m.microsecond == 0 for m in moments)
    gaps = [later - earlier for earlier, later in pairwise(moments)]
    assert min(gaps) == timedelta(minutes=2)


def test_an_uneven_cap_is_still_evenly_spaced_inside_the_hour() -> None:
    pacing = Pacing(spread_days=1, per_hour=7)
    moments = local_moments(pace(range(70), OCCURRENCE, pacing, WINDOW, JST))
    assert max(per_clock_hour({i: m for i, m in enumerate(moments)}).values()) == 7
    gaps = {
        later - earlier for earlier, later in pairwise(moments) if later.date() == earlier.date()
    }
    assert min(gaps) >= timedelta(seconds=514)


def test_a_late_planner_paces_from_now_instead_of_sending_the_missed_slots_at_once() -> None:
    now = at(DAY + timedelta(days=1), 15, 1)
    moments = local_moments(
        pace(range(600), OCCURRENCE, SPREAD_3, WINDOW, JST, not_before=now.astimezone(UTC))
    )
    assert moments[0] == at(DAY + timedelta(days=1), 15, 2)
    assert max(per_clock_hour({i: m for i, m in enumerate(moments)}).values()) <= 30


def test_no_recipients_means_no_moments() -> None:
    assert pace([], OCCURRENCE, SPREAD_3, WINDOW, JST) == {}


# --- A free slot for a newsletter that must move -------------------------------------

# At 2 an hour the grid has a slot on every hour and half hour, 09:00 to 19:30.
HALF_HOURLY = Pacing(spread_days=1, per_hour=2)
NEXT = DAY + timedelta(days=1)
AFTER_NEXT = DAY + timedelta(days=2)


def moved(
    moment: datetime,
    busy: set[date],
    occupied: set[datetime] | None = None,
    closed: set[date] | None = None,
) -> datetime:
    newsletter = Displaced(1, moment.astimezone(UTC), frozenset(busy))
    [(patient_id, slot)] = free_slots(
        [newsletter],
        occupied or set(),
        HALF_HOURLY,
        WINDOW,
        JST,
        (closed or set()).__contains__,
    ).items()
    assert patient_id == 1 and slot.tzinfo is UTC
    return slot.astimezone(JST)


@pytest.mark.parametrize(
    ("moment", "busy", "occupied", "closed", "expected"),
    [
        (at(DAY, 14), {DAY}, set(), set(), at(NEXT, 14)),
        (at(DAY, 14), {DAY}, {at(DAY, 14, 30), at(NEXT, 13, 30)}, set(), at(NEXT, 14)),
        (at(DAY, 14), {DAY}, {at(NEXT, 14), at(NEXT, 14, 30)}, set(), at(NEXT, 15)),
        (at(DAY, 14, 10), {DAY}, set(), set(), at(NEXT, 14, 30)),
        (at(DAY, 7), {DAY}, set(), set(), at(NEXT, 9)),
        (at(DAY, 19), {DAY}, {at(NEXT, 19), at(NEXT, 19, 30)}, set(), at(AFTER_NEXT, 9)),
        (at(DAY, 14), {DAY}, set(), {NEXT}, at(AFTER_NEXT, 14)),
        (at(DAY, 14), {DAY, NEXT}, set(), set(), at(AFTER_NEXT, 14)),
        (at(DAY, 14), set(), {at(DAY, 14)}, set(), at(DAY, 14, 30)),
        (at(DAY, 19, 30), set(), {at(DAY, 19, 30)}, set(), at(NEXT, 9)),
        (at(DAY, 14), set(), set(), {DAY}, at(NEXT, 14)),
    ],
    ids=[
        "the next day at the same time",
        "slots held before or on another day do not matter",
        "the first free slot after that time",
        "a moment between slots takes the next slot",
        "a moment before the window opens takes its opening",
        "none free from that time: the day after from the opening, not earlier",
        "a closed day is skipped",
        "another busy day of the patient is skipped",
        "a held slot on a free day: the next slot that day",
        "never after the window closes",
        "the moment's own day closed",
    ],
)
def test_a_displaced_newsletter_takes_the_first_free_slot_of_the_grid(
    moment: datetime,
    busy: set[date],
    occupied: set[datetime],
    closed: set[date],
    expected: datetime,
) -> None:
    assert moved(moment, busy, occupied, closed) == expected


@pytest.mark.parametrize(
    ("occupied", "expected"),
    [
        (set(), at(AFTER_NEXT, 9)),
        (
            {at(AFTER_NEXT, h, m) for h in range(9, 20) for m in (0, 30)},
            at(AFTER_NEXT + timedelta(days=1), 9),
        ),
        ({at(AFTER_NEXT, 9), at(AFTER_NEXT, 9, 30), at(AFTER_NEXT, 10, 30)}, at(AFTER_NEXT, 10)),
    ],
    ids=["the opening", "a full day is skipped", "the first gap"],
)
def test_after_the_first_day_the_search_starts_at_the_window_opening(
    occupied: set[datetime], expected: datetime
) -> None:
    # 19:30 is a day's last slot: the next day, which holds it already, has no free
    # slot at or after the moment's time of day.
    assert moved(at(DAY, 19, 30), {DAY}, occupied | {at(NEXT, 19, 30)}) == expected


def test_displaced_newsletters_never_share_a_slot_and_take_them_by_moment_then_patient() -> None:
    displaced = [
        Displaced(3, at(DAY, 14, 30).astimezone(UTC), frozenset({DAY})),
        Displaced(2, at(DAY, 14).astimezone(UTC), frozenset({DAY})),
        Displaced(1, at(DAY, 14).astimezone(UTC), frozenset({DAY})),
    ]
    chosen = free_slots(displaced, set(), HALF_HOURLY, WINDOW, JST)
    assert {p: m.astimezone(JST) for p, m in chosen.items()} == {
        1: at(NEXT, 14),
        2: at(NEXT, 14, 30),
        3: at(NEXT, 15),
    }


def test_the_free_slots_do_not_depend_on_the_order_given() -> None:
    displaced = [
        Displaced(p, at(DAY, 10 + p % 8, 30 * (p % 2)).astimezone(UTC), frozenset({DAY}))
        for p in range(40)
    ]
    forward = free_slots(displaced, set(), HALF_HOURLY, WINDOW, JST)
    backward = free_slots(displaced[::-1], set(), HALF_HOURLY, WINDOW, JST)
    assert forward == backward


def test_moved_newsletters_keep_to_the_cap_beside_the_days_own() -> None:
    """Those paced on the first day move, as if each patient had another message that
    day, into the second and third days' free slots, among the newsletters paced there."""
    moments = pace(range(700), OCCURRENCE, SPREAD_3, WINDOW, JST)
    first_day = {p: m for p, m in moments.items() if m.astimezone(JST).date() == DAY}
    staying = [m for p, m in moments.items() if p not in first_day]
    displaced = [Displaced(p, m, frozenset({DAY})) for p, m in first_day.items()]
    chosen = free_slots(displaced, staying, SPREAD_3, WINDOW, JST)
    after = {**{p: m for p, m in moments.items() if p not in first_day}, **chosen}
    assert len(after) == 700
    assert len(set(after.values())) == 700
    assert DAY not in {m.date() for m in local_moments(after)}
    assert max(per_clock_hour(after).values()) <= 30


def test_nothing_displaced_means_no_slots() -> None:
    assert free_slots([], [at(DAY, 14)], HALF_HOURLY, WINDOW, JST) == {}

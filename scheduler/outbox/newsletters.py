"""Seasonal newsletters into the outbox: the campaigns' rules (scheduler/campaigns.py)
applied to the clinic's patients, as `Due` messages the planner inserts like any other.

An occurrence's audience and pacing are fixed when it is first planned (when its
moment comes): everyone gets a moment then, spread so the clinic's booking line is
never flooded. Later cycles only keep, withdraw or defer those rows: a patient who
books meanwhile drops out of a campaign that excludes booked patients, and a
newsletter that would land on the same day as a cadence message or another
newsletter moves to a free slot of its campaign's pacing on the patient's next open
day, so the moved ones keep to the hourly cap too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, String, select, type_coerce
from sqlalchemy.orm import Session

from scheduler.core.campaigns import (
    Campaign,
    Displaced,
    Occurrence,
    audience,
    free_slots,
    live_occurrences,
    occurrences,
    occurrences_between,
    pace,
)
from scheduler.core.closures import (
    Closures,
    ClosureSpan,
    closure_spans,
    is_closed,
    period_start,
    reopens_on,
)
from scheduler.core.domain import ChannelName, DeliveryState, Due, PatientFacts, Reason, member
from scheduler.core.routing import choose_channel
from scheduler.core.seasons import JAPANESE
from scheduler.core.window import local_date
from scheduler.messages.context import japanese_date
from scheduler.outbox.transitions import REVIVABLE
from scheduler.settings import Settings
from scheduler.store.batches import batches
from scheduler.store.clinics import clinic_of
from scheduler.store.db import among, upsert_insert
from scheduler.store.facts import load_facts
from scheduler.store.models import Delivery, PlannedOccurrence
from scheduler.store.paused_campaigns import paused_ids

# Messages of which a patient gets at most one a day, and the states that count.
_ONE_A_DAY = (Reason.NEWSLETTER, Reason.CADENCE_NUDGE, Reason.CADENCE_FOLLOW_UP)
_TAKEN = (DeliveryState.PLANNED, DeliveryState.SENDING, DeliveryState.SENT)
# A newsletter row in one of these states is done or under way: it never moves.
_SETTLED = (DeliveryState.SENDING, DeliveryState.SENT, DeliveryState.FAILED)


@dataclass(frozen=True)
class _Calendar:
    """The clinic's closures as the campaign rules ask for them."""

    closures: Closures

    def closure_start(self, name: str, year: int) -> date | None:
        return period_start(name, year, self.closures)

    def closed(self, day: date) -> bool:
        return is_closed(day, self.closures)


def campaigns_in_force(session: Session, settings: Settings) -> tuple[Campaign, ...]:
    """The clinic's campaigns as the planner reads them: those of the campaigns file,
    with the ones paused in the desk (`scheduler.store.paused_campaigns`) disabled,
    exactly as `enabled = false` in the file would. The planner's settings
    fingerprint is taken of these, so a pause or a resume has every patient planned
    again at the next cycle."""
    paused = paused_ids(session)
    return tuple(
        replace(campaign, enabled=False) if campaign.id in paused else campaign
        for campaign in settings.campaigns
    )


def newsletters_live(
    session: Session, now: datetime, settings: Settings
) -> list[tuple[Campaign, Occurrence]]:
    """The campaign occurrences being sent at `now`: those whose time has come, and
    those whose planned newsletters are still waiting (moved to a later day, or
    beyond the spread when the audience outgrew the hourly cap). A paused campaign
    has none."""
    tz, calendar = settings.timezone, _Calendar(settings.config.closures)
    campaigns = campaigns_in_force(session, settings)
    live = live_occurrences(campaigns, now, tz, calendar.closure_start, calendar.closed)
    waiting = _waiting_in_outbox(session, settings, campaigns)
    return live + [pair for pair in waiting if pair not in live]


def first_plan_pending(session: Session, live: Iterable[tuple[Campaign, Occurrence]]) -> bool:
    """Whether an occurrence's audience has not been planned yet: its first plan
    paces its whole audience."""
    planned = set(
        session.execute(
            select(PlannedOccurrence.campaign_id, PlannedOccurrence.day).where(
                PlannedOccurrence.clinic_id == clinic_of(session)
            )
        )
    )
    return any((o.campaign_id, o.day) not in planned for _, o in live)


def record_planned(
    session: Session, live: Iterable[tuple[Campaign, Occurrence]], now: datetime
) -> None:
    """Remember that these occurrences' audiences have been planned (by any worker)."""
    clinic_id = clinic_of(session)
    rows = [
        {"clinic_id": clinic_id, "campaign_id": o.campaign_id, "day": o.day, "planned_at": now}
        for _, o in live
    ]
    if rows:
        session.execute(
            upsert_insert(session, PlannedOccurrence).values(rows).on_conflict_do_nothing()
        )


def newsletters_due(
    session: Session,
    live: Iterable[tuple[Campaign, Occurrence]],
    facts: Iterable[PatientFacts],
    others_due: Iterable[Due],
    now: datetime,
    settings: Settings,
) -> list[Due]:
    """The newsletters of these patients in the live occurrences (`newsletters_live`)."""
    tz = settings.timezone
    patients = list(facts)
    busy = _busy_days(session, [p.id for p in patients], others_due, now, settings)
    due: list[Due] = []
    for campaign, occurrence in live:
        rows = _rows_of(session, occurrence)
        members = audience(campaign, occurrence, patients, tz)
        moments = _moments(rows, campaign, occurrence, members, now, settings)
        for patient_id, send_at in sorted(
            _placed(rows, moments, campaign, occurrence, busy, now, settings).items()
        ):
            message = _due(campaign, occurrence, patient_id, send_at)
            busy[patient_id].append((local_date(send_at, tz), message.key))
            due.append(message)
    return due


def occurrences_ahead(
    session: Session, now: datetime, until: datetime, settings: Settings
) -> list[tuple[Campaign, Occurrence]]:
    """For the dry run: the occurrences with newsletters from now to `until` (waiting
    in the outbox, being sent, or starting); a paused campaign has none."""
    tz, calendar = settings.timezone, _Calendar(settings.config.closures)
    in_force = campaigns_in_force(session, settings)
    campaigns = {campaign.id: campaign for campaign in in_force}
    coming = [
        (campaigns[o.campaign_id], o)
        for o in occurrences_between(
            campaigns.values(),
            local_date(now, tz),
            local_date(until, tz),
            tz,
            calendar.closure_start,
        )
    ]
    started = live_occurrences(in_force, now, tz, calendar.closure_start, calendar.closed)
    waiting = _waiting_in_outbox(session, settings, in_force)
    return list(dict.fromkeys([*waiting, *started, *coming]))


def expected_newsletters(
    session: Session,
    ahead: Sequence[tuple[Campaign, Occurrence]],
    audiences: Sequence[list[int]],
    now: datetime,
    until: datetime,
    settings: Settings,
) -> list[Due]:
    """For the dry run: the newsletters of the occurrences `ahead` (each with its
    audience, `audience`) from now to `until`, at the moments planned already or
    that their pacing would give (a newsletter that would meet a cadence message on
    the same day moves a day later, which this does not foresee)."""
    expected: list[Due] = []
    for (campaign, occurrence), members in zip(ahead, audiences, strict=True):
        rows = _rows_of(session, occurrence)
        moments = _moments(rows, campaign, occurrence, sorted(members), now, settings, until)
        expected += [
            _due(campaign, occurrence, patient_id, moment)
            for patient_id, moment in moments.items()
            if moment <= until
        ]
    return expected


def _moments(
    rows: dict[int, _Row],
    campaign: Campaign,
    occurrence: Occurrence,
    members: list[int],
    now: datetime,
    settings: Settings,
    until: datetime | None = None,
) -> dict[int, datetime]:
    """Each recipient's moment (`members`: the occurrence's audience): once an
    occurrence is planned, its recipients keep theirs; before, its pacing gives them
    from `now` on (with `until`, those of later moments may be left out)."""
    tz = settings.timezone
    if rows:
        return {i: rows[i].send_after for i in members if i in rows}
    calendar = _Calendar(settings.config.closures)
    window = settings.rules.window
    return pace(
        members,
        occurrence,
        campaign.pacing,
        window,
        tz,
        calendar.closed,
        not_before=now,
        until=until,
    )


def _waiting_in_outbox(
    session: Session, settings: Settings, in_force: Iterable[Campaign]
) -> list[tuple[Campaign, Occurrence]]:
    """Occurrences of the enabled campaigns with newsletters still planned in the
    outbox. A disabled (paused) campaign's are not: the planner withdraws them."""
    tz, calendar = settings.timezone, _Calendar(settings.config.closures)
    campaigns = {campaign.id: campaign for campaign in in_force if campaign.enabled}
    pairs = []
    for campaign_id, day in session.execute(
        select(Delivery.campaign_id, Delivery.campaign_day)
        .where(
            Delivery.clinic_id == clinic_of(session),
            Delivery.reason == Reason.NEWSLETTER,
            Delivery.state == DeliveryState.PLANNED,
        )
        .distinct()
    ):
        campaign = campaigns.get(campaign_id or "")
        if campaign is None or day is None:
            # Its campaign left the file (the dispatcher skips its rows), or is paused.
            continue
        for occurrence in occurrences(campaign, day.year, tz, calendar.closure_start):
            if occurrence.day == day:
                pairs.append((campaign, occurrence))
    return pairs


def _due(campaign: Campaign, occurrence: Occurrence, patient_id: int, send_at: datetime) -> Due:
    return Due(
        patient_id=patient_id,
        reason=Reason.NEWSLETTER,
        occurrence=f"{campaign.id}:{occurrence.day.isoformat()}",
        send_at=send_at,
        campaign_id=campaign.id,
        campaign_day=occurrence.day,
        template_folder=campaign.template,
    )


@dataclass(frozen=True)
class _Row:
    """A newsletter already in the outbox. Its state is None when this version does
    not know it (a newer version wrote it): it then holds its slot and stays put."""

    state: DeliveryState | None
    send_after: datetime


def _of_occurrence(session: Session, occurrence: Occurrence) -> tuple[ColumnElement[bool], ...]:
    return (
        Delivery.clinic_id == clinic_of(session),
        Delivery.campaign_id == occurrence.campaign_id,
        Delivery.campaign_day == occurrence.day,
        Delivery.reason == Reason.NEWSLETTER,
    )


def _rows_of(session: Session, occurrence: Occurrence) -> dict[int, _Row]:
    rows = session.execute(
        select(Delivery.patient_id, type_coerce(Delivery.state, String), Delivery.send_after).where(
            *_of_occurrence(session, occurrence)
        )
    )
    return {
        patient_id: _Row(member(DeliveryState, state), send_after)
        for patient_id, state, send_after in rows
        if patient_id is not None
    }


# A patient's days already taken: (clinic-local day, the message's idempotency key).
_Busy = defaultdict[int, list[tuple[date, str]]]


def _busy_days(
    session: Session,
    patient_ids: list[int],
    others_due: Iterable[Due],
    now: datetime,
    settings: Settings,
) -> _Busy:
    """Each of these patients' days from today on that already have a cadence
    message or a newsletter: the outbox's rows that may still go (an overdue one
    keeps its day), and the rules' messages not in the outbox yet."""
    tz = settings.timezone
    busy: _Busy = defaultdict(list)
    in_outbox: set[str] = set()
    for chunk in batches(sorted(patient_ids)):
        for key, patient_id, state, send_after in session.execute(
            select(
                Delivery.idempotency_key,
                Delivery.patient_id,
                type_coerce(Delivery.state, String),
                Delivery.send_after,
            ).where(among(session, Delivery.patient_id, chunk), Delivery.reason.in_(_ONE_A_DAY))
        ):
            in_outbox.add(key)
            if patient_id is not None and state in _TAKEN and send_after >= now - timedelta(days=1):
                busy[patient_id].append((local_date(send_after, tz), key))
    for message in others_due:
        if message.reason.is_cadence and message.may_create and message.key not in in_outbox:
            busy[message.patient_id].append((local_date(message.send_at, tz), message.key))
    return busy


def _taken(row: _Row) -> bool:
    """Whether the row holds its slot (one this version does not know does)."""
    return row.state is None or row.state in _TAKEN


def _settled(row: _Row) -> bool:
    """Whether the row stays put (one this version does not know does)."""
    return row.state is None or row.state in _SETTLED


def _placed(
    rows: dict[int, _Row],
    moments: dict[int, datetime],
    campaign: Campaign,
    occurrence: Occurrence,
    busy: _Busy,
    now: datetime,
    settings: Settings,
) -> dict[int, datetime]:
    """Each recipient's moment, or a free slot of the campaign's pacing grid
    (`free_slots`) when it cannot stay: its day is closed or holds another of the
    patient's cadence messages or newsletters, or another newsletter of the occurrence
    holds that very moment. A row sent, being sent or failed stays put. A row coming
    back (withdrawn or skipped, then due again) whose moment has passed takes a free
    slot from `now`: a campaign resumed after a pause keeps to its pacing, rather
    than sending every newsletter whose moment passed meanwhile at once."""
    tz, calendar = settings.timezone, _Calendar(settings.config.closures)
    # Rows of patients who left the audience hold their slots until the planner
    # withdraws them, after this: a slot is free only once no row holds it.
    occupied = {
        row.send_after
        for patient_id, row in rows.items()
        if _taken(row) and patient_id not in moments
    }
    placed: dict[int, datetime] = {}
    for patient_id, row in rows.items():
        if patient_id in moments and _settled(row):
            placed[patient_id] = row.send_after
            if _taken(row):
                occupied.add(row.send_after)
    displaced: list[Displaced] = []

    # Planned rows first, so a row coming back (withdrawn, then due again) never
    # pushes one already planned off its slot; then by moment, for every worker alike.
    def order(item: tuple[int, datetime]) -> tuple[bool, datetime, int]:
        row = rows.get(item[0])
        return row is None or row.state is not DeliveryState.PLANNED, item[1], item[0]

    for patient_id, moment in sorted(moments.items(), key=order):
        if patient_id in placed:
            continue
        key = _due(campaign, occurrence, patient_id, moment).key
        days = frozenset(day for day, other in busy[patient_id] if other != key)
        coming_back = patient_id in rows and rows[patient_id].state in REVIVABLE
        if coming_back and moment < now:
            displaced.append(Displaced(patient_id, now, days))
            continue
        day = local_date(moment, tz)
        if day in days or calendar.closed(day) or moment in occupied:
            displaced.append(Displaced(patient_id, moment, days))
        else:
            placed[patient_id] = moment
            occupied.add(moment)
    window = settings.rules.window
    moved = free_slots(displaced, occupied, campaign.pacing, window, tz, calendar.closed)
    return placed | moved


# How far after a newsletter's day a closure is worth announcing in it.
CLOSURE_NOTICE_DAYS = 60


def campaign_context(campaign: Campaign, day: date, settings: Settings) -> dict[str, Any]:
    """The campaign's own template variables for its occurrence on `day`: the
    seasonal moment it marks, and the next closure (dates and reopening)."""
    tz, closures = settings.timezone, settings.config.closures
    calendar = _Calendar(closures)
    occurrence = next(
        (o for o in occurrences(campaign, day.year, tz, calendar.closure_start) if o.day == day),
        None,
    )
    anchor = occurrence.anchor if occurrence else None
    moment = occurrence.moment if occurrence else None

    def announced(span: ClosureSpan) -> bool:
        if occurrence is not None and occurrence.closure:
            return span.name == occurrence.closure and span.first == anchor
        return day <= span.first <= day + timedelta(days=CLOSURE_NOTICE_DAYS)

    periods = {period.name for period in closures.periods}
    spans = [
        span
        for year in (day.year, day.year + 1)
        for span in closure_spans(year, closures)
        if span.name in periods and announced(span)
    ]
    closure = min(spans, key=lambda span: span.first, default=None)
    return {
        "campaign": campaign.id,
        "moment": JAPANESE[moment] if moment else None,
        "moment_date": japanese_date(occurrence.anchor)
        if occurrence and occurrence.anchor
        else None,
        "closure": {
            "name": closure.name,
            "first": japanese_date(closure.first),
            "last": japanese_date(closure.last),
            "reopens": japanese_date(reopens_on(closure.last + timedelta(days=1), closures)),
        }
        if closure
        else None,
    }


@dataclass(frozen=True)
class CampaignForecast:
    """One coming occurrence, sized with the clinic's patients as they are now."""

    campaign: Campaign
    occurrence: Occurrence
    by_line: int
    by_email: int

    @property
    def audience(self) -> int:
        return self.by_line + self.by_email


def forecast_campaigns(
    session: Session, settings: Settings, first: date, last: date, now: datetime
) -> list[CampaignForecast]:
    """The occurrences from `first` to `last`, with their audience and channel split
    as the patients' facts, consent and contacts stand at `now`."""
    tz, calendar = settings.timezone, _Calendar(settings.config.closures)
    campaigns = {campaign.id: campaign for campaign in settings.campaigns}
    patients = {facts.id: facts for facts in load_facts(session, now)}
    forecasts = []
    closure_start = calendar.closure_start
    for occurrence in occurrences_between(campaigns.values(), first, last, tz, closure_start):
        campaign = campaigns[occurrence.campaign_id]
        channels = [
            choose_channel(patients[i].preferred_channel, patients[i].contacts)
            for i in audience(campaign, occurrence, patients.values(), tz)
        ]
        forecasts.append(
            CampaignForecast(
                campaign,
                occurrence,
                by_line=channels.count(ChannelName.LINE),
                by_email=channels.count(ChannelName.EMAIL),
            )
        )
    return forecasts

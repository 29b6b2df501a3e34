"""What the clinic sees of its campaigns, and how it pauses them: the coming
occurrences with their audience, LINE/email split and the LINE quota they need
(`tayori campaigns` and the desk's Campaigns page show the same), and pausing or
resuming a campaign (`tayori campaign pause|resume` and the desk).

A pause is a row in `paused_campaigns` (the desk cannot edit the campaigns file).
Pausing withdraws at once, through the outbox's `withdraw` transition, the
campaign's newsletters that are planned but not sent (one being sent at that moment
goes); the planner then treats the campaign as disabled
(`newsletters.campaigns_in_force`), so none is planned again. Resuming deletes the
row. Either marks every patient of the clinic for the next worker cycle, which
plans them all again: after a resume, that revives the withdrawn newsletters of an
occurrence still being sent (those whose moment passed meanwhile take free slots of
its pacing from then on) and plans an occurrence that started during the pause from
that moment; an occurrence whose sending days all passed during the pause is not
sent. (The planner's settings fingerprint, taken of the campaigns in force, changes
too; but a pause and a resume between two cycles leave it as it was, hence the
marks.)

A planner cycle that had read the campaigns before a pause was committed may plan
the campaign's newsletters again: the dispatcher reads the pauses with every batch
it claims and skips them (`composer.route`), and the next cycle, whose fingerprint
then differs, plans everyone and withdraws the rest. Resuming revives both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scheduler.core.campaigns import Campaign
from scheduler.core.domain import DeliveryState, Reason
from scheduler.core.window import local_date
from scheduler.outbox import transitions
from scheduler.outbox.budget import LineQuotaView, line_quota
from scheduler.outbox.newsletters import CampaignForecast, forecast_campaigns
from scheduler.outbox.transitions import WITHDRAWN_CAMPAIGN_PAUSED
from scheduler.settings import Settings
from scheduler.store.clinics import clinic_of
from scheduler.store.models import Delivery
from scheduler.store.paused_campaigns import add_pause, paused_ids, remove_pause
from scheduler.store.replan import mark_everyone


class UnknownCampaign(LookupError):
    """No campaign of that id in the clinic's campaigns file."""


@dataclass(frozen=True)
class ComingOccurrence:
    """One coming occurrence, sized as the patients stand now, and what it needs of
    LINE's monthly quota."""

    forecast: CampaignForecast
    paused: bool  # its campaign is paused: nothing of it is sent while it is
    # LINE messages the month of its day has room for, as far as known now: this
    # month's room left, a later month's whole limit; None: the plan has no limit.
    line_left: int | None

    @property
    def line_over(self) -> int:
        """Its LINE messages beyond that room: they go by email where the patient has
        it, or wait for the next month. A paused occurrence needs none."""
        if self.paused or self.line_left is None:
            return 0
        return max(self.forecast.by_line - self.line_left, 0)


@dataclass(frozen=True)
class CampaignOutlook:
    occurrences: list[ComingOccurrence]
    quota: LineQuotaView  # this month's
    paused: frozenset[str]  # the ids of the paused campaigns
    # Each campaign's newsletters planned in the outbox now (what a pause withdraws).
    planned: dict[str, int]


def outlook(
    session: Session, settings: Settings, first: date, last: date, now: datetime
) -> CampaignOutlook:
    """The occurrences of the enabled campaigns (paused ones too, marked) from
    `first` to `last`."""
    tz = settings.timezone
    forecasts = forecast_campaigns(session, settings, first, last, now)
    quota = line_quota(session, now, tz, settings.config.line.monthly_quota)
    paused = paused_ids(session)
    today = local_date(now, tz)

    def line_left(day: date) -> int | None:
        return quota.left if (day.year, day.month) == (today.year, today.month) else quota.limit

    coming = [
        ComingOccurrence(f, f.campaign.id in paused, line_left(f.occurrence.day)) for f in forecasts
    ]
    return CampaignOutlook(coming, quota, paused, _planned_by_campaign(session))


def _planned_by_campaign(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(Delivery.campaign_id, func.count())
        .where(
            Delivery.clinic_id == clinic_of(session),
            Delivery.reason == Reason.NEWSLETTER,
            Delivery.state == DeliveryState.PLANNED,
            Delivery.campaign_id.is_not(None),
        )
        .group_by(Delivery.campaign_id)
    )
    return {campaign_id: count for campaign_id, count in rows if campaign_id is not None}


def campaign_named(settings: Settings, campaign_id: str) -> Campaign:
    for campaign in settings.campaigns:
        if campaign.id == campaign_id:
            return campaign
    raise UnknownCampaign(f"no campaign {campaign_id!r} in the campaigns file")


@dataclass(frozen=True)
class Paused:
    done: bool  # False: it was paused already, nothing changed
    withdrawn: int  # its newsletters withdrawn from the outbox


def pause(
    session: Session, settings: Settings, campaign_id: str, by: int | None, now: datetime
) -> Paused:
    """Pause a campaign of the campaigns file (`by`: the desk account, None for the
    command line) and withdraw its newsletters planned but not sent."""
    campaign = campaign_named(settings, campaign_id)
    if not add_pause(session, campaign.id, by, now):
        return Paused(done=False, withdrawn=0)
    # Before the withdrawal: on PostgreSQL this waits for a plan under way (it holds
    # its patients), whose newsletters the withdrawal then sees.
    mark_everyone(session)
    planned = session.scalars(
        select(Delivery.id).where(
            Delivery.clinic_id == clinic_of(session),
            Delivery.reason == Reason.NEWSLETTER,
            Delivery.campaign_id == campaign.id,
            Delivery.state == DeliveryState.PLANNED,
        )
    ).all()
    withdrawn = transitions.withdraw(session, planned, now, WITHDRAWN_CAMPAIGN_PAUSED)
    return Paused(done=True, withdrawn=withdrawn)


def resume(session: Session, settings: Settings, campaign_id: str) -> bool:
    """Resume a paused campaign: the next worker cycle plans its newsletters again.
    False if it was not paused. A pause of a campaign that has left the campaigns
    file may still be lifted."""
    if remove_pause(session, campaign_id):
        mark_everyone(session)
        return True
    campaign_named(settings, campaign_id)  # an unknown name is a mistake, not a no-op
    return False

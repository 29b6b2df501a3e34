"""The Campaigns page: each seasonal campaign of the clinic's campaigns file, its
coming occurrences with their audience, LINE/email split and the LINE quota they
need — the numbers `tayori campaigns` prints (scheduler/outbox/campaign_control.py)
— and a button to pause or resume it, as `tayori campaign pause|resume` does."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from flask import current_app, flash, redirect, render_template
from flask.typing import ResponseReturnValue

from scheduler.core.campaigns import Campaign, ClosureTrigger, DateTrigger, SeasonTrigger
from scheduler.core.seasons import JAPANESE
from scheduler.core.window import local_date
from scheduler.outbox.campaign_control import (
    ComingOccurrence,
    UnknownCampaign,
    outlook,
    pause,
    resume,
)
from scheduler.store.db import reading, transaction
from scheduler.store.desk import audit
from scheduler.store.paused_campaigns import Pause, pauses
from scheduler.web.app import clock_of, log_facts
from scheduler.web.desk import desk, desk_route
from scheduler.web.desk.labels import desk_date, desk_datetime

log = logging.getLogger(__name__)

# As far ahead as `tayori campaigns` looks without --year.
HORIZON = timedelta(days=365)


@dataclass(frozen=True)
class OccurrenceRow:
    day: str
    audience: int
    line: int
    email: int
    line_left: int | None
    line_over: int


@dataclass(frozen=True)
class CampaignView:
    id: str
    trigger: str
    pacing: str
    state: str  # "on", "paused" (here or by the command), "off" (in the campaigns file)
    paused_at: str | None
    paused_by: str | None
    planned: int  # its newsletters in the outbox now, waiting to go
    occurrences: list[OccurrenceRow]


@desk_route("/campaigns")
def campaigns(clinic: str | None) -> ResponseReturnValue:
    here = desk()
    settings = here.settings
    now = clock_of(current_app).now()
    today = local_date(now, settings.timezone)
    with reading(here.runtime.sessions) as db:
        seen = outlook(db, settings, today, today + HORIZON, now)
        paused = pauses(db)
    views = [
        _view(
            campaign,
            paused.get(campaign.id),
            seen.planned.get(campaign.id, 0),
            seen.occurrences,
            now,
            settings.timezone,
        )
        for campaign in settings.campaigns
    ]
    return render_template(
        "desk/campaigns.html",
        desk=here,
        campaigns=views,
        quota=seen.quota,
        until=desk_date(today + HORIZON, today),
    )


def _view(
    campaign: Campaign,
    paused: Pause | None,
    planned: int,
    coming: list[ComingOccurrence],
    now: datetime,
    tz: ZoneInfo,
) -> CampaignView:
    today = local_date(now, tz)
    state = "off" if not campaign.enabled else "paused" if paused is not None else "on"
    return CampaignView(
        id=campaign.id,
        trigger=_trigger(campaign),
        pacing=f"{campaign.pacing.spread_days}日間に分けて、1時間に{campaign.pacing.per_hour}通まで",
        state=state,
        paused_at=desk_datetime(paused.at, tz, now) if paused is not None else None,
        paused_by=(paused.by or "コマンド") if paused is not None else None,
        planned=planned,
        occurrences=[
            OccurrenceRow(
                day=desk_date(c.forecast.occurrence.day, today),
                audience=c.forecast.audience,
                line=c.forecast.by_line,
                email=c.forecast.by_email,
                line_left=c.line_left,
                line_over=c.line_over,
            )
            for c in coming
            if c.forecast.campaign.id == campaign.id
        ],
    )


def _trigger(campaign: Campaign) -> str:
    """When the campaign is sent, in plain Japanese."""
    trigger = campaign.trigger
    at = f"{trigger.at:%H:%M}から"
    if isinstance(trigger, DateTrigger):
        return f"毎年{trigger.month}月{trigger.day}日 {at}"
    if isinstance(trigger, SeasonTrigger):
        anchor = "・".join(JAPANESE[moment] for moment in trigger.moments)
    else:
        assert isinstance(trigger, ClosureTrigger)
        anchor = f"「{trigger.closure}」の初日"
    return f"{anchor}{_offset(trigger.offset_days)} {at}"


def _offset(days: int) -> str:
    if days == 0:
        return ""
    return f"の{abs(days)}日{'後' if days > 0 else '前'}"


@desk_route("/campaigns/<campaign_id>/pause", methods=("POST",))
def pause_campaign(clinic: str | None, campaign_id: str) -> ResponseReturnValue:
    """Pause a campaign: its planned newsletters are withdrawn at once (through the
    outbox's `withdraw` transition), recorded in the desk's audit log."""
    here = desk()
    assert here.user_id is not None  # guard: every page but the sign-in needs one
    now = clock_of(current_app).now()
    try:
        with transaction(here.runtime.sessions) as db:
            paused = pause(db, here.settings, campaign_id, here.user_id, now)
            if paused.done:
                withdrawn = f"{paused.withdrawn} planned newsletters withdrawn"
                detail = f"campaign {campaign_id} paused; {withdrawn}"
                audit(db, here.user_id, "campaign_pause", detail, now)
    except UnknownCampaign:
        flash("このキャンペーンは見つかりませんでした。", "problem")
        return redirect(here.url("/campaigns"))
    if paused.done:
        log.info(
            "desk: account %s paused campaign %s (%d planned withdrawn)",
            here.user_id,
            campaign_id,
            paused.withdrawn,
            extra=log_facts(here.runtime),
        )
        flash(
            f"{campaign_id} を停止しました。"
            f"予定していたお便り {paused.withdrawn} 件を取りやめました。",
            "done",
        )
    else:
        flash(f"{campaign_id} はすでに停止中です。", "done")
    return redirect(here.url("/campaigns"))


@desk_route("/campaigns/<campaign_id>/resume", methods=("POST",))
def resume_campaign(clinic: str | None, campaign_id: str) -> ResponseReturnValue:
    """Resume a paused campaign: the next worker cycle plans its newsletters again."""
    here = desk()
    assert here.user_id is not None
    now = clock_of(current_app).now()
    try:
        with transaction(here.runtime.sessions) as db:
            resumed = resume(db, here.settings, campaign_id)
            if resumed:
                audit(db, here.user_id, "campaign_resume", f"campaign {campaign_id} resumed", now)
    except UnknownCampaign:
        flash("このキャンペーンは見つかりませんでした。", "problem")
        return redirect(here.url("/campaigns"))
    if resumed:
        log.info(
            "desk: account %s resumed campaign %s",
            here.user_id,
            campaign_id,
            extra=log_facts(here.runtime),
        )
        flash(f"{campaign_id} を再開しました。次の送信処理で、お便りが予定に戻ります。", "done")
    else:
        flash(f"{campaign_id} は停止していません。", "done")
    return redirect(here.url("/campaigns"))

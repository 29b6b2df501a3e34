"""The clinic's paused campaigns (table `paused_campaigns`).

A campaign lives in the clinic's campaigns file; the desk cannot edit that file, so
a pause is a row here. The planner treats a paused campaign as disabled
(`scheduler.outbox.newsletters.campaigns_in_force`); pausing and resuming, with
what they do to the outbox, are in `scheduler.outbox.campaign_pauses`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from scheduler.store.clinics import clinic_of
from scheduler.store.db import upsert_insert
from scheduler.store.models import DeskUser, PausedCampaign


@dataclass(frozen=True)
class Pause:
    campaign_id: str
    at: datetime
    by: str | None  # the desk account's email; None: the command line


def paused_ids(session: Session) -> frozenset[str]:
    """The ids of the clinic's paused campaigns."""
    return frozenset(
        session.scalars(
            select(PausedCampaign.campaign_id).where(PausedCampaign.clinic_id == clinic_of(session))
        )
    )


def pauses(session: Session) -> dict[str, Pause]:
    """The clinic's paused campaigns, by id, with who paused them and when."""
    rows = session.execute(
        select(PausedCampaign.campaign_id, PausedCampaign.paused_at, DeskUser.email)
        .outerjoin(DeskUser, DeskUser.id == PausedCampaign.paused_by)
        .where(PausedCampaign.clinic_id == clinic_of(session))
    )
    return {campaign_id: Pause(campaign_id, at, email) for campaign_id, at, email in rows}


def add_pause(session: Session, campaign_id: str, by: int | None, now: datetime) -> bool:
    """Record the campaign as paused; False if it was paused already (by anyone: two
    people pressing the button at once make one pause)."""
    statement = (
        upsert_insert(session, PausedCampaign)
        .values(clinic_id=clinic_of(session), campaign_id=campaign_id, paused_by=by, paused_at=now)
        .on_conflict_do_nothing(index_elements=["clinic_id", "campaign_id"])
        .returning(PausedCampaign.campaign_id)
    )
    # RETURNING, not the row count, which the drivers do not report alike here.
    return session.execute(statement).first() is not None


def remove_pause(session: Session, campaign_id: str) -> bool:
    """The campaign is no longer paused; False if it was not."""
    result = session.execute(
        delete(PausedCampaign).where(
            PausedCampaign.clinic_id == clinic_of(session),
            PausedCampaign.campaign_id == campaign_id,
        )
    )
    return bool(getattr(result, "rowcount", 0))

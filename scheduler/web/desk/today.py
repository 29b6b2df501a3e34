"""The Today page (the desk's home): the daily digest as a page, read at the moment
it is opened — what goes out today and tomorrow, what failed and why (each with a
button to queue it again), who lapsed, who has been acute for long, and LINE's
quota this month. It reads through the digest (scheduler/messages/digest.py) and
the outbox's report (scheduler/outbox/report.py), the same numbers as `tayori
digest` and `tayori status`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from flask import current_app, flash, redirect, render_template
from flask.typing import ResponseReturnValue

from scheduler.core.domain import ChannelName, Reason, member
from scheduler.core.window import at_local, local_date
from scheduler.messages.context import REASON_LABELS, japanese_date
from scheduler.messages.digest import PatientNote, build_digest, planned_by_reason_and_channel
from scheduler.outbox.manual import requeue
from scheduler.outbox.report import DeliveryLine, status
from scheduler.store.db import DatabaseClock, reading, transaction
from scheduler.store.desk import audit
from scheduler.web.app import clock_of, log_facts
from scheduler.web.desk import desk, desk_route
from scheduler.web.desk.labels import (
    CHANNEL_LABELS,
    Named,
    Said,
    desk_datetime,
    patients_named,
    why_not_sent,
)

log = logging.getLogger(__name__)

FAILURES_SHOWN = 20


@dataclass(frozen=True)
class PlannedRow:
    label: str
    by_channel: dict[ChannelName, int]

    @property
    def total(self) -> int:
        return sum(self.by_channel.values())


@dataclass(frozen=True)
class Failure:
    id: str
    patient: Named
    label: str
    channel: str
    at: str
    error: Said


@dataclass(frozen=True)
class Noted:
    """A patient of the lapsed or long-acute lists."""

    patient: Named
    detail: str


@desk_route("/")
def today(clinic: str | None) -> ResponseReturnValue:
    here = desk()
    settings = here.settings
    now = clock_of(current_app).now()
    tz = settings.timezone
    day = local_date(now, tz)

    def start(of: date) -> datetime:
        return at_local(of, time.min, tz)

    tomorrow_start = start(day + timedelta(days=1))
    with reading(here.runtime.sessions) as db:
        digest = build_digest(db, now, settings)
        report = status(db, now, settings, limit=FAILURES_SHOWN)
        planned_today = planned_by_reason_and_channel(db, None, tomorrow_start)
        planned_tomorrow = planned_by_reason_and_channel(
            db, tomorrow_start, start(day + timedelta(days=2))
        )
        named = patients_named(
            db,
            [f.patient for f in report.failures]
            + [n.patient for n in digest.newly_lapsed + digest.acute_for_review],
        )
    # Newsletters of a campaign occurrence whose moment has not come yet are not in
    # the outbox; the digest foresees them (its count for today includes them).
    newsletters_in_outbox = sum(
        n for (reason, _), n in planned_today.items() if reason is Reason.NEWSLETTER
    )
    newsletters_foreseen = digest.planned_today.get(Reason.NEWSLETTER, 0) - newsletters_in_outbox
    line = {
        "used": digest.line_used,
        "forecast": digest.line_forecast,
        "quota": digest.line_quota,
        "over": digest.line_quota is not None and digest.line_forecast > digest.line_quota,
    }
    return render_template(
        "desk/today.html",
        desk=here,
        clinic=settings.clinic,
        day=japanese_date(day),
        tomorrow=japanese_date(day + timedelta(days=1)),
        channels=list(CHANNEL_LABELS.items()),
        planned_today=_rows(planned_today),
        planned_tomorrow=_rows(planned_tomorrow),
        newsletters_foreseen=max(newsletters_foreseen, 0),
        sent_yesterday=[(REASON_LABELS[r], n) for r, n in digest.sent_yesterday.items()],
        failures=[_failure(failed, tz, now, named) for failed in report.failures],
        failed_total=report.counts.get("failed", 0),
        lapsed=_noted(digest.newly_lapsed, named),
        lapsed_after_days=settings.rules.cadence.lapsed_after_days,
        acute=_noted(digest.acute_for_review, named),
        review_after_days=settings.digest.review_after_days,
        line=line,
    )


def _rows(counts: dict[tuple[Reason, ChannelName], int]) -> list[PlannedRow]:
    """One row per reason, in the order of `Reason`, with its count by channel."""
    return [
        PlannedRow(
            REASON_LABELS[reason],
            {c: counts[reason, c] for c in ChannelName if (reason, c) in counts},
        )
        for reason in Reason
        if any(r is reason for r, _ in counts)
    ]


def _noted(notes: list[PatientNote], named: dict[str, Named]) -> list[Noted]:
    return [Noted(named.get(n.patient, Named(n.patient, n.name)), n.detail) for n in notes]


def _failure(line: DeliveryLine, tz: ZoneInfo, now: datetime, named: dict[str, Named]) -> Failure:
    reason = member(Reason, line.reason)
    channel = member(ChannelName, line.channel)
    return Failure(
        id=line.id,
        patient=named.get(line.patient, Named(line.patient)),
        label=REASON_LABELS[reason] if reason is not None else line.reason,
        channel=CHANNEL_LABELS[channel] if channel is not None else "—",
        at=desk_datetime(line.at, tz, now),
        error=why_not_sent(line.error),
    )


@desk_route("/deliveries/<delivery_id>/retry", methods=("POST",))
def retry(clinic: str | None, delivery_id: str) -> ResponseReturnValue:
    """Queue a failed (or skipped) delivery again, as `tayori retry` does: through
    the outbox's `requeue` transition, recorded in the desk's audit log."""
    here = desk()
    assert here.user_id is not None  # guard: every page but the sign-in needs one
    now = clock_of(current_app).now()
    refused = None
    with transaction(here.runtime.sessions) as db:
        try:
            delivery = requeue(db, delivery_id, now, DatabaseClock().read(db))
        except LookupError as e:
            refused = str(e)  # English, and names only the delivery: for the log
        else:
            audit(
                db,
                here.user_id,
                "retry",
                f"delivery {delivery_id} ({delivery.reason.value}) queued again",
                now,
            )
    facts = log_facts(here.runtime)
    if refused is not None:
        log.info("desk: account %s could not retry: %s", here.user_id, refused, extra=facts)
        flash(
            "このメッセージは再送できませんでした。すでに再送済みか、"
            "LINEで届いている可能性があります。",
            "problem",
        )
    else:
        log.info(
            "desk: account %s queued delivery %s again", here.user_id, delivery_id, extra=facts
        )
        flash("再送を受け付けました。送信できる時間帯の、次の送信処理でお送りします。", "done")
    return redirect(here.url("/"))

"""The calendar: `tayori seasons`, `tayori campaigns` and `tayori campaign pause|resume`."""

from __future__ import annotations

import argparse
import json
from datetime import date, timedelta

from scheduler.commands.common import CommandError, command_now, opened, table
from scheduler.core.closures import WEEKDAYS, closure_spans
from scheduler.core.seasons import JAPANESE, seasonal_dates
from scheduler.outbox.campaign_control import (
    ComingOccurrence,
    UnknownCampaign,
    outlook,
    pause,
    resume,
)
from scheduler.settings import Settings
from scheduler.store.db import transaction


def seasons(args: argparse.Namespace, settings: Settings) -> int:
    dates = seasonal_dates(args.year, settings.timezone)
    closures = settings.config.closures
    spans = closure_spans(args.year, closures)
    weekly = [WEEKDAYS[day] for day in sorted(closures.weekly)]
    if args.json:
        document: dict[str, object] = {
            moment.value: day.isoformat() for moment, day in dates.items()
        }
        document["closures"] = [
            {"name": s.name, "first": s.first.isoformat(), "last": s.last.isoformat()}
            for s in spans
        ]
        document["closed_weekdays"] = weekly
        print(json.dumps(document, ensure_ascii=False, indent=2))
        return 0
    rows = [[day.isoformat(), JAPANESE[moment], moment.value] for moment, day in dates.items()]
    print(table(["date", "moment", "key"], rows))
    print("\nclosed:")
    closed = [
        [s.first.isoformat(), s.last.isoformat() if s.last != s.first else "", s.name]
        for s in spans
    ]
    print(table(["from", "to", "why"], closed) if closed else "  (no closures)")
    if weekly:
        print(f"and every {', '.join(weekly)} (定休日)")
    return 0


def campaigns(args: argparse.Namespace, settings: Settings) -> int:
    now = command_now(args, settings)
    today = now.astimezone(settings.timezone).date()
    first, last = (
        (date(args.year, 1, 1), date(args.year, 12, 31))
        if args.year
        else (today, today + timedelta(days=365))
    )
    with opened(settings) as runtime, runtime.sessions() as session:
        coming = outlook(session, settings, first, last, now).occurrences
    if args.json:
        document = [
            {
                "campaign": c.forecast.campaign.id,
                "day": c.forecast.occurrence.day.isoformat(),
                "starts_at": c.forecast.occurrence.starts_at.astimezone(
                    settings.timezone
                ).isoformat(),
                "audience": c.forecast.audience,
                "line": c.forecast.by_line,
                "email": c.forecast.by_email,
                "paused": c.paused,
                "line_left_that_month": c.line_left,
                "line_over_quota": c.line_over,
            }
            for c in coming
        ]
        print(json.dumps(document, ensure_ascii=False, indent=2))
        return 0
    if not coming:
        print(f"no campaign occurrences from {first} to {last}")
        return 0

    def quota_note(c: ComingOccurrence) -> str:
        if c.paused:
            return "paused: nothing sent"
        if c.line_left is None:
            return "no limit"
        excess = f", {c.line_over} over: by email or later" if c.line_over else ""
        return f"{c.line_left} left{excess}"

    rows = [
        [
            c.forecast.occurrence.day.isoformat(),
            c.forecast.campaign.id,
            str(c.forecast.audience),
            str(c.forecast.by_line),
            str(c.forecast.by_email),
            quota_note(c),
        ]
        for c in coming
    ]
    print(table(["day", "campaign", "audience", "LINE", "email", "LINE quota"], rows))
    return 0


def campaign(args: argparse.Namespace, settings: Settings) -> int:
    """`tayori campaign pause|resume NAME`: as the desk's Campaigns page does (by no
    desk account, so the desk shows it as paused from the command line)."""
    now = command_now(args, settings)
    with opened(settings) as runtime, transaction(runtime.sessions) as session:
        try:
            if args.action == "pause":
                paused = pause(session, settings, args.name, None, now)
                changed, withdrawn = paused.done, paused.withdrawn
            else:
                changed, withdrawn = resume(session, settings, args.name), 0
        except UnknownCampaign as e:
            raise CommandError(f"{e}: {', '.join(c.id for c in settings.campaigns)}") from None
    if args.action == "pause":
        print(
            f"campaign {args.name} paused: {withdrawn} planned newsletter(s) withdrawn"
            if changed
            else f"campaign {args.name} was paused already"
        )
    else:
        print(
            f"campaign {args.name} resumed: the next worker cycle plans its newsletters"
            if changed
            else f"campaign {args.name} was not paused"
        )
    return 0

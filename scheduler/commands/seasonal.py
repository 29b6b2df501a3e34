"""The calendar: `tayori seasons` and `tayori campaigns`."""

from __future__ import annotations

import argparse
import json
from datetime import date, timedelta

from scheduler.commands.common import command_now, opened, table
from scheduler.core.closures import WEEKDAYS, closure_spans
from scheduler.core.seasons import JAPANESE, seasonal_dates
from scheduler.outbox.budget import line_quota
from scheduler.outbox.newsletters import CampaignForecast, forecast_campaigns
from scheduler.settings import Settings


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
        forecasts = forecast_campaigns(session, settings, first, last, now)
        quota = line_quota(session, now, settings.timezone, settings.config.line.monthly_quota)
    month = (today.year, today.month)

    def line_left(day: date) -> int | None:
        """LINE messages the month of `day` has room for, as far as known now."""
        return quota.left if (day.year, day.month) == month else quota.limit

    def over(forecast: CampaignForecast) -> int:
        left = line_left(forecast.occurrence.day)
        return 0 if left is None else max(forecast.by_line - left, 0)

    if args.json:
        document = [
            {
                "campaign": f.campaign.id,
                "day": f.occurrence.day.isoformat(),
                "starts_at": f.occurrence.starts_at.astimezone(settings.timezone).isoformat(),
                "audience": f.audience,
                "line": f.by_line,
                "email": f.by_email,
                "line_left_that_month": line_left(f.occurrence.day),
                "line_over_quota": over(f),
            }
            for f in forecasts
        ]
        print(json.dumps(document, ensure_ascii=False, indent=2))
        return 0
    if not forecasts:
        print(f"no campaign occurrences from {first} to {last}")
        return 0

    def quota_note(forecast: CampaignForecast) -> str:
        left = line_left(forecast.occurrence.day)
        if left is None:
            return "no limit"
        excess = over(forecast)
        return f"{left} left" + (f", {excess} over: by email or later" if excess else "")

    rows = [
        [
            f.occurrence.day.isoformat(),
            f.campaign.id,
            str(f.audience),
            str(f.by_line),
            str(f.by_email),
            quota_note(f),
        ]
        for f in forecasts
    ]
    print(table(["day", "campaign", "audience", "LINE", "email", "LINE quota"], rows))
    return 0

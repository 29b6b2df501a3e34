"""`tayori report`: the results of the messages over a period, the numbers of the
desk's Results page (scheduler/outbox/results.py says how each is counted)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from scheduler.commands.common import CommandError, command_now, opened, table
from scheduler.core.window import local_date
from scheduler.outbox.results import (
    WINDOWS,
    Outcome,
    ReasonResults,
    Results,
    default_period,
    results,
)
from scheduler.settings import Settings


def report(args: argparse.Namespace, settings: Settings) -> int:
    now = command_now(args, settings)
    first, last = default_period(local_date(now, settings.timezone))
    first, last = args.first or first, args.last or last
    if first > last:
        raise CommandError(f"--from {first} is after --to {last}")
    with opened(settings) as runtime, runtime.sessions() as session:
        found = results(session, first, last, now, settings.timezone)
    if args.json:
        print(json.dumps(as_json(found), ensure_ascii=False, indent=2))
        return 0
    print(
        f"results of the messages sent {first} to {last}: followed by a booking or a visit "
        f"within {' / '.join(str(d) for d in WINDOWS)} days (counted once the days have passed)"
    )
    if not found.reasons:
        print("  (no messages in this period)")
        return 0
    headers = ["reason", "template", "channel", "messages"]
    headers += [f"within {d} days" for d in WINDOWS] + ["link pressed"]
    rows = []
    for reason in found.reasons:
        for group in reason.groups:
            rows.append(
                [
                    reason.reason.value,
                    group.template,
                    group.channel.value if group.channel else "-",
                    *_cells(group.outcome),
                    f"{group.clicked} ({group.clicks} presses)",
                ]
            )
        if reason.unmessaged.count:
            why = f"no consent {reason.no_consent}, no contact {reason.no_contact}"
            rows.append(
                [
                    reason.reason.value,
                    f"could not be messaged ({why})",
                    "-",
                    *_cells(reason.unmessaged),
                    "-",
                ]
            )
    print(table(headers, rows))
    return 0


def _cells(outcome: Outcome) -> list[str]:
    cells = [str(outcome.count)]
    for days in WINDOWS:
        window = outcome.window(days)
        rate = f" {window.rate:.0%}" if window.rate is not None else ""
        cells.append(f"{window.responded}/{window.observed}{rate}")
    return cells


def as_json(found: Results) -> dict[str, Any]:
    return {
        "from": found.first.isoformat(),
        "to": found.last.isoformat(),
        "now": found.now.isoformat(),
        "reasons": [_reason(r) for r in found.reasons],
    }


def _reason(reason: ReasonResults) -> dict[str, Any]:
    return {
        "reason": reason.reason.value,
        "sent": {**_outcome(reason.sent), "clicks": reason.clicks, "clicked": reason.clicked},
        "by_template_and_channel": [
            {
                "template": g.template,
                "channel": g.channel.value if g.channel else None,
                **_outcome(g.outcome),
                "clicks": g.clicks,
                "clicked": g.clicked,
            }
            for g in reason.groups
        ],
        "could_not_be_messaged": {
            **_outcome(reason.unmessaged),
            "no_consent": reason.no_consent,
            "no_contact": reason.no_contact,
        },
    }


def _outcome(outcome: Outcome) -> dict[str, Any]:
    return {
        "messages": outcome.count,
        **{
            f"within_{w.days}_days": {"observed": w.observed, "booked_or_visited": w.responded}
            for w in outcome.windows
        },
    }

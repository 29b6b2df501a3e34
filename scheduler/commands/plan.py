"""`tayori plan`: what the worker would send in the coming days, as a table or JSON.

Apart from the outbox's other commands (outbox.py), among them `send-test`, whose
manual sending imports the renderer: a dry run renders nothing, and a whole clinic's
is the largest plan a command holds in memory, so its process does without Jinja2
(tests/integration/test_cli.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from json.encoder import encode_basestring
from zoneinfo import ZoneInfo

from scheduler.commands.common import command_now, local, opened, quota_line, table
from scheduler.core.domain import ChannelName
from scheduler.outbox.budget import line_quota
from scheduler.outbox.planner import PlannedMessage, dry_run
from scheduler.settings import Settings
from scheduler.store.paused_campaigns import paused_ids


def print_json_array(items: Iterable[Mapping[str, object]]) -> None:
    """Print what `json.dumps(list(items), ensure_ascii=False, indent=2)` would, an
    item at a time: a whole clinic's dry run is tens of thousands of them, and the
    whole text at once would hold tens of megabytes."""
    before = "["  # what comes before the next item
    for item in items:
        sys.stdout.write(before + "\n  " + _indented_object(item))
        before = ","
    print("[]" if before == "[" else "\n]")


def _indented_object(item: Mapping[str, object]) -> str:
    """`json.dumps(item, ensure_ascii=False, indent=2)`, indented one level more.

    An object of plain values (a dry run's every message) is put together here: with
    `indent`, json encodes in Python rather than C, a second for a clinic's week."""
    fields = []
    for key, value in item.items():
        if isinstance(value, str):
            text = encode_basestring(value)
        elif value is None or isinstance(value, bool | int):
            text = json.dumps(value)
        else:
            return json.dumps(item, ensure_ascii=False, indent=2).replace("\n", "\n  ")
        fields.append(f"    {encode_basestring(key)}: {text}")
    return "{\n" + ",\n".join(fields) + "\n  }" if fields else "{}"


def planned_items(
    messages: Iterable[PlannedMessage], tz: ZoneInfo, *, keys: bool
) -> Iterator[dict[str, object]]:
    """The dry run's messages as `plan --json` prints them."""
    # A clinic's week has a few hundred send moments for tens of thousands of messages.
    local_times: dict[datetime, str] = {}
    for m in messages:
        send_at = local_times.get(m.send_at)
        if send_at is None:
            send_at = local_times[m.send_at] = m.send_at.astimezone(tz).isoformat()
        item: dict[str, object] = {
            "patient": m.patient,
            "reason": m.reason,
            "channel": m.channel.value,
            "send_at": send_at,
            "template": m.template,
        }
        if keys:
            item["key"] = m.key
        if m.held:
            item["held"] = True
        yield item


def plan(args: argparse.Namespace, settings: Settings) -> int:
    now = command_now(args, settings)
    with opened(settings) as runtime, runtime.sessions() as session:
        until = now + timedelta(days=args.days)
        messages = dry_run(session, now, until, settings.rules, settings)
        quota = line_quota(session, now, settings.timezone, settings.config.line.monthly_quota)
        paused = sorted(paused_ids(session))
    # Said in the text only: the JSON stays a list of messages.
    paused_note = f"paused, so none of their newsletters: {', '.join(paused)}" if paused else ""
    if args.json:
        print_json_array(planned_items(messages, settings.timezone, keys=args.keys))
        return 0
    if not messages:
        print(f"nothing to send in the next {args.days} day(s)")
        if paused_note:
            print(paused_note)
        return 0
    print(
        table(
            ["send at", "patient", "reason", "channel", "template"]
            + (["key"] if args.keys else []),
            [
                [
                    local(m.send_at, settings),
                    m.patient,
                    m.reason + (" (held)" if m.held else ""),
                    m.channel.value,
                    m.template,
                ]
                + ([m.key] if args.keys else [])
                for m in messages
            ],
        )
    )
    by_line = sum(m.channel is ChannelName.LINE for m in messages)
    print(f"\n{by_line} of these by LINE. {quota_line(quota, settings)}")
    if paused_note:
        print(paused_note)
    return 0

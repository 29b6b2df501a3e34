"""The outbox: `tayori plan`, `status`, `send-test`, `retry`, `hold` and `unhold`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from json.encoder import encode_basestring
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from scheduler.commands.common import CommandError, command_now, local, opened, quota_line, table
from scheduler.core.domain import ChannelName, Reason
from scheduler.outbox import transitions
from scheduler.outbox.budget import line_quota
from scheduler.outbox.manual import parse_key, requeue, send_sample
from scheduler.outbox.planner import PlannedMessage, dry_run
from scheduler.outbox.report import DeliveryLine
from scheduler.outbox.report import status as outbox_status
from scheduler.settings import Settings
from scheduler.store import db
from scheduler.store.clinics import clinic_of
from scheduler.store.models import Delivery
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
    # A clinic's week has a few thousand send moments for tens of thousands of messages.
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


def status(args: argparse.Namespace, settings: Settings) -> int:
    now = command_now(args, settings)
    with opened(settings) as runtime, runtime.sessions() as session:
        report = outbox_status(session, now, settings)
    print("deliveries: " + ", ".join(f"{n} {state}" for state, n in report.counts.items()))
    if report.held_by_hand:
        print(f"{report.held_by_hand} of the planned held by hand: not sent until `tayori unhold`")
    print(quota_line(report.line_quota, settings))
    # Here, not at the top: lint checks LINE messages with the LINE SDK, whose import
    # would slow down every command of this module.
    from scheduler.messages.lint import lint_messages

    for problem in lint_messages(settings, now).problems:
        print(f"template problem: {problem}")
    for hold in report.holds:
        until = f" until {local(hold.until, settings)}" if hold.until else ""
        print(
            f"{hold.channel.value} held since {local(hold.since, settings)}{until}: {hold.reason}"
        )

    def lines(items: list[DeliveryLine], with_error: bool) -> str:
        headers = ["when", "patient", "reason", "channel", "delivery"]
        rows = [
            [local(d.at, settings), d.patient, d.reason, d.channel, d.id]
            + ([d.error or ""] if with_error else [])
            for d in items
        ]
        return table(headers + (["note"] if with_error else []), rows)

    print("\nnext due:")
    print(lines(report.next_due, True) if report.next_due else "  (nothing planned)")
    print("\nfailures:")
    print(lines(report.failures, True) if report.failures else "  (none)")
    return 0


def send_test(args: argparse.Namespace, settings: Settings) -> int:
    now = command_now(args, settings)
    channel = ChannelName(args.channel)
    with opened(settings) as runtime:
        try:
            delivery_id, outcome = send_sample(runtime, args.to, Reason(args.reason), channel, now)
        except LookupError as e:
            raise CommandError(str(e)) from None
        with runtime.sessions() as session:
            delivery = session.get_one(Delivery, delivery_id)
            error = delivery.last_error
    print(
        f"{args.reason} to {args.to} by {channel.value}: {outcome}"
        + (f" ({error})" if error else "")
    )
    print(f"delivery {delivery_id}")
    return 0 if outcome == "sent" else 1


def retry(args: argparse.Namespace, settings: Settings) -> int:
    now = command_now(args, settings)
    with opened(settings) as runtime, db.transaction(runtime.sessions) as session:
        try:
            delivery = requeue(session, args.delivery, now, db.DatabaseClock().read(session))
        except LookupError as e:
            raise CommandError(str(e)) from None
        when = local(delivery.send_after, settings)
    print(f"delivery {args.delivery} queued again: it goes with the next cycle ({when})")
    return 0


def hold(args: argparse.Namespace, settings: Settings) -> int:
    now = command_now(args, settings)
    with opened(settings) as runtime, db.transaction(runtime.sessions) as session:
        key = _message_key(session, args.message)
        try:
            held = transitions.hold(session, key, now, held_by=None)
        except transitions.HoldRefused as e:
            raise CommandError(str(e)) from None
    print(
        f"message {key} held: it is not sent until `tayori unhold`"
        if held
        else f"message {key} was held already"
    )
    return 0


def unhold(args: argparse.Namespace, settings: Settings) -> int:
    with opened(settings) as runtime, db.transaction(runtime.sessions) as session:
        key = _message_key(session, args.message)
        if not transitions.unhold(session, key):
            raise CommandError(f"message {key} is not held")
    print(f"message {key} released: it goes when it is due")
    return 0


def _message_key(session: Session, message: str) -> str:
    """The key of a message named by its key or by its delivery's id."""
    delivery = session.get(Delivery, message)
    if delivery is not None and delivery.clinic_id == clinic_of(session):
        return delivery.idempotency_key
    try:
        parse_key(message)
    except ValueError:
        raise CommandError(
            f"{message!r} is neither a delivery of this clinic nor a message's key "
            "(see `tayori plan --keys`)"
        ) from None
    return message

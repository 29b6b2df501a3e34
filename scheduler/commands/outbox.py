"""The outbox: `tayori status`, `send-test`, `retry`, `hold` and `unhold`."""

from __future__ import annotations

import argparse

from sqlalchemy.orm import Session

from scheduler.commands.common import CommandError, command_now, local, opened, quota_line, table
from scheduler.core.domain import ChannelName, Reason
from scheduler.outbox import transitions
from scheduler.outbox.manual import parse_key, requeue, send_sample
from scheduler.outbox.report import DeliveryLine
from scheduler.outbox.report import status as outbox_status
from scheduler.settings import Settings
from scheduler.store import db
from scheduler.store.clinics import clinic_of
from scheduler.store.models import Delivery


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

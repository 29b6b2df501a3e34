"""The Upcoming page: the next 30 days of messages to patients, by day, as `tayori
plan --days 30` lists them (the planner's dry run), filterable by reason and
channel. Each message can be held (the worker then leaves it in the outbox until it
is released) or sent to the signed-in staff member's own email address, composed for
its patient, to read it as the patient would."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from enum import Enum
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from flask import current_app, flash, redirect, render_template, request
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import Session

from scheduler.channels import DeliveryError
from scheduler.core.domain import ChannelName, Reason, member
from scheduler.core.window import local_date
from scheduler.messages.context import REASON_LABELS, japanese_date
from scheduler.messages.templates import TemplateError
from scheduler.outbox import transitions
from scheduler.outbox.manual import parse_key, send_copy
from scheduler.outbox.planner import PlannedMessage, dry_run
from scheduler.store.clinics import clinic_of
from scheduler.store.db import reading, transaction
from scheduler.store.desk import audit
from scheduler.store.models import Patient
from scheduler.web.app import clock_of, log_facts
from scheduler.web.desk import desk, desk_route
from scheduler.web.desk.labels import CHANNEL_LABELS, patients_named

log = logging.getLogger(__name__)

DAYS = 30
# A page of a few thousand forms is slow on a phone and unreadable anyway: past this
# many, the page asks for a narrower filter.
SHOWN = 200
REASONS = [r for r in Reason if r is not Reason.DAILY_DIGEST]


@dataclass(frozen=True)
class Item:
    key: str
    time: str
    label: str
    channel: str
    patient: str
    name: str
    held: bool
    patient_id: int | None = None  # the row id of the patient's page


@dataclass(frozen=True)
class Day:
    label: str
    items: list[Item]


@dataclass(frozen=True)
class Filters:
    reason: Reason | None
    channel: ChannelName | None
    day: date | None = None  # the clinic's day

    @classmethod
    def read(cls, values: dict[str, str]) -> Filters:
        """From the query or a form; an unknown value is no filter."""
        reason = member(Reason, values.get("reason", ""))
        try:
            day: date | None = date.fromisoformat(values.get("day", ""))
        except ValueError:
            day = None
        return cls(
            reason if reason in REASONS else None,
            member(ChannelName, values.get("channel", "")),
            day,
        )

    def keeps(self, message: PlannedMessage, tz: ZoneInfo) -> bool:
        return (
            (self.reason is None or message.reason == self.reason.value)
            and (self.channel is None or message.channel is self.channel)
            and (self.day is None or local_date(message.send_at, tz) == self.day)
        )

    @property
    def any(self) -> bool:
        return any(value is not None for value in (self.reason, self.channel, self.day))

    def query(self) -> str:
        chosen = (("reason", self.reason), ("channel", self.channel), ("day", self.day))
        values = {
            name: value.value if isinstance(value, Enum) else value.isoformat()
            for name, value in chosen
            if value is not None
        }
        return f"?{urlencode(values)}" if values else ""


@desk_route("/upcoming")
def upcoming(clinic: str | None) -> ResponseReturnValue:
    here = desk()
    settings = here.settings
    tz = settings.timezone
    now = clock_of(current_app).now()
    filters = Filters.read(request.args.to_dict())
    with reading(here.runtime.sessions) as db:
        planned = dry_run(db, now, now + timedelta(days=DAYS), settings.rules, settings)
        kept = [m for m in planned if filters.keeps(m, tz)]
        shown = kept[:SHOWN]
        names = patients_named(db, [m.patient for m in shown])
    days: dict[date, list[Item]] = {}
    for m in shown:
        reason = member(Reason, m.reason)
        days.setdefault(local_date(m.send_at, tz), []).append(
            Item(
                key=m.key,
                time=f"{m.send_at.astimezone(tz):%H:%M}",
                label=REASON_LABELS[reason] if reason is not None else m.reason,
                channel=CHANNEL_LABELS[m.channel],
                patient=m.patient,
                name=names[m.patient].name or "" if m.patient in names else "",
                held=m.held,
                patient_id=names[m.patient].id if m.patient in names else None,
            )
        )
    return render_template(
        "desk/upcoming.html",
        desk=here,
        days=[Day(japanese_date(day), items) for day, items in days.items()],
        total=len(kept),
        held=sum(m.held for m in kept),
        shown=len(shown),
        span_days=DAYS,
        until=japanese_date(local_date(now, tz) + timedelta(days=DAYS)),
        filters=filters,
        reasons=[(r.value, REASON_LABELS[r]) for r in REASONS],
        channels=[(c.value, label) for c, label in CHANNEL_LABELS.items()],
        dates=[
            (day.isoformat(), japanese_date(day))
            for day in (local_date(now, tz) + timedelta(days=n) for n in range(DAYS + 1))
        ],
    )


def _back(filters: Filters) -> ResponseReturnValue:
    return redirect(desk().url("/upcoming") + filters.query())


def _key_of_this_clinic(db: Session) -> str | None:
    """The form's message key, if it names a message to one of this clinic's patients."""
    key = request.form.get("key", "")
    try:
        parts = parse_key(key)
    except ValueError:
        return None
    patient = db.get(Patient, parts.patient_id)
    return key if patient is not None and patient.clinic_id == clinic_of(db) else None


NOT_FOUND = "このメッセージは見つかりませんでした。"


@desk_route("/upcoming/hold", methods=("POST",))
def hold(clinic: str | None) -> ResponseReturnValue:
    """Hold a coming message: the worker leaves it unsent until it is released."""
    here = desk()
    assert here.user_id is not None  # guard: every page but the sign-in needs one
    filters = Filters.read(request.form.to_dict())
    now = clock_of(current_app).now()
    outcome = "held"
    with transaction(here.runtime.sessions) as db:
        key = _key_of_this_clinic(db)
        if key is None:
            outcome = "unknown"
        else:
            try:
                if transitions.hold(db, key, now, here.user_id):
                    audit(db, here.user_id, "hold", f"message {key} held", now)
                else:
                    outcome = "already"
            except transitions.HoldRefused:
                outcome = "refused"
    log.info(
        "desk: account %s asked to hold a message: %s",
        here.user_id,
        outcome,
        extra=log_facts(here.runtime),
    )
    messages = {
        "held": ("保留しました。解除するまでお送りしません。", "done"),
        "already": ("このメッセージはすでに保留中です。", "done"),
        "refused": ("このメッセージは送信中か送信済みのため、保留できませんでした。", "problem"),
        "unknown": (NOT_FOUND, "problem"),
    }
    flash(*messages[outcome])
    return _back(filters)


@desk_route("/upcoming/release", methods=("POST",))
def release(clinic: str | None) -> ResponseReturnValue:
    """Let a held message go: at its planned time, or with the next sending if that
    has passed."""
    here = desk()
    assert here.user_id is not None
    filters = Filters.read(request.form.to_dict())
    now = clock_of(current_app).now()
    with transaction(here.runtime.sessions) as db:
        key = _key_of_this_clinic(db)
        released = key is not None and transitions.unhold(db, key)
        if released:
            audit(db, here.user_id, "release", f"message {key} released", now)
    log.info(
        "desk: account %s asked to release a held message: %s",
        here.user_id,
        "released" if released else "not held",
        extra=log_facts(here.runtime),
    )
    if released:
        flash(
            "保留を解除しました。予定の時刻に（過ぎていれば、次の送信処理で）お送りします。",
            "done",
        )
    else:
        flash("このメッセージは保留されていませんでした。", "problem")
    return _back(filters)


@desk_route("/upcoming/send-to-me", methods=("POST",))
def send_to_me(clinic: str | None) -> ResponseReturnValue:
    """Send a coming message, composed for its patient, to the signed-in staff
    member's own address, never to the patient."""
    here = desk()
    assert here.user_id is not None and here.user_email is not None
    filters = Filters.read(request.form.to_dict())
    now = clock_of(current_app).now()
    with reading(here.runtime.sessions) as db:
        key = _key_of_this_clinic(db)
    facts = log_facts(here.runtime)
    if key is None:
        flash(NOT_FOUND, "problem")
        return _back(filters)
    try:
        copy_id = send_copy(here.runtime, key, here.user_email, now)
    except (LookupError, TemplateError, DeliveryError) as e:
        # Ours name ids only, a template's its file and line; a mail server's answer
        # may quote the address, so only its kind is logged.
        why = f"the mail server refused ({e.failure.value})" if isinstance(e, DeliveryError) else e
        log.warning("desk: a copy for account %s was not sent: %s", here.user_id, why, extra=facts)
        flash(
            "確認用のメールを送れませんでした。テンプレートかメールの設定をご確認ください。",
            "problem",
        )
        return _back(filters)
    with transaction(here.runtime.sessions) as db:
        detail = f"message {key} sent as {copy_id} to the account's own address"
        audit(db, here.user_id, "send_to_me", detail, now)
    log.info("desk: account %s was sent copy %s", here.user_id, copy_id, extra=facts)
    if here.settings.smtp is None:
        flash(
            "メールの送信設定（SMTP）がないため、確認用のメールはプレビュー用のフォルダに保存しました。",
            "done",
        )
    else:
        flash(f"{here.user_email} 宛てに確認用のメールをお送りしました。", "done")
    return _back(filters)

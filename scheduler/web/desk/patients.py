"""The Patients pages: find a patient by number or name; a patient's page with their
phase and own cadence (and its history), consent (and its history), contacts, LINE
linked or not with a printable link code, what is planned for them and the log of
their messages. A change of phase or cadence is recorded as `tayori patient set`
records it (`record_cadence`, source `desk`) and the patient is planned again in the
same request, so the coming messages the page shows are already the new ones.

Patients are addressed by their row id, not their number: a clinic's numbers may
hold any character, a slash included, which no path segment could carry."""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from flask import abort, current_app, flash, redirect, render_template, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.commands.linking import card_of, card_page
from scheduler.core.domain import ConsentKind, DeliveryState, Phase, Reason, member
from scheduler.messages.context import PHASE_LABELS, REASON_LABELS
from scheduler.outbox.planner import PlanResult, plan_patient
from scheduler.outbox.transitions import held_keys
from scheduler.store.clinics import clinic_of
from scheduler.store.consent import ConsentSource, record_consent
from scheduler.store.db import reading, transaction
from scheduler.store.desk import audit
from scheduler.store.linking import issue_code
from scheduler.store.models import Delivery, LinkCode, Patient
from scheduler.store.patients import CADENCE_DAYS, record_cadence, search_patients, view_patient
from scheduler.web.app import clock_of, log_facts
from scheduler.web.desk import desk, desk_route
from scheduler.web.desk.labels import (
    CHANNEL_LABELS,
    HELD_LABEL,
    STATE_LABELS,
    Said,
    desk_datetime,
    source_label,
    why_not_sent,
)

log = logging.getLogger(__name__)

PAGE_SIZE = 30  # search results per page: a phone's few screens
LOG_SHOWN = 50  # the newest messages of a patient's log on their page
NO_PHASE = "none"  # the form's value for "no phase: no cadence messages"
CONSENT_LABELS = {
    ConsentKind.REMINDERS: "来院のおすすめ・予約のお知らせ",
    ConsentKind.NEWSLETTER: "季節のお便り",
}


@dataclass(frozen=True)
class Found:
    id: int
    external_id: str
    name: str
    phase: str
    forgotten: bool


@dataclass(frozen=True)
class Change:
    """A line of a history (phase and cadence, or consent)."""

    at: str
    what: str
    source: str


@dataclass(frozen=True)
class Message:
    at: str
    label: str
    channel: str
    state: str
    error: Said | None
    problem: bool
    held: bool = False  # held by hand on the Upcoming page: still planned, not sent


@desk_route("/patients")
def patients(clinic: str | None) -> ResponseReturnValue:
    here = desk()
    text = request.args.get("q", "")[:100]
    page = _page_number(request.args.get("page", "1"))
    with reading(here.runtime.sessions) as db:
        rows = search_patients(db, text, PAGE_SIZE + 1, (page - 1) * PAGE_SIZE)
        found = [
            Found(
                p.id,
                p.external_id,
                p.name,
                PHASE_LABELS[p.phase] if p.phase else "フェーズなし",
                p.forgotten_at is not None,
            )
            for p in rows[:PAGE_SIZE]
        ]
    return render_template(
        "desk/patients.html",
        desk=here,
        q=text,
        page=page,
        found=found,
        more=len(rows) > PAGE_SIZE,
        page_size=PAGE_SIZE,
    )


def _page_number(value: str) -> int:
    return int(value) if value.isdigit() and 0 < int(value) < 10_000 else 1


@desk_route("/patients/<patient_id>")
def patient(clinic: str | None, patient_id: str) -> ResponseReturnValue:
    here = desk()
    settings = here.settings
    tz = settings.timezone
    now = clock_of(current_app).now()
    with reading(here.runtime.sessions) as db:
        found = _patient(db, patient_id)
        view = view_patient(db, found, now, settings.rules)
        code = db.get(LinkCode, found.id)
        usable_code = code is not None and code.used_at is None and code.expires_at > now
        history = sorted(view.history, key=lambda d: (d.sent_at or d.updated_at, d.id))
        held = held_keys(db)

        def when(moment: datetime) -> str:  # with its year, unless it is this year's
            return desk_datetime(moment, tz, now)

        context = {
            "patient": found,
            "phase": PHASE_LABELS[found.phase] if found.phase else None,
            "phases": [(p.value, PHASE_LABELS[p]) for p in Phase],
            "no_phase": NO_PHASE,
            "cadence": view.cadence,
            "nudge_source": _source(view.cadence.nudge_source) if view.cadence else None,
            "follow_up_source": _source(view.cadence.follow_up_source) if view.cadence else None,
            "days": CADENCE_DAYS,
            "last_visit": when(view.last_visit) if view.last_visit else None,
            "lapsed": view.lapsed,
            "consent": [
                (k.value, CONSENT_LABELS[k], granted) for k, granted in view.consent.items()
            ],
            "consent_history": [
                Change(
                    when(c.changed_at),
                    f"{CONSENT_LABELS[c.kind]}：{'同意' if c.granted else '同意なし'}",
                    source_label(c.source),
                )
                for c in reversed(view.consent_history)
            ],
            "cadence_history": [
                Change(
                    when(c.changed_at),
                    _cadence_text(c.phase, c.nudge_after_days, c.follow_up_days),
                    source_label(c.source),
                )
                for c in reversed(view.cadence_history)
            ],
            "channel": CHANNEL_LABELS[found.preferred_channel],
            "linked_at": when(found.line_linked_at) if found.line_linked_at else None,
            "forgotten_at": when(found.forgotten_at) if found.forgotten_at else None,
            "code_expires": when(code.expires_at) if code is not None and usable_code else None,
            "basic_id": settings.config.line.basic_id,
            "upcoming": [_message(d, tz, now, held) for d in view.upcoming],
            "log": [_message(d, tz, now, held) for d in reversed(history[-LOG_SHOWN:])],
            "log_total": len(history),
        }
    return render_template("desk/patient.html", desk=here, **context)


def _patient(db: Session, patient_id: str) -> Patient:
    """The clinic's patient of this row id; 404 for any other (another clinic's too)."""
    if not patient_id.isdigit() or len(patient_id) > 18:
        abort(404)
    found = db.scalar(
        select(Patient).where(Patient.id == int(patient_id), Patient.clinic_id == clinic_of(db))
    )
    if found is None:
        abort(404)
    return found


def _source(source: str) -> str:
    return "個別の設定" if source == "patient" else "フェーズの標準"


def _cadence_text(phase: Phase | None, nudge: int | None, follow_up: int | None) -> str:
    name = PHASE_LABELS[phase] if phase else "フェーズなし"
    own = []
    if nudge:
        own.append(f"おすすめ {nudge}日後")
    if follow_up:
        own.append(f"再送 {follow_up}日後")
    return f"{name}（{'、'.join(own)}）" if own else name


def _message(delivery: Delivery, tz: ZoneInfo, now: datetime, held: Collection[str]) -> Message:
    reason = member(Reason, delivery.reason)
    planned = delivery.state is DeliveryState.PLANNED
    # A held message stays planned in the outbox; the page says what Upcoming says.
    on_hold = planned and delivery.idempotency_key in held
    return Message(
        at=desk_datetime(
            delivery.send_after if planned else (delivery.sent_at or delivery.updated_at),
            tz,
            now,
        ),
        label=REASON_LABELS[reason] if reason is not None else str(delivery.reason),
        channel=CHANNEL_LABELS[delivery.channel] if delivery.channel else "—",
        state=HELD_LABEL if on_hold else STATE_LABELS[delivery.state],
        error=why_not_sent(delivery.last_error) if delivery.last_error else None,
        problem=delivery.state in (DeliveryState.FAILED, DeliveryState.SKIPPED),
        held=on_hold,
    )


class _Refused(ValueError):
    """A form the desk cannot accept; the message (Japanese) says why, for the page."""


def _days(value: str) -> int | None:
    """A number of days from the form: empty for the phase's default."""
    value = value.strip()
    if not value:
        return None
    if not value.isdigit() or int(value) not in CADENCE_DAYS:
        raise _Refused(
            f"日数は{CADENCE_DAYS.start}〜{CADENCE_DAYS.stop - 1}の数字で入力してください"
            "（空欄はフェーズの標準）。"
        )
    return int(value)


def _phase(value: str) -> Phase | None:
    if value == NO_PHASE:
        return None
    phase = member(Phase, value)
    if phase is None:
        raise _Refused("フェーズを選んでください。")
    return phase


@desk_route("/patients/<patient_id>/cadence", methods=("POST",))
def change_cadence(clinic: str | None, patient_id: str) -> ResponseReturnValue:
    """Change the patient's phase and own cadence, as `tayori patient set` does, and
    plan them again at once."""
    here = desk()
    assert here.user_id is not None  # guard: every page but the sign-in needs one
    settings = here.settings
    now = clock_of(current_app).now()
    if not patient_id.isdigit():
        abort(404)
    back = redirect(here.url(f"/patients/{patient_id}"))
    try:
        phase = _phase(request.form.get("phase", ""))
        nudge = _days(request.form.get("nudge_after_days", ""))
        follow_up = _days(request.form.get("follow_up_days", ""))
    except _Refused as e:
        flash(str(e), "problem")
        return back
    with transaction(here.runtime.sessions) as db:
        found = _patient(db, patient_id)
        if _forgotten(found, "変更できません。"):
            return back
        before = _cadence_detail(found.phase, found.nudge_after_days, found.follow_up_days)
        changed = record_cadence(
            db, found, now, "desk", phase=phase, nudge_after_days=nudge, follow_up_days=follow_up
        )
        if changed:
            found.updated_at = now
            db.flush()
            planned = plan_patient(db, found.id, now, settings.rules, settings)
            after = _cadence_detail(phase, nudge, follow_up)
            audit(
                db,
                here.user_id,
                "cadence",
                f"patient {found.id}: {before} -> {after}; "
                + (
                    f"planned again ({planned.created} new, {planned.withdrawn} withdrawn)"
                    if planned is not None
                    else "left to the next cycle (a campaign's first plan)"
                ),
                now,
            )
    if not changed:
        flash("変更はありませんでした。", "done")
        return back
    log.info(
        "desk: account %s changed the phase or cadence of patient %s",
        here.user_id,
        patient_id,
        extra=log_facts(here.runtime),
    )
    flash(f"フェーズと通院の間隔を変更しました。{_replanned(planned)}", "done")
    return back


def _forgotten(patient: Patient, refused: str) -> bool:
    """Whether the patient's record was erased on request, said to the staff with
    what is `refused` (a change, a code) when it was."""
    if patient.forgotten_at is None:
        return False
    flash(f"この方の記録は削除の依頼で消去されています。{refused}", "problem")
    return True


def _replanned(planned: PlanResult | None) -> str:
    if planned is None:
        # A campaign's first plan is pacing everyone: the worker's next cycle (within
        # a minute) plans this patient with the rest.
        return "今後の送信予定は、まもなく組み直します。"
    return "今後の送信予定も組み直しました。"


@desk_route("/patients/<patient_id>/consent", methods=("POST",))
def change_consent(clinic: str | None, patient_id: str) -> ResponseReturnValue:
    """Record a consent the patient gave or withdrew at the clinic (source `desk`),
    as every other source records it; a withdrawal withdraws the messages it no
    longer allows, and the patient is planned again at once either way."""
    here = desk()
    assert here.user_id is not None
    settings = here.settings
    now = clock_of(current_app).now()
    if not patient_id.isdigit():
        abort(404)
    back = redirect(here.url(f"/patients/{patient_id}"))
    kind = member(ConsentKind, request.form.get("kind", ""))
    granted = {"yes": True, "no": False}.get(request.form.get("granted", ""))
    if kind is None or granted is None:
        flash("同意の変更を受け付けられませんでした。もう一度お試しください。", "problem")
        return back
    with transaction(here.runtime.sessions) as db:
        found = _patient(db, patient_id)
        if _forgotten(found, "変更できません。"):
            return back
        changed = record_consent(db, found.id, kind, granted, ConsentSource.DESK, now)
        if changed:
            db.flush()
            # A withdrawal has withdrawn its messages already; a grant plans them now.
            plan_patient(db, found.id, now, settings.rules, settings)
            audit(
                db,
                here.user_id,
                "consent",
                f"patient {found.id}: {kind.value} {'granted' if granted else 'withdrawn'}",
                now,
            )
    if changed:
        log.info(
            "desk: account %s recorded a change of consent of patient %s",
            here.user_id,
            patient_id,
            extra=log_facts(here.runtime),
        )
        state = "同意あり" if granted else "同意なし"
        flash(f"{CONSENT_LABELS[kind]}を「{state}」にしました。", "done")
    else:
        flash("変更はありませんでした。", "done")
    return back


def _cadence_detail(phase: Phase | None, nudge: int | None, follow_up: int | None) -> str:
    """The audit log's words for a phase and cadence (English, like the CLI's)."""
    return (
        f"phase {phase.value if phase else 'none'}, nudge {nudge or 'default'}, "
        f"follow-up {follow_up or 'default'}"
    )


@desk_route("/patients/<patient_id>/link-code", methods=("POST",))
def issue_link_code(clinic: str | None, patient_id: str) -> ResponseReturnValue:
    """A new one-time LINE link code for the patient (replacing an earlier one), as
    `tayori link-code` issues it; then its printable page."""
    here = desk()
    assert here.user_id is not None
    now = clock_of(current_app).now()
    if not patient_id.isdigit():
        abort(404)
    if not here.settings.config.line.basic_id:
        flash(
            "QRコードを作るには、LINE公式アカウントのID（config/tayori.toml の [line] "
            "basic_id）の設定が必要です。",
            "problem",
        )
        return redirect(here.url(f"/patients/{patient_id}"))
    with transaction(here.runtime.sessions) as db:
        found = _patient(db, patient_id)
        if _forgotten(found, "コードは発行できません。"):
            return redirect(here.url(f"/patients/{patient_id}"))
        issue_code(db, found, now)
        audit(db, here.user_id, "link_code", f"patient {found.id}: a new LINE link code", now)
    log.info(
        "desk: account %s issued a LINE link code for patient %s",
        here.user_id,
        patient_id,
        extra=log_facts(here.runtime),
    )
    return redirect(here.url(f"/patients/{patient_id}/link-code"))


@desk_route("/patients/<patient_id>/link-code")
def link_code(clinic: str | None, patient_id: str) -> ResponseReturnValue:
    """The printable page of the patient's code while it can still be used: the same
    page `tayori link-codes` writes."""
    here = desk()
    settings = here.settings
    now = clock_of(current_app).now()
    basic_id = settings.config.line.basic_id
    back = here.url(f"/patients/{patient_id}")
    with reading(here.runtime.sessions) as db:
        found = _patient(db, patient_id)
        code = db.get(LinkCode, found.id)
        if (
            not basic_id
            or found.forgotten_at is not None
            or code is None
            or code.used_at is not None
            or code.expires_at <= now
        ):
            flash("使えるLINE連携コードがありません。新しく発行してください。", "problem")
            return redirect(back)
        card = card_of(
            found.external_id, found.name, code.code, code.expires_at, basic_id, settings
        )
    return card_page(card, settings, now, back=back)

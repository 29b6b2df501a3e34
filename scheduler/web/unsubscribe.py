"""The unsubscribe page: what a patient reaches from the link in a mail's footer or
from their mail client's own "unsubscribe" button (RFC 8058 one-click).

- `GET /unsubscribe/<token>` shows what will stop and asks; it changes nothing (link
  scanners and mail clients fetch links in mails on their own).
- `POST /unsubscribe/<token>` stops the token's kind of message, or every kind when
  the form says `scope=all`; a mail client's one-click POST (body
  `List-Unsubscribe=One-Click`) is the same request without the page. Repeating it
  changes nothing more: consent is recorded only when it changes.
- A token that is not ours (tampered, truncated, made up, made with another key) and
  one whose patient is gone or forgotten get the same 404 page, byte for byte: the
  page never tells which patients exist.

No CSRF token, and no cookie: a forged cross-site request can only ride on something
the browser adds by itself, such as a session cookie, and this page has none; it
sets none either. What authorises the POST is the token in its URL, which only the
patient's mail holds. Whoever has the token can stop that patient's messages with or
without a form, so a CSRF token would protect nothing more (and RFC 8058 requires the
one-click POST to work without any page, cookie or other context).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Blueprint, current_app, render_template, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.clock import SystemClock
from scheduler.core.domain import ConsentKind
from scheduler.core.unsubscribe import read_unsubscribe_token
from scheduler.runtime import Runtime
from scheduler.store.clinics import clinic_of
from scheduler.store.consent import ConsentSource, record_consent
from scheduler.store.db import reading, transaction
from scheduler.store.facts import current_consent
from scheduler.store.models import Patient
from scheduler.web.app import clinics_of, log_facts, runtime_of

log = logging.getLogger(__name__)

blueprint = Blueprint("unsubscribe", __name__)

# What each kind of consent lets the clinic send, as the patient knows it.
KIND_LABELS = {
    ConsentKind.REMINDERS: "ご来院のおすすめ・ご予約前日のお知らせ",
    ConsentKind.NEWSLETTER: "季節のお便り",
}
EVERYTHING = "all"  # the form's `scope` for stopping every kind


class _NotFound(Exception):
    """No patient for this token: one answer whatever the reason, in the name of the
    token's clinic when the token is ours (else the installation's own)."""

    def __init__(self, runtime: Runtime | None = None) -> None:
        super().__init__()
        self.runtime = runtime


@blueprint.get("/unsubscribe/<token>")
def page(token: str) -> tuple[str, int]:
    try:
        found = _read(token)
        with reading(found.runtime.sessions) as session:
            patient = _patient(session, found)
            consent = _consent(session, patient)
    except _NotFound as e:
        return _not_found(e.runtime)
    kind = found.kind
    others = [k for k in ConsentKind if k is not kind and consent[k]]
    return render_template(
        "unsubscribe/page.html",
        clinic=_clinic(found.runtime),
        label=KIND_LABELS[kind],
        stopped=not consent[kind],
        other_labels=[KIND_LABELS[k] for k in others],
        everything=EVERYTHING,
    ), 200


@blueprint.post("/unsubscribe/<token>")
def stop(token: str) -> tuple[str, int]:
    # The page's form sends scope=kind or scope=all; a mail client's one-click POST
    # sends List-Unsubscribe=One-Click, which stops the token's kind like scope=kind.
    everything = request.form.get("scope") == EVERYTHING
    now = SystemClock().now()
    try:
        found = _read(token)
        with transaction(found.runtime.sessions) as session:
            patient = _patient(session, found, for_update=True)
            kinds = list(ConsentKind) if everything else [found.kind]
            changed = [
                kind
                for kind in kinds
                if record_consent(
                    session, patient, kind, False, ConsentSource.UNSUBSCRIBE_LINK, now
                )
            ]
    except _NotFound as e:
        return _not_found(e.runtime)
    # The patient's internal id only: logs carry no names, contacts or tokens.
    log.info(
        "unsubscribe link: patient %s stopped %s (%s)",
        patient,
        ", ".join(k.value for k in kinds),
        "changed " + ", ".join(k.value for k in changed) if changed else "already stopped",
        extra=log_facts(found.runtime),
    )
    return render_template(
        "unsubscribe/done.html",
        clinic=_clinic(found.runtime),
        labels=[KIND_LABELS[k] for k in kinds],
    ), 200


@dataclass(frozen=True)
class _Token:
    """What a token names: the clinic (its runtime), the patient's public id and the
    kind of message it stops."""

    runtime: Runtime
    public_id: str
    kind: ConsentKind


def _read(token: str) -> _Token:
    own = runtime_of(current_app)
    try:
        slug, public_id, kind = read_unsubscribe_token(
            own.settings.secret_key, token, own.settings.clinic_slug
        )
    except ValueError:  # InvalidToken, or no key in the settings: no token is ours
        raise _NotFound from None
    runtime = clinics_of(current_app).find(slug)
    if runtime is None:
        raise _NotFound
    return _Token(runtime, public_id, kind)


def _patient(session: Session, token: _Token, *, for_update: bool = False) -> int:
    """The id of the patient a token names, if they are still here. With
    `for_update`, their row stays locked until the transaction ends, so two clicks at
    once record one change (on SQLite every write transaction is serial anyway).

    FOR NO KEY UPDATE, not FOR UPDATE: the change then waits to mark the patient
    while a plan under way writes their messages, whose foreign key takes a
    key-share lock on this row. A FOR UPDATE lock would make each wait for the other."""
    query = select(Patient.id).where(
        Patient.clinic_id == clinic_of(session),
        Patient.public_id == token.public_id,
        Patient.forgotten_at.is_(None),
    )
    patient_id = session.scalar(query.with_for_update(key_share=True) if for_update else query)
    if patient_id is None:
        raise _NotFound(token.runtime)
    return patient_id


def _consent(session: Session, patient_id: int) -> dict[ConsentKind, bool]:
    given = current_consent(session, [patient_id]).get(patient_id, {})
    return {kind: given.get(kind, False) for kind in ConsentKind}


def _not_found(runtime: Runtime | None) -> tuple[str, int]:
    clinic = _clinic(runtime or runtime_of(current_app))
    return render_template("unsubscribe/not_found.html", clinic=clinic), 404


def _clinic(runtime: Runtime) -> dict[str, str]:
    clinic = runtime.settings.clinic
    return {"name": clinic.name, "phone": clinic.phone, "email": clinic.email}

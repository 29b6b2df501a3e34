"""Linking a patient's LINE to their record: a one-time code issued at the desk
(`tayori link-code`), sent by the patient from LINE, read by the webhook.

LINE gives a bot a user's id only when that user talks to the official account, so
this is how a clinic learns its patients' LINE ids. A code is single-use, valid for
14 days, and a new one replaces the old; wrong codes from one LINE user are counted,
and too many within an hour lock linking for that user for an hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.orm import Session

from scheduler.core.domain import ConsentKind
from scheduler.core.link_codes import LOCK_AFTER, LOCK_WINDOW, VALID_FOR, code_in, new_code
from scheduler.store.clinics import clinic_of
from scheduler.store.consent import ConsentSource, record_consent
from scheduler.store.db import upsert_insert
from scheduler.store.models import LinkCode, LinkFailure, Patient


class Linked(StrEnum):
    """What a message that may hold a link code came to."""

    LINKED = "linked"
    ALREADY = "already linked"  # this LINE user, this patient: nothing to do
    TAKEN = "linked to another patient"  # this LINE user belongs to someone else
    WRONG = "no such code"
    EXPIRED = "expired"
    USED = "used already"
    LOCKED = "locked"  # too many wrong codes lately
    NO_CODE = "no code"  # not a linking message at all


@dataclass(frozen=True)
class LinkOutcome:
    linked: Linked
    patient_id: int | None = None


def issue_code(session: Session, patient: Patient, now: datetime) -> LinkCode:
    """A new code for `patient`, replacing any earlier one. A forgotten patient gets
    none: their record is kept only to be counted."""
    if patient.forgotten_at is not None:
        raise ValueError(f"patient {patient.external_id} was forgotten: no link code")
    code = _unused_code(session)
    values = {"code": code, "issued_at": now, "expires_at": now + VALID_FOR, "used_at": None}
    session.execute(
        upsert_insert(session, LinkCode)
        .values(patient_id=patient.id, **values)
        .on_conflict_do_update(index_elements=["patient_id"], set_=values)
    )
    return session.get_one(LinkCode, patient.id, populate_existing=True)


def link(session: Session, line_user_id: str, text: str, now: datetime) -> LinkOutcome:
    """Link `line_user_id` to the patient whose code `text` holds, if it holds one."""
    code = code_in(text)
    if code is None:
        return LinkOutcome(Linked.NO_CODE)
    if _locked(session, line_user_id, now):
        return LinkOutcome(Linked.LOCKED)
    row = session.scalar(select(LinkCode).where(LinkCode.code == code))
    patient = session.get(Patient, row.patient_id) if row is not None else None
    # A code is good only in its own clinic's LINE chat.
    if (
        row is None
        or patient is None
        or patient.clinic_id != clinic_of(session)
        or patient.forgotten_at is not None
    ):
        session.add(LinkFailure(line_user_id=line_user_id, at=now))
        return LinkOutcome(Linked.LOCKED if _locked(session, line_user_id, now) else Linked.WRONG)
    if patient.line_user_id == line_user_id:
        return LinkOutcome(Linked.ALREADY, patient.id)
    if row.used_at is not None:
        return LinkOutcome(Linked.USED)
    if row.expires_at <= now:
        return LinkOutcome(Linked.EXPIRED)
    other = session.scalar(
        select(Patient.id).where(
            Patient.clinic_id == patient.clinic_id,
            Patient.line_user_id == line_user_id,
            Patient.id != patient.id,
        )
    )
    if other is not None:
        return LinkOutcome(Linked.TAKEN)
    patient.line_user_id = line_user_id
    patient.line_unusable_reason = None
    patient.line_linked_at = now
    patient.updated_at = now
    row.used_at = now
    # Sending the code from LINE is asking for the clinic's messages there.
    record_consent(session, patient.id, ConsentKind.REMINDERS, True, ConsentSource.LINE, now)
    session.execute(delete(LinkFailure).where(*_failures_of(session, line_user_id)))
    return LinkOutcome(Linked.LINKED, patient.id)


def _locked(session: Session, line_user_id: str, now: datetime) -> bool:
    """`LOCK_AFTER` wrong codes within `LOCK_WINDOW` lock linking for that long
    after the last of them."""
    times = session.scalars(
        select(LinkFailure.at)
        .where(*_failures_of(session, line_user_id), LinkFailure.at > now - 2 * LOCK_WINDOW)
        .order_by(LinkFailure.at)
    ).all()
    return any(
        times[last] - times[last - LOCK_AFTER + 1] <= LOCK_WINDOW
        and now < times[last] + LOCK_WINDOW
        for last in range(LOCK_AFTER - 1, len(times))
    )


def _failures_of(session: Session, line_user_id: str) -> tuple[ColumnElement[bool], ...]:
    return (LinkFailure.clinic_id == clinic_of(session), LinkFailure.line_user_id == line_user_id)


def _unused_code(session: Session) -> str:
    while True:  # 31**8 codes: a collision is rare, and then another is drawn
        code = new_code()
        if session.scalar(select(LinkCode.patient_id).where(LinkCode.code == code)) is None:
            return code

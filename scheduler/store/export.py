"""The clinic's data, table by table, for `tayori export`: the clinic owns it and can
take it elsewhere. Each table says what it and its columns mean (the export's
README.md is written from this), and reads its rows in one pass in a stable order.

No message's text is exported: Tayori does not keep it (a message is rendered from
the templates when it goes). The delivery log holds what happened to each message:
ids, reason, channel, state, times and the last error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, select, type_coerce
from sqlalchemy.orm import Session

from scheduler.core.domain import ConsentKind
from scheduler.store.clinics import clinic_of
from scheduler.store.facts import current_consent
from scheduler.store.models import Appointment, CadenceChange, ConsentChange, Delivery, Patient

# Rows are read from the database this many at a time, so that a long delivery log
# is never held in memory whole.
BATCH = 1000


@dataclass(frozen=True)
class Column:
    name: str
    meaning: str


@dataclass(frozen=True)
class Table:
    name: str  # the file's name without its extension
    meaning: str
    columns: tuple[Column, ...]
    # The rows, each a tuple in the order of `columns`: plain values, datetimes
    # (aware, UTC) and dates; the writer formats them.
    rows: Callable[[Session], Iterator[tuple[Any, ...]]]


def _patients(session: Session) -> Iterator[tuple[Any, ...]]:
    consent = current_consent(session)
    query = (
        select(Patient)
        .where(Patient.clinic_id == clinic_of(session))
        .order_by(Patient.external_id)
        .execution_options(yield_per=BATCH)
    )
    for p in session.scalars(query):
        given = consent.get(p.id, {})
        yield (
            p.external_id,
            p.name,
            p.phase,
            p.email,
            p.line_user_id,
            p.preferred_channel,
            given.get(ConsentKind.REMINDERS, False),
            given.get(ConsentKind.NEWSLETTER, False),
            p.nudge_after_days,
            p.follow_up_days,
            p.line_unusable_reason,
            p.email_unusable_reason,
            p.line_linked_at,
            p.forgotten_at,
            p.created_at,
            p.updated_at,
        )


def _appointments(session: Session) -> Iterator[tuple[Any, ...]]:
    query = (
        select(
            Patient.external_id,
            Appointment.starts_at,
            Appointment.status,
            Appointment.created_at,
            Appointment.updated_at,
        )
        .join(Patient, Appointment.patient_id == Patient.id)
        .where(Patient.clinic_id == clinic_of(session))
        .order_by(Patient.external_id, Appointment.starts_at)
    )
    yield from _tuples(session, query)


def _consent_history(session: Session) -> Iterator[tuple[Any, ...]]:
    query = (
        select(
            Patient.external_id,
            ConsentChange.kind,
            ConsentChange.granted,
            ConsentChange.changed_at,
            ConsentChange.source,
        )
        .join(Patient, ConsentChange.patient_id == Patient.id)
        .where(Patient.clinic_id == clinic_of(session))
        .order_by(Patient.external_id, ConsentChange.id)
    )
    yield from _tuples(session, query)


def _cadence_history(session: Session) -> Iterator[tuple[Any, ...]]:
    query = (
        select(
            Patient.external_id,
            CadenceChange.phase,
            CadenceChange.nudge_after_days,
            CadenceChange.follow_up_days,
            CadenceChange.changed_at,
            CadenceChange.source,
        )
        .join(Patient, CadenceChange.patient_id == Patient.id)
        .where(Patient.clinic_id == clinic_of(session))
        .order_by(Patient.external_id, CadenceChange.id)
    )
    yield from _tuples(session, query)


def _deliveries(session: Session) -> Iterator[tuple[Any, ...]]:
    query = (
        select(
            Delivery.id,
            Patient.external_id,
            # As stored: a value written by a newer version is exported, not refused.
            type_coerce(Delivery.reason, String),
            type_coerce(Delivery.channel, String),
            type_coerce(Delivery.state, String),
            Appointment.starts_at,
            Delivery.campaign_id,
            Delivery.campaign_day,
            Delivery.template,
            Delivery.tip_id,
            Delivery.attempts,
            Delivery.send_after,
            Delivery.sent_at,
            Delivery.provider_message_id,
            Delivery.last_error,
            Delivery.created_at,
            Delivery.updated_at,
        )
        .outerjoin(Patient, Delivery.patient_id == Patient.id)
        .outerjoin(Appointment, Delivery.appointment_id == Appointment.id)
        .where(Delivery.clinic_id == clinic_of(session))
        .order_by(Delivery.created_at, Delivery.id)
    )
    yield from _tuples(session, query)


def _tuples(session: Session, query: Any) -> Iterator[tuple[Any, ...]]:
    for row in session.execute(query.execution_options(yield_per=BATCH)):
        yield tuple(row)


_CREATED = Column("created_at", "when Tayori first recorded it")
_UPDATED = Column("updated_at", "when Tayori last changed it")
_PATIENT = Column("external_id", "the patient: the clinic's own patient number")

TABLES: tuple[Table, ...] = (
    Table(
        "patients",
        "one row per patient, as Tayori holds them now",
        (
            Column("external_id", "the clinic's own patient number (as imported)"),
            Column(
                "name",
                'as messages address the patient, without 様; "(forgotten)" once the '
                "patient's data was erased",
            ),
            Column("phase", "acute, rehab or maintenance; empty: no cadence messages"),
            Column("email", "the patient's email address; empty: none"),
            Column("line_user_id", "the patient's LINE user id (U and 32 hex digits); empty: none"),
            Column("preferred_channel", "line or email: the channel tried first"),
            Column(
                "reminders_opt_in",
                "yes or no: consent to reminders, nudges and follow-ups now "
                "(every change is in consent_history)",
            ),
            Column("newsletter_opt_in", "yes or no: consent to seasonal newsletters now"),
            Column(
                "nudge_after_days",
                "the patient's own days from a visit to the nudge; empty: the phase default",
            ),
            Column(
                "follow_up_days",
                "the patient's own days from the nudge to the follow-up; empty: the phase default",
            ),
            Column(
                "line_unusable_reason",
                "why the LINE user id is no longer used (LINE did not know it), and since "
                "when; empty: usable",
            ),
            Column(
                "email_unusable_reason",
                "why the email address is no longer used (the mail server refused it), and "
                "since when; empty: usable",
            ),
            Column(
                "line_linked_at",
                "when the patient linked their LINE by sending a link code; empty: never",
            ),
            Column(
                "forgotten_at",
                "when the patient's name and contacts were erased at their request "
                "(`tayori forget`); empty: not erased",
            ),
            _CREATED,
            _UPDATED,
        ),
        _patients,
    ),
    Table(
        "appointments",
        "one row per appointment or visit",
        (
            _PATIENT,
            Column("starts_at", "when the appointment starts"),
            Column("status", "booked, visited, cancelled or no_show"),
            _CREATED,
            _UPDATED,
        ),
        _appointments,
    ),
    Table(
        "consent_history",
        "every change of a patient's consent, oldest first; the latest of each kind is in force",
        (
            _PATIENT,
            Column("kind", "reminders or newsletter"),
            Column("granted", "yes: given, no: withdrawn"),
            Column("changed_at", "when it changed"),
            Column(
                "source",
                "where the change came from: import, demo, cli, line (the patient on LINE), "
                "unsubscribe link, desk, or forget (the patient's data erased)",
            ),
        ),
        _consent_history,
    ),
    Table(
        "cadence_history",
        "every change of a patient's phase and own cadence, oldest first; the first row "
        "is the patient's starting point",
        (
            _PATIENT,
            Column("phase", "acute, rehab or maintenance; empty: no cadence messages"),
            Column("nudge_after_days", "the patient's own nudge days; empty: the phase default"),
            Column("follow_up_days", "the patient's own follow-up days; empty: the phase default"),
            Column("changed_at", "from when it applies"),
            Column("source", "where the change came from: import, demo or cli"),
        ),
        _cadence_history,
    ),
    Table(
        "deliveries",
        "the delivery log: every message Tayori planned, sent or did not send, without its text",
        (
            Column(
                "id",
                "the delivery's id; also the LINE retry key and the email's Message-ID",
            ),
            Column(
                "external_id",
                "the patient; empty for the clinic's own daily digest",
            ),
            Column(
                "reason",
                "cadence_nudge, cadence_follow_up, appointment_reminder, no_show_follow_up, "
                "newsletter or daily_digest",
            ),
            Column("channel", "line or email; empty while none was chosen"),
            Column(
                "state",
                "planned, sending, sent, failed, skipped (could not be sent: see last_error) "
                "or withdrawn (no longer wanted: see last_error)",
            ),
            Column("appointment_starts_at", "the appointment a reminder or no-show message is for"),
            Column("campaign_id", "a newsletter's campaign (config/campaigns.toml)"),
            Column("campaign_day", "the day of the campaign's occurrence"),
            Column("template", "the template the message was made from (messages/)"),
            Column("tip_id", "the self-care tip it carried (messages/tips/)"),
            Column("attempts", "how many times sending was tried"),
            Column("send_after", "when it was due"),
            Column("sent_at", "when LINE or the mail server accepted it; empty: not sent"),
            Column(
                "provider_message_id",
                "what LINE or the mail server called the sent message",
            ),
            Column(
                "last_error",
                "why it failed, was skipped or withdrawn, or the last passing failure",
            ),
            _CREATED,
            _UPDATED,
        ),
        _deliveries,
    ),
)

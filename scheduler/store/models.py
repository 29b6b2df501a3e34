"""The database tables (SQLAlchemy 2.x typed models). Every time is stored in UTC."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy import (
    Enum as SAEnum,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from scheduler.core.domain import (
    AppointmentStatus,
    ChannelName,
    ConsentKind,
    DeliveryState,
    HoldCause,
    Phase,
    Reason,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in Python, naive UTC in the database (the same on SQLite and
    PostgreSQL), so comparisons never depend on the server's time zone."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)

    def result_processor(
        self, dialect: Dialect, coltype: object
    ) -> Callable[[Any], datetime | None] | None:
        processor = super().result_processor(dialect, coltype)
        # A clinic's rows share a few thousand moments (slots on the half hour, one
        # import's `now`): each stored value is converted once, not once per row.
        return None if processor is None else lru_cache(maxsize=1 << 16)(processor)


def _enum(enum: type[StrEnum]) -> SAEnum:
    """Stored as its plain value in a VARCHAR, read back as the enum member."""
    return SAEnum(
        enum,
        native_enum=False,
        create_constraint=False,
        length=16 if enum is not Reason else 32,
        values_callable=lambda members: [m.value for m in members],
    )


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def new_public_id() -> str:
    return secrets.token_hex(16)


class Clinic(Base):
    """A clinic this installation serves. Its settings and secrets stay in files
    (`config_dir`), never in the database. The first one, made by migration 0009, is
    the installation's own settings (`config_dir` None)."""

    __tablename__ = "clinics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(40), unique=True)
    config_dir: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


def _clinic() -> Mapped[int]:
    """The clinic a row belongs to; rows that hang off a patient (appointments,
    consent and cadence changes, link codes) belong to their patient's."""
    return mapped_column(ForeignKey("clinics.id"))


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("clinic_id", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    clinic_id: Mapped[int] = _clinic()
    external_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    phase: Mapped[Phase | None] = mapped_column(_enum(Phase))
    email: Mapped[str | None] = mapped_column(String(320))
    line_user_id: Mapped[str | None] = mapped_column(String(64))
    preferred_channel: Mapped[ChannelName] = mapped_column(_enum(ChannelName))
    # The patient's own rhythm; None means the phase default from config.
    nudge_after_days: Mapped[int | None] = mapped_column(Integer)
    follow_up_days: Mapped[int | None] = mapped_column(Integer)
    # Set when a channel reports the contact cannot receive (blocked, bounced,
    # unsubscribed); the contact itself is kept so the patient can be asked.
    line_unusable_reason: Mapped[str | None] = mapped_column(Text)
    email_unusable_reason: Mapped[str | None] = mapped_column(Text)
    # Random, for links a patient holds (one-click unsubscribe): the internal id and
    # the number of patients stay the clinic's.
    public_id: Mapped[str] = mapped_column(String(32), unique=True, default=new_public_id)
    # When the patient linked their LINE (a link code sent from LINE).
    line_linked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the patient's name and contacts were erased (`tayori forget`).
    forgotten_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    appointments: Mapped[list[Appointment]] = relationship(back_populates="patient")
    consent_changes: Mapped[list[ConsentChange]] = relationship(
        back_populates="patient", order_by="ConsentChange.id"
    )
    cadence_changes: Mapped[list[CadenceChange]] = relationship(
        back_populates="patient", order_by="CadenceChange.id"
    )


# The rows the appointments' bookings index holds. A query that is to read them by it
# has `status = 'booked'` in its text: a bound parameter in its place would keep
# PostgreSQL's generic plan of a prepared statement from using the index.
_BOOKED = text("status = 'booked'")


class Appointment(Base):
    __tablename__ = "appointments"
    __table_args__ = (
        # Its index also serves every lookup by patient (migration 0017).
        UniqueConstraint("patient_id", "starts_at"),
        # Each patient's bookings, a few in a hundred appointments: the facts find a
        # past booking without reading every past visit (migration 0020).
        Index(
            "ix_appointments_patient_id_starts_at_booked",
            "patient_id",
            "starts_at",
            sqlite_where=_BOOKED,
            postgresql_where=_BOOKED,
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[AppointmentStatus] = mapped_column(_enum(AppointmentStatus))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    patient: Mapped[Patient] = relationship(back_populates="appointments")


class ConsentChange(Base):
    """Append-only: a patient's current consent is the latest change of each kind."""

    __tablename__ = "consent_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    kind: Mapped[ConsentKind] = mapped_column(_enum(ConsentKind))
    granted: Mapped[bool] = mapped_column(Boolean)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(32))

    patient: Mapped[Patient] = relationship(back_populates="consent_changes")


class CadenceChange(Base):
    """Append-only: the patient's phase and own cadence from `changed_at` on.

    The first row is the patient's starting point; every later row is a change
    (by import, the CLI, later the web page), which starts a new cadence episode.
    """

    __tablename__ = "cadence_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    phase: Mapped[Phase | None] = mapped_column(_enum(Phase))
    nudge_after_days: Mapped[int | None] = mapped_column(Integer)
    follow_up_days: Mapped[int | None] = mapped_column(Integer)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(32))

    patient: Mapped[Patient] = relationship(back_populates="cadence_changes")


class Replan(Base):
    """When the worker next plans a patient: a row for every patient, written with
    the patient (scheduler/store/replan.py keeps it so).

    A table of its own rather than a column of `patients`: a plan writes the moment
    of every patient it planned, and each such update of the wide patients row
    rewrote it with all its indexes (five times the cost on PostgreSQL). The row is
    also what a plan locks and what a change of facts updates to mark its patient."""

    __tablename__ = "replans"
    __table_args__ = (
        # The worker's question each cycle: this clinic's patients due to be planned.
        Index("ix_replans_clinic_id_replan_at", "clinic_id", "replan_at"),
    )

    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patients.id", ondelete="CASCADE"), primary_key=True
    )
    clinic_id: Mapped[int] = _clinic()
    # The next moment the patient's due messages can change with time alone (a
    # far-off date when only new facts can change them). None: their facts changed,
    # plan at the next cycle.
    replan_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


def new_delivery_id() -> str:
    return str(uuid.uuid4())


# The rows the deliveries' campaign index holds. A query that is to read them by it
# names a campaign, or says `Delivery.campaign_id.is_not(None)`.
_OF_A_CAMPAIGN = text("campaign_id IS NOT NULL")


class Delivery(Base):
    """The outbox. A row exists before any network call; its id is the LINE retry
    key and the email Message-ID, so a resend after a crash is recognised."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("clinic_id", "idempotency_key"),
        # Each clinic's claims.
        Index("ix_deliveries_clinic_id_state_send_after", "clinic_id", "state", "send_after"),
        # Its campaigns' newsletters: only rows of a campaign, so that the many
        # others (a first plan writes one for most patients) cost this index nothing.
        Index(
            "ix_deliveries_clinic_id_campaign_id_campaign_day",
            "clinic_id",
            "campaign_id",
            "campaign_day",
            sqlite_where=_OF_A_CAMPAIGN,
            postgresql_where=_OF_A_CAMPAIGN,
        ),
        # The metrics count deliveries by these at each scrape: from the index alone,
        # without reading the rows (a second rather than tens at two million).
        Index(
            "ix_deliveries_clinic_id_state_reason_channel",
            "clinic_id",
            "state",
            "reason",
            "channel",
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_delivery_id)
    clinic_id: Mapped[int] = _clinic()
    idempotency_key: Mapped[str] = mapped_column(String(200))
    # None for messages to the clinic itself (the daily digest).
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), index=True)
    appointment_id: Mapped[int | None] = mapped_column(ForeignKey("appointments.id"))
    reason: Mapped[Reason] = mapped_column(_enum(Reason))
    channel: Mapped[ChannelName | None] = mapped_column(_enum(ChannelName))
    template: Mapped[str | None] = mapped_column(String(200))
    send_after: Mapped[datetime] = mapped_column(UTCDateTime)
    state: Mapped[DeliveryState] = mapped_column(_enum(DeliveryState))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    tip_id: Mapped[str | None] = mapped_column(String(100))  # messages/tips/<id>.md
    # Newsletters only: the campaign (config/campaigns.toml) and its occurrence's day.
    campaign_id: Mapped[str | None] = mapped_column(String(64))
    campaign_day: Mapped[date | None] = mapped_column(Date)
    # The current claim (scheduler.outbox.transitions): when it was taken, its token
    # (every outcome write is guarded by it, so a worker whose claim was taken over
    # cannot overwrite the new claimer's outcome) and when its lease ends. Times of a
    # claim are on the database's clock, not a worker's.
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claim_token: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The message may have reached the patient (an attempt went out and no answer
    # came back, or its worker died mid-send): it is tried again only by `channel`.
    maybe_sent: Mapped[bool] = mapped_column(Boolean, default=False)
    # The first LINE request that carried this delivery's retry key (database clock):
    # LINE honours the key for 24 hours from then, so a push that may have been
    # accepted is not repeated after that.
    line_first_request_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The month ("2026-11") whose LINE budget holds a place for this delivery, while
    # it holds one (scheduler.outbox.budget).
    quota_month: Mapped[str | None] = mapped_column(String(7))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ChannelState(Base):
    """A channel's condition, shared by every process: held (LINE's monthly quota
    reached, credentials refused, the server unreachable) and until when."""

    __tablename__ = "channel_states"

    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinics.id"), primary_key=True)
    channel: Mapped[ChannelName] = mapped_column(_enum(ChannelName), primary_key=True)
    held_because: Mapped[HoldCause | None] = mapped_column(_enum(HoldCause))
    held_reason: Mapped[str | None] = mapped_column(Text)
    held_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    held_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LineQuotaMonth(Base):
    """One month of LINE messages, shared by every worker: each reserves a message
    here (a conditional update) before pushing it, so together they never exceed the
    month's limit (scheduler.outbox.budget)."""

    __tablename__ = "line_quota_months"

    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinics.id"), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # "2026-11", clinic time
    # None: the plan has no monthly limit. Until LINE is read (`read_at`), the limit
    # is `[line] monthly_quota` from the settings.
    quota_limit: Mapped[int | None] = mapped_column(Integer)
    # Messages counted this month: the larger of LINE's reading and our own count.
    used: Mapped[int] = mapped_column(Integer)
    # Messages reserved by deliveries that are being sent (or may have been).
    reserved: Mapped[int] = mapped_column(Integer)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookEvent(Base):
    """The inbox: each LINE webhook event once, by its `webhookEventId`, stored
    before anything is done with it; processed from here, and tried again until it
    is (`processed_at`), so a redelivered event has no second effect and a failed
    one is not lost."""

    __tablename__ = "webhook_events"

    # Whose channel LINE sent it to, and its webhookEventId.
    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinics.id"), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)  # the event's JSON, as LINE sent it
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class LinkCode(Base):
    """The one-time code a patient sends from LINE to link it (one per patient: a
    new one replaces the old)."""

    __tablename__ = "link_codes"

    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), primary_key=True)
    code: Mapped[str] = mapped_column(String(8), unique=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LinkFailure(Base):
    """A wrong link code sent by a LINE user: too many within an hour lock linking
    for that user for an hour."""

    __tablename__ = "link_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    clinic_id: Mapped[int] = _clinic()
    line_user_id: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class PlanningSettings(Base):
    """The digest of the settings a clinic's last plan used: when the settings
    differ, every patient of the clinic is planned again."""

    __tablename__ = "planning_settings"

    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinics.id"), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PlannedOccurrence(Base):
    """A campaign occurrence whose whole audience has been planned: later cycles
    plan only the patients who change."""

    __tablename__ = "planned_occurrences"

    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinics.id"), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    planned_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WorkerHeartbeat(Base):
    """Each worker's last completed cycle (one row a worker, replaced at every cycle):
    the health check and the metrics read when the workers last got through one."""

    __tablename__ = "worker_heartbeats"

    worker: Mapped[str] = mapped_column(String(255), primary_key=True)  # host:pid
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the worker's clock
    duration_seconds: Mapped[float] = mapped_column(Float)


class DeskUser(Base):
    """A clinic's staff account for the desk (the web application). The email is the
    sign-in name, unique within its clinic only: two clinics may share a
    receptionist. Only an Argon2 hash of the password is kept."""

    __tablename__ = "desk_users"
    __table_args__ = (UniqueConstraint("clinic_id", "email"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    clinic_id: Mapped[int] = _clinic()
    email: Mapped[str] = mapped_column(String(320))  # lowercased
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # "owner" (manages the clinic's accounts too) or "staff": store.desk.Role
    role: Mapped[str] = mapped_column(String(16))


class DeskAudit(Base):
    """Who did what in the desk, and when: one row for every change made there."""

    __tablename__ = "desk_audit"
    __table_args__ = (Index("ix_desk_audit_clinic_id_at", "clinic_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    clinic_id: Mapped[int] = _clinic()
    user_id: Mapped[int] = mapped_column(ForeignKey("desk_users.id"))
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)  # ids, never a patient's name or contact
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class DeskSignInFailure(Base):
    """A failed sign-in, kept for the rate limit's window. In the database, so that
    every web process counts the same failures. `key` is a hash of the email typed
    and the address it came from: what was typed (perhaps a password, in the wrong
    field) is not kept."""

    __tablename__ = "desk_sign_in_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    clinic_id: Mapped[int] = _clinic()
    key: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class HeldMessage(Base):
    """A message the clinic's staff held by hand (the desk's Upcoming page, `tayori
    hold`), by its idempotency key: the worker claims no row of that key while the
    record exists. A key, not a row, because most of the month's messages are not in
    the outbox yet (the planner writes a row when a message becomes due): the hold
    applies to the row whenever it is written, and survives its withdrawal and
    revival by replanning. Releasing the message deletes the record."""

    __tablename__ = "held_messages"

    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinics.id"), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    # The desk account that held it; None when held from the command line.
    held_by: Mapped[int | None] = mapped_column(ForeignKey("desk_users.id"))
    held_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PausedCampaign(Base):
    """A campaign of the clinic's campaigns file that the desk (or `tayori campaign
    pause`) has paused: its newsletters are neither planned nor sent until it is
    resumed, which deletes the row. In the database because the desk cannot edit the
    clinic's TOML, and every worker must see the same pauses."""

    __tablename__ = "paused_campaigns"

    clinic_id: Mapped[int] = mapped_column(ForeignKey("clinics.id"), primary_key=True)
    campaign_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The desk account that paused it; None: the command line.
    paused_by: Mapped[int | None] = mapped_column(ForeignKey("desk_users.id"))
    paused_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LinkClick(Base):
    """One press of the booking link in a sent message (`/r/<token>`, a signed
    redirect to the clinic's booking page): the results count them per message."""

    __tablename__ = "link_clicks"
    __table_args__ = (Index("ix_link_clicks_clinic_id_delivery_id", "clinic_id", "delivery_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    clinic_id: Mapped[int] = _clinic()
    delivery_id: Mapped[str] = mapped_column(ForeignKey("deliveries.id"))
    clicked_at: Mapped[datetime] = mapped_column(UTCDateTime)


class UnconsentedDue(Base):
    """A reminder the rules would have given a patient who has not consented to
    reminders: recorded by the planner as it plans (the rules with consent assumed),
    so the results can set those who got a message beside those who could not. Like
    the outbox, one row per idempotency key; a row whose moment has not come is
    removed when it is no longer due (a booking came in, consent was given)."""

    __tablename__ = "unconsented_dues"
    __table_args__ = (
        UniqueConstraint("clinic_id", "idempotency_key"),
        Index("ix_unconsented_dues_clinic_id_due_at", "clinic_id", "due_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    clinic_id: Mapped[int] = _clinic()
    idempotency_key: Mapped[str] = mapped_column(String(200))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    reason: Mapped[Reason] = mapped_column(_enum(Reason))
    # When the message would have gone (the rules' send_at, inside the send window).
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TemplateVersion(Base):
    """A version of one of the practitioner's message or tip files (`path`, relative
    to the clinic's messages folder), kept when the desk saves or restores it, so
    that any earlier text can be restored. The file on disk stays what the worker
    reads; these rows are its history. `saved_by` is None for the text a file had
    before the desk first saved it (written by hand, or shipped with Tayori)."""

    __tablename__ = "template_versions"
    __table_args__ = (Index("ix_template_versions_clinic_id_path", "clinic_id", "path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    clinic_id: Mapped[int] = _clinic()
    path: Mapped[str] = mapped_column(String(255))
    content: Mapped[str] = mapped_column(Text)
    saved_by: Mapped[int | None] = mapped_column(ForeignKey("desk_users.id"))
    saved_at: Mapped[datetime] = mapped_column(UTCDateTime)

"""The vocabulary every layer shares: enums and the plain facts the rules read.

Nothing here touches the database, the network or the clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import NamedTuple, TypeVar

# How contacts are written (the CSV import and the settings check them).
LINE_USER_ID = re.compile(r"^U[0-9a-f]{32}$")
EMAIL_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# A LINE official account's ID: the basic ID ("@" and 8 letters and digits, such as
# "@123abcde") or a premium ID, which may also hold "." "_" "-" ("@tayori-seitai").
LINE_ACCOUNT_ID = re.compile(r"^@[0-9A-Za-z][0-9A-Za-z._-]{0,49}$")


_Member = TypeVar("_Member", bound=StrEnum)


def member(enum: type[_Member], value: object) -> _Member | None:
    """`value` as a member of `enum`, or None when this version does not know it
    (a row written by a newer version, say, before a downgrade)."""
    try:
        return enum(str(value))
    except ValueError:
        return None


class Phase(StrEnum):
    ACUTE = "acute"
    REHAB = "rehab"
    MAINTENANCE = "maintenance"


class ChannelName(StrEnum):
    LINE = "line"
    EMAIL = "email"


class AppointmentStatus(StrEnum):
    BOOKED = "booked"
    VISITED = "visited"
    CANCELLED = "cancelled"
    NO_SHOW = "no_show"


class Reason(StrEnum):
    CADENCE_NUDGE = "cadence_nudge"
    CADENCE_FOLLOW_UP = "cadence_follow_up"
    APPOINTMENT_REMINDER = "appointment_reminder"
    NO_SHOW_FOLLOW_UP = "no_show_follow_up"
    NEWSLETTER = "newsletter"  # a seasonal campaign's message (config/campaigns.toml)
    DAILY_DIGEST = "daily_digest"  # to the practitioner, never to a patient

    @property
    def is_cadence(self) -> bool:
        return self in (Reason.CADENCE_NUDGE, Reason.CADENCE_FOLLOW_UP)


# Reasons whose templates have a folder of their own: a newsletter uses its
# campaign's, and the digest goes to the clinic.
PATIENT_REASONS = tuple(r for r in Reason if r not in (Reason.NEWSLETTER, Reason.DAILY_DIGEST))


class DeliveryState(StrEnum):
    PLANNED = "planned"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"
    WITHDRAWN = "withdrawn"


class HoldCause(StrEnum):
    """Why a channel is not sending for now."""

    QUOTA = "quota"  # LINE's monthly limit: until the month turns
    CREDENTIALS = "credentials"  # refused token or login: until the settings change
    UNREACHABLE = "unreachable"  # no connection to the server: tried again with backoff


class ConsentKind(StrEnum):
    REMINDERS = "reminders"
    NEWSLETTER = "newsletter"


class AppointmentFact(NamedTuple):
    # A named tuple rather than a dataclass: a clinic's facts hold millions of them.
    id: int
    starts_at: datetime  # aware, UTC
    status: AppointmentStatus


@dataclass(frozen=True)
class CadenceChangeFact:
    id: int
    changed_at: datetime  # aware, UTC


@dataclass(frozen=True)
class Contacts:
    """Which of a patient's contacts can be used right now: present, and not blocked,
    bounced or unsubscribed."""

    line: bool
    email: bool

    def usable(self, channel: ChannelName) -> bool:
        return self.line if channel is ChannelName.LINE else self.email


class PatientFacts(NamedTuple):
    """What the rules may know about one patient at one moment.

    Named tuples rather than frozen dataclasses, this and `Due`: a frozen
    dataclass sets each field through `object.__setattr__`, and a plan of a clinic
    makes a hundred thousand of each (a tenth of a dry run's time went to that)."""

    id: int
    phase: Phase | None
    reminders_opt_in: bool
    newsletter_opt_in: bool
    preferred_channel: ChannelName
    contacts: Contacts
    appointments: tuple[AppointmentFact, ...] = ()
    # The patient's own cadence in force; None means the phase default.
    nudge_after_days: int | None = None
    follow_up_days: int | None = None
    # Set when the phase or cadence in force came from a change (not the patient's
    # starting point): such a change starts a new cadence episode.
    cadence_change: CadenceChangeFact | None = None
    # A phase or cadence change recorded for a later moment: the facts change then.
    next_change_at: datetime | None = None


class Due(NamedTuple):
    """One message the rules want sent (a named tuple: see `PatientFacts`).

    `may_create` is False for a message whose moment has passed and which must not be
    created late (an appointment reminder for a booking we learnt of after 18:00 the
    day before): an existing outbox row for it stays, but no new one is made.
    """

    patient_id: int
    reason: Reason
    occurrence: str
    send_at: datetime  # aware, UTC, inside the send window
    appointment_id: int | None = None
    may_create: bool = True
    # A newsletter's campaign (config/campaigns.toml), the day of its occurrence,
    # and the folder of its templates in messages/.
    campaign_id: str | None = None
    campaign_day: date | None = None
    template_folder: str | None = None

    @property
    def folder(self) -> str:
        """The folder in messages/ whose templates this message uses."""
        return self.template_folder or self.reason.value

    @property
    def key(self) -> str:
        return idempotency_key(self.reason, self.occurrence, self.patient_id)


def idempotency_key(reason: Reason, occurrence: str, patient_id: int) -> str:
    return f"{reason}:{occurrence}:{patient_id}"

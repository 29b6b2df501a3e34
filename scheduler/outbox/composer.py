"""Composing claimed deliveries: which channel each goes by, and the message itself.

The dispatcher reads what a batch needs in one go (`read_batch`, a read-only
transaction), decides each delivery's route (`route`: a channel, or why it cannot go
now), and renders the messages (`Composer.message`) outside any transaction: nothing
here writes to the database.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from scheduler.channels import DeliveryError, OutgoingMessage
from scheduler.channels.line import check_line_text
from scheduler.core.booking_links import BookingTarget, booking_link, is_delivery_id
from scheduler.core.cadence import last_visit
from scheduler.core.campaigns import Campaign
from scheduler.core.domain import (
    AppointmentStatus,
    ChannelName,
    ConsentKind,
    Contacts,
    DeliveryState,
    HoldCause,
    PatientFacts,
    Phase,
    Reason,
)
from scheduler.core.failure_policy import NOT_ANOTHER_WAY, RETRY_KEY_EXPIRED, retry_key_expired
from scheduler.core.quota import QUOTA_HELD
from scheduler.core.routing import NO_USABLE_CONTACT
from scheduler.core.unsubscribe import unsubscribe_url
from scheduler.core.window import local_date
from scheduler.messages.context import STOPPABLE, message_context
from scheduler.messages.digest import build_digest, digest_context
from scheduler.messages.template_names import template_in
from scheduler.messages.templates import Renderer, TemplateError
from scheduler.messages.tips import Tip, TipSeason, choose_tip, season_label
from scheduler.outbox.newsletters import campaign_context
from scheduler.outbox.transitions import WITHDRAWN_CAMPAIGN_PAUSED, Claimed
from scheduler.settings import Settings
from scheduler.store.channel_state import Hold
from scheduler.store.facts import contacts_of, load_facts
from scheduler.store.models import Delivery, Patient
from scheduler.store.paused_campaigns import paused_ids

# The template variables (`clinic.*`) that hold the clinic's booking URLs.
BOOKING_URLS = {"booking_url_line": BookingTarget.LINE, "booking_url_web": BookingTarget.WEB}
HOLD_RECHECK = timedelta(hours=1)  # a held message looks again this often
QUOTA_HELD_REASON = f"{QUOTA_HELD}: this month's LINE messages are kept for more important ones"


@dataclass(frozen=True)
class Recipient:
    """What a message needs of its patient, read while the session was open."""

    id: int
    public_id: str  # the random id that unsubscribe links carry
    name: str
    preferred_channel: ChannelName
    line_user_id: str | None
    email: str | None
    contacts: Contacts

    def address(self, channel: ChannelName) -> str:
        address = self.line_user_id if channel is ChannelName.LINE else self.email
        assert address is not None  # a channel is only chosen for a present contact
        return address


@dataclass(frozen=True)
class Batch:
    """What composing a batch of claimed deliveries needs, read at once."""

    recipients: dict[int, Recipient]
    facts: dict[int, PatientFacts]
    recent_tips: defaultdict[int, dict[str, date]]  # tip id → the day it was last sent
    digest: dict[str, Any] | None  # the digest's template variables, if one is claimed
    # The campaigns paused in the desk, read with the claims: a pause that came after
    # the newsletter was planned still stops it.
    paused: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Day:
    """What composing needs about the day a cycle runs on."""

    now: datetime
    day: date  # the clinic's date at `now`
    seasons: frozenset[TipSeason]  # the day's seasons, for choosing tips
    reopens: date | None  # when the clinic reopens, if it is closed on `day`
    tips: dict[str, Tip]


@dataclass(frozen=True)
class Go:
    channels: tuple[ChannelName, ...]  # by preference; LINE needs a place in the budget


@dataclass(frozen=True)
class Skip:
    reason: str


@dataclass(frozen=True)
class Wait:
    until: datetime
    reason: str


@dataclass(frozen=True)
class Stop:
    """Fail without sending (an earlier attempt may have reached the patient)."""

    reason: str


Route = Go | Skip | Wait | Stop


def read_batch(
    session: Session, claimed: Iterable[Claimed], now: datetime, settings: Settings
) -> Batch:
    """The patients of these deliveries, their facts and which tips each was sent
    when; and the digest, if one is among them."""
    claimed = list(claimed)
    ids = sorted({c.patient_id for c in claimed if c.patient_id is not None})
    digest = None
    if any(c.reason is Reason.DAILY_DIGEST for c in claimed):
        digest = digest_context(build_digest(session, now, settings), settings)
    paused = paused_ids(session) if any(c.campaign_id is not None for c in claimed) else frozenset()
    if not ids:
        return Batch({}, {}, defaultdict(dict), digest, paused)
    patients = list(session.scalars(select(Patient).where(Patient.id.in_(ids))))
    recipients = {
        p.id: Recipient(
            p.id,
            p.public_id,
            p.name,
            p.preferred_channel,
            p.line_user_id,
            p.email,
            contacts_of(p),
        )
        for p in patients
    }
    facts = {f.id: f for f in load_facts(session, now, patients)}
    recent_tips: defaultdict[int, dict[str, date]] = defaultdict(dict)
    for patient_id, tip_id, at in session.execute(
        select(Delivery.patient_id, Delivery.tip_id, func.max(Delivery.sent_at))
        .where(
            Delivery.patient_id.in_(ids),
            Delivery.tip_id.is_not(None),
            Delivery.state == DeliveryState.SENT,
        )
        .group_by(Delivery.patient_id, Delivery.tip_id)
    ):
        if patient_id is not None and tip_id and at:
            recent_tips[patient_id][tip_id] = local_date(at, settings.timezone)
    return Batch(recipients, facts, recent_tips, digest, paused)


def route(
    claimed: Claimed,
    recipient: Recipient | None,
    settings: Settings,
    holds: dict[ChannelName, Hold],
    now: datetime,
    key_age: timedelta | None,
    forced: ChannelName | None = None,
    paused: frozenset[str] = frozenset(),
) -> Route:
    """The channels a delivery may go by now, preferred first, or why it cannot go.

    Chosen again at every claim: a contact may have been blocked since planning, a
    channel held. A message that may have reached the patient goes by the same
    channel again or not at all; by LINE only while its retry key is young enough
    (`key_age`: since the first request that carried it)."""
    if claimed.maybe_sent and claimed.channel is not None:
        return _again_by(claimed.channel, recipient, settings, holds, now, key_age)
    if claimed.reason is Reason.DAILY_DIGEST:
        # Its channel is fixed: held, it waits (the other address has its own row).
        assert claimed.channel is not None  # digest rows are planned with their channel
        if not settings.digest.address(claimed.channel):
            return Skip(f"no digest {claimed.channel.value} address in the settings any more")
        return _open(claimed.channel, (claimed.channel,), holds, now)
    if recipient is None:
        return Skip("the patient is no longer in the database")
    if claimed.campaign_id is not None:
        campaign = campaign_of(claimed, settings)
        if campaign is None:
            return Skip(f"campaign {claimed.campaign_id!r} is no longer in the campaigns file")
        if not campaign.enabled or campaign.id in paused:
            # Resuming the campaign plans it again (a skipped message may come back).
            return Skip(WITHDRAWN_CAMPAIGN_PAUSED)
    contacts = recipient.contacts
    if forced is not None:
        if not contacts.usable(forced):
            return Skip(f"no usable {forced.value} contact")
        return _open(forced, (forced,), holds, now)
    preferred = recipient.preferred_channel
    other = ChannelName.EMAIL if preferred is ChannelName.LINE else ChannelName.LINE
    usable = tuple(c for c in (preferred, other) if contacts.usable(c))
    if not usable:
        return Skip(NO_USABLE_CONTACT)
    return _open(usable[0], usable, holds, now)


def _again_by(
    channel: ChannelName,
    recipient: Recipient | None,
    settings: Settings,
    holds: dict[ChannelName, Hold],
    now: datetime,
    key_age: timedelta | None,
) -> Route:
    """A message that may have reached the patient: by `channel` again, or not at all."""
    if channel is ChannelName.LINE and key_age is not None and retry_key_expired(key_age):
        return Stop(RETRY_KEY_EXPIRED)
    usable = (
        recipient.contacts.usable(channel)
        if recipient is not None
        else bool(settings.digest.address(channel))
    )
    if not usable:
        return Stop(f"its {channel.value} contact is no longer usable; {NOT_ANOTHER_WAY}")
    return _open(channel, (channel,), holds, now)


def _open(
    first: ChannelName,
    channels: tuple[ChannelName, ...],
    holds: dict[ChannelName, Hold],
    now: datetime,
) -> Route:
    """The channels that are not held, or a wait for the first hold to end."""
    open_channels = tuple(c for c in channels if c not in holds)
    if open_channels:
        return Go(open_channels)
    return held_by(holds[first], now)


def held_by(hold: Hold, now: datetime) -> Wait:
    until = now + HOLD_RECHECK if hold.until is None else min(hold.until, now + HOLD_RECHECK)
    label = QUOTA_HELD if hold.cause is HoldCause.QUOTA else f"{hold.channel.value} channel held"
    return Wait(until, f"{label}: {hold.reason}")


def campaign_of(claimed: Claimed, settings: Settings) -> Campaign | None:
    for campaign in settings.campaigns:
        if campaign.id == claimed.campaign_id:
            return campaign
    return None


def folder_of(claimed: Claimed, settings: Settings) -> str:
    """The folder in messages/ with this delivery's templates."""
    campaign = campaign_of(claimed, settings)
    return campaign.template if campaign is not None else claimed.reason.value


class Composer:
    """Renders messages with the practitioner's templates."""

    def __init__(self, settings: Settings, renderer: Renderer) -> None:
        self.settings = settings
        self.renderer = renderer

    def message(
        self, claimed: Claimed, channel: ChannelName, batch: Batch, day: Day
    ) -> tuple[OutgoingMessage, str | None]:
        """The message and the id of the tip it carries. Raises TemplateError when
        the template cannot be rendered."""
        if claimed.reason is Reason.DAILY_DIGEST:
            assert batch.digest is not None
            address = self.settings.digest.address(channel)
            return self.render(claimed, channel, address, batch.digest, None, day.now), None
        assert claimed.patient_id is not None
        recipient = batch.recipients[claimed.patient_id]
        facts = batch.facts[claimed.patient_id]
        now = day.now
        upcoming = [
            a.starts_at
            for a in facts.appointments
            if a.status is AppointmentStatus.BOOKED and a.starts_at > now
        ]
        appointment = next((a for a in facts.appointments if a.id == claimed.appointment_id), None)
        unsubscribe = (
            self.unsubscribe_url(recipient.public_id, STOPPABLE[claimed.reason])
            if channel is ChannelName.EMAIL and claimed.reason in STOPPABLE
            else None
        )
        tip = self._tip_for(claimed, facts.phase, batch, day)
        context = message_context(
            reason=claimed.reason,
            patient_name=recipient.name,
            phase=facts.phase,
            last_visit=last_visit(facts, now),
            next_visit=min(upcoming, default=None),
            appointment_at=appointment.starts_at if appointment else None,
            clinic=self.settings.clinic,
            now=now,
            tz=self.settings.timezone,
            # The footer links a web page; a mailto: fallback only goes in the header.
            unsubscribe_url=unsubscribe if unsubscribe and unsubscribe.startswith("http") else None,
            tip=tip.text if tip else None,
            season=season_label(day.seasons),
            reopens=day.reopens,
        )
        context["clinic"] = self.booking_links(context["clinic"], claimed.id)
        campaign = campaign_of(claimed, self.settings)
        if campaign is not None:
            assert claimed.campaign_day is not None
            context |= campaign_context(campaign, claimed.campaign_day, self.settings)
        message = self.render(
            claimed, channel, recipient.address(channel), context, unsubscribe, now
        )
        return message, tip.id if tip else None

    def render(
        self,
        claimed: Claimed,
        channel: ChannelName,
        address: str,
        context: dict[str, Any],
        unsubscribe: str | None,
        now: datetime,
    ) -> OutgoingMessage:
        name = template_in(folder_of(claimed, self.settings), channel)
        rendered = self.renderer.render(name, context)
        if channel is ChannelName.LINE:
            try:
                check_line_text(rendered.text)
            except DeliveryError as e:
                # What the template made is not a LINE message (an invalid Flex
                # message, a text too long): the template's problem, held until mended.
                raise TemplateError(f"{self.renderer.messages_dir / name}: {e.reason}") from None
        return OutgoingMessage(
            delivery_id=claimed.id,
            channel=channel,
            reason=claimed.reason,
            to=address,
            text=rendered.text,
            subject=rendered.subject,
            html=rendered.html,
            unsubscribe_url=unsubscribe,
            date=now,
        )

    def unsubscribe_url(self, public_id: str, kind: ConsentKind) -> str | None:
        """The patient's one-click link; settings refuse TAYORI_PUBLIC_URL without
        TAYORI_SECRET_KEY (and the reverse), so with neither set (previews, the demo)
        a mail to the clinic is the way to stop."""
        settings = self.settings
        if settings.public_url and settings.secret_key:
            return unsubscribe_url(
                settings.public_url, settings.secret_key, settings.clinic_slug, public_id, kind
            )
        if settings.clinic.email:
            return f"mailto:{settings.clinic.email}?subject={quote('配信停止')}"
        return None

    def booking_links(self, clinic: dict[str, str], delivery_id: str) -> dict[str, str]:
        """The clinic's booking URLs as this message's own links through `/r/<token>`,
        which count a press for the message (the desk's results) and redirect to the
        same URL; as they are when the installation has no public URL and key (then
        nothing could answer such a link), and in a staff member's copy, which is no
        delivery (`manual.send_copy`): its presses are not the patient's."""
        settings = self.settings
        if not (settings.public_url and settings.secret_key) or not is_delivery_id(delivery_id):
            return clinic
        links = dict(clinic)
        for key, target in BOOKING_URLS.items():
            if clinic[key]:
                links[key] = booking_link(
                    settings.public_url,
                    settings.secret_key,
                    settings.clinic_slug,
                    delivery_id,
                    target,
                )
        return links

    def _tip_for(self, claimed: Claimed, phase: Phase | None, batch: Batch, day: Day) -> Tip | None:
        """The self-care tip for this message. A retry keeps the tip its first
        attempt chose."""
        if claimed.tip_id in day.tips:
            return day.tips[claimed.tip_id]
        assert claimed.patient_id is not None
        tip = choose_tip(
            day.tips,
            patient_id=claimed.patient_id,
            phase=phase,
            seasons=day.seasons,
            day=day.day,
            recent=batch.recent_tips.get(claimed.patient_id, {}),
        )
        if tip is not None:  # a second message to the patient in this batch gets another
            batch.recent_tips[claimed.patient_id][tip.id] = day.day
        return tip

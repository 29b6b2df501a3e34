"""Channels: one module per way of reaching a patient.

A transport's `send()` returns a receipt or raises `DeliveryError`, whose `failure`
says what the dispatcher should do next; each channel reads its provider's answers
in one place and decides that there.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from scheduler.core.domain import ChannelName, Reason


@dataclass(frozen=True)
class OutgoingMessage:
    delivery_id: str  # stable across retries: the LINE retry key, the email Message-ID
    channel: ChannelName
    reason: Reason
    to: str
    text: str
    subject: str | None = None
    # An email's HTML part when its template has an `html` block; else it is made
    # from the text.
    html: str | None = None
    # https link that stops these messages in one click (email, RFC 8058); None for
    # messages that need none (the clinic's own digest).
    unsubscribe_url: str | None = None


@dataclass(frozen=True)
class Receipt:
    provider_message_id: str | None = None


class Failure(StrEnum):
    TRANSIENT = "transient"  # nothing was accepted: try again later
    # The provider may have accepted it (timeout, 5xx): try again with the same
    # delivery id, and only while the provider still recognises that id.
    UNCERTAIN = "uncertain"
    CONTACT_UNUSABLE = "contact_unusable"  # this address cannot receive: mark it
    CHANNEL_UNAVAILABLE = "channel_unavailable"  # credentials refused: stop the channel
    QUOTA_EXHAUSTED = "quota_exhausted"  # LINE's monthly limit is reached
    PERMANENT = "permanent"  # this message can never go as it is


class DeliveryError(Exception):
    def __init__(self, reason: str, failure: Failure = Failure.TRANSIENT) -> None:
        super().__init__(reason)
        self.reason = reason
        self.failure = failure

    @property
    def retryable(self) -> bool:
        return self.failure in (Failure.TRANSIENT, Failure.UNCERTAIN)


class Transport(Protocol):
    def send(self, message: OutgoingMessage) -> Receipt: ...

    def close(self) -> None:
        """Release what the transport holds between dispatch cycles (a connection)."""
        ...

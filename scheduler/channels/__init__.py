"""Channels: one module per way of reaching a patient.

A transport's `send()` returns a receipt or raises `DeliveryError`, whose `failure`
says what the dispatcher should do next; each channel reads its provider's answers
in one place and decides that there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from scheduler.core.domain import ChannelName, Reason
from scheduler.core.failure_policy import Failure

__all__ = ["DeliveryError", "Failure", "OutgoingMessage", "Receipt", "Replier", "Transport"]


@dataclass(frozen=True)
class OutgoingMessage:
    delivery_id: str  # stable across retries: the LINE retry key, the email Message-ID
    channel: ChannelName
    reason: Reason
    to: str
    text: str
    # When the message was composed, on the worker's clock (the cycle's `now`, which
    # `--now` and tests pin): the mail's Date header.
    date: datetime
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


class DeliveryError(Exception):
    def __init__(
        self, reason: str, failure: Failure = Failure.TRANSIENT, *, status: int | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.failure = failure
        self.status = status  # the provider's HTTP status, when it answered with one


class Transport(Protocol):
    def send(self, message: OutgoingMessage) -> Receipt: ...

    def close(self) -> None:
        """Release what the transport holds between dispatch cycles (a connection)."""
        ...


class Replier(Protocol):
    def reply(self, reply_token: str, text: str) -> None:
        """Answer a LINE webhook event (free of the monthly quota); DeliveryError if
        LINE refuses it or cannot be reached."""
        ...

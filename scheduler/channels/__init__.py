"""Channels: one module per way of reaching a patient.

A transport's `send()` returns a receipt or raises `DeliveryError`, which knows
whether the failure is permanent (stop, mark the contact) or transient (retry).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from scheduler.domain import ChannelName, Reason


@dataclass(frozen=True)
class OutgoingMessage:
    delivery_id: str  # stable across retries: the LINE retry key, the email Message-ID
    channel: ChannelName
    reason: Reason
    to: str
    text: str
    subject: str | None = None


@dataclass(frozen=True)
class Receipt:
    provider_message_id: str | None = None


class DeliveryError(Exception):
    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class Transport(Protocol):
    def send(self, message: OutgoingMessage) -> Receipt: ...

    def close(self) -> None:
        """Release what the transport holds between dispatch cycles (a connection)."""
        ...

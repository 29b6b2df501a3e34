"""Dispatching in tests: a stand-in for the provider at the channel boundary, and a
clinic whose nudges fall due at a known moment."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.channels import DeliveryError, OutgoingMessage, Receipt, Transport
from scheduler.clock import FixedClock
from scheduler.core.domain import ChannelName, Reason
from scheduler.messages.templates import Renderer
from scheduler.outbox.dispatcher import Dispatcher
from scheduler.outbox.planner import plan
from scheduler.runtime import Runtime
from scheduler.store.db import DatabaseClock, transaction
from scheduler.store.models import Delivery
from tests.integration.clinic import add_patient, visited

JST = ZoneInfo("Asia/Tokyo")
PLANNED_AT = datetime(2026, 11, 23, 9, 0, tzinfo=JST)
NUDGE_TIME = datetime(2026, 11, 25, 10, 0, tzinfo=JST)


@dataclass
class RecordingTransport:
    """Stands in for the provider at the channel boundary: records what arrives and
    fails on demand."""

    failures: list[DeliveryError] = field(default_factory=list)  # the next sends, any channel
    refused: dict[ChannelName, DeliveryError] = field(default_factory=dict)  # every send
    received: list[OutgoingMessage] = field(default_factory=list)
    tries: int = 0  # every call, refused or not
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: OutgoingMessage) -> Receipt:
        with self.lock:
            self.tries += 1
            if message.channel in self.refused:
                raise self.refused[message.channel]
            if self.failures:
                raise self.failures.pop(0)
            self.received.append(message)
        return Receipt(provider_message_id=f"test-{len(self.received)}")

    def close(self) -> None:
        pass


def dispatcher_with(
    runtime: Runtime, transport: Transport, database_time: datetime | None = None
) -> Dispatcher:
    """A dispatcher sending through `transport`; `database_time` pins the database's
    clock (on which leases are measured) to a moment."""
    return Dispatcher(
        runtime.sessions,
        runtime.settings,
        Renderer(runtime.settings.messages_dir),
        {ChannelName.LINE: transport, ChannelName.EMAIL: transport},
        database_clock=DatabaseClock(FixedClock(database_time)) if database_time else None,
    )


def nudged_patients(runtime: Runtime, count: int = 1, **patient: object) -> None:
    """Patients whose nudge falls due at NUDGE_TIME, planned into the outbox."""
    with transaction(runtime.sessions) as session:
        for n in range(1, count + 1):
            add_patient(session, PLANNED_AT, f"P{n}", **patient)  # type: ignore[arg-type]
            visited(session, PLANNED_AT, days_ago=1, external_id=f"P{n}")
        plan(session, PLANNED_AT, runtime.settings.rules)


def deliveries(sessions: sessionmaker[Session], reason: Reason) -> list[Delivery]:
    with sessions() as session:
        return list(session.scalars(select(Delivery).where(Delivery.reason == reason)))


def the_nudge(runtime: Runtime) -> Delivery:
    [nudge] = deliveries(runtime.sessions, Reason.CADENCE_NUDGE)
    return nudge

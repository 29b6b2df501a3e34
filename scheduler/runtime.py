"""Wiring: build the engine, renderer, channels and dispatcher from settings, and
the worker's one cycle, `tick`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from scheduler.channels import Transport
from scheduler.channels.email import SmtpTransport
from scheduler.channels.line import LineTransport
from scheduler.channels.preview import PreviewTransport
from scheduler.db import make_engine, session_factory, transaction
from scheduler.dispatcher import Dispatcher, DispatchSummary
from scheduler.domain import ChannelName
from scheduler.planner import PlanResult, plan, plan_digest
from scheduler.settings import Settings
from scheduler.templates import Renderer


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    dispatcher: Dispatcher

    def close(self) -> None:
        self.engine.dispose()


def open_runtime(settings: Settings) -> Runtime:
    """Each channel sends for real when its credentials are set; otherwise its
    messages are written as previews under the outbox directory."""
    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)
    preview = PreviewTransport(settings.outbox_dir, _sender(settings))
    transports: dict[ChannelName, Transport] = {
        ChannelName.LINE: preview,
        ChannelName.EMAIL: preview,
    }
    read_line_quota = None
    if settings.line_api is not None:
        line = LineTransport(settings.line_api, max_connections=settings.dispatch.concurrency)
        transports[ChannelName.LINE] = line
        read_line_quota = line.quota
    if settings.smtp is not None:
        transports[ChannelName.EMAIL] = SmtpTransport(settings.smtp)
    dispatcher = Dispatcher(
        sessions, settings, Renderer(settings.messages_dir), transports, read_line_quota
    )
    return Runtime(settings, engine, sessions, dispatcher)


def _sender(settings: Settings) -> str:
    if settings.smtp is not None:
        return settings.smtp.mail_from
    return f"{settings.clinic.name} <{settings.clinic.email or 'noreply@tayori.invalid'}>"


@dataclass(frozen=True)
class TickResult:
    planned: PlanResult
    dispatched: DispatchSummary


def tick(
    runtime: Runtime, now: datetime, should_stop: Callable[[], bool] = lambda: False
) -> TickResult:
    """One cycle of the worker: bring the outbox up to date, then send what is due."""
    with transaction(runtime.sessions) as session:
        planned = plan(session, now, runtime.settings.rules, runtime.settings)
        digests = plan_digest(session, now, runtime.settings)
    planned = replace(planned, created=planned.created + digests)
    dispatched = runtime.dispatcher.dispatch_due(now, should_stop)
    return TickResult(planned, dispatched)

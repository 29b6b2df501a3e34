"""Wiring: the engine, renderer, channels and dispatcher, built from the settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from scheduler.channels import Replier, Transport
from scheduler.core.domain import ChannelName
from scheduler.settings import Settings
from scheduler.store.db import make_engine, session_factory

if TYPE_CHECKING:
    from scheduler.channels.line import LineQuota
    from scheduler.outbox.dispatcher import Dispatcher
    from scheduler.web.events import EventProcessor


@dataclass
class Runtime:
    """What a command or the worker works with: the database, and the dispatcher
    with its channels (built on first use: most commands send nothing)."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]

    @cached_property
    def dispatcher(self) -> Dispatcher:
        from scheduler.messages.templates import Renderer
        from scheduler.outbox.dispatcher import Dispatcher

        return Dispatcher(
            self.sessions,
            self.settings,
            Renderer(self.settings.messages_dir),
            *_channels(self.settings),
        )

    @cached_property
    def replier(self) -> Replier:
        """Where replies to LINE's webhook events go: LINE's reply API, or previews
        under the outbox directory without an access token."""
        if self.settings.line_api is not None:
            from scheduler.channels.line import LineTransport

            return LineTransport(self.settings.line_api, max_connections=2)
        from scheduler.channels.preview import PreviewTransport

        return PreviewTransport(self.settings.outbox_dir, _sender(self.settings))

    @cached_property
    def events(self) -> EventProcessor:
        """LINE's webhook events, processed from the inbox."""
        from scheduler.web.events import EventProcessor

        return EventProcessor(self)

    def close(self) -> None:
        self.engine.dispose()


def open_runtime(settings: Settings) -> Runtime:
    engine = make_engine(settings.database_url)
    return Runtime(settings, engine, session_factory(engine))


def _channels(
    settings: Settings,
) -> tuple[dict[ChannelName, Transport], Callable[[], LineQuota] | None]:
    """Each channel sends for real when its credentials are set; otherwise its
    messages are written as previews under the outbox directory. The channels'
    libraries (the LINE SDK takes a second to import) are loaded only here."""
    from scheduler.channels.preview import PreviewTransport

    preview = PreviewTransport(settings.outbox_dir, _sender(settings))
    transports: dict[ChannelName, Transport] = {
        ChannelName.LINE: preview,
        ChannelName.EMAIL: preview,
    }
    read_line_quota = None
    if settings.line_api is not None:
        from scheduler.channels.line import LineTransport

        line = LineTransport(settings.line_api, max_connections=settings.dispatch.concurrency)
        transports[ChannelName.LINE] = line
        read_line_quota = line.quota
    if settings.smtp is not None:
        from scheduler.channels.email import SmtpTransport

        transports[ChannelName.EMAIL] = SmtpTransport(settings.smtp)
    return transports, read_line_quota


def _sender(settings: Settings) -> str:
    if settings.smtp is not None:
        return settings.smtp.mail_from
    return f"{settings.clinic.name} <{settings.clinic.email or 'noreply@tayori.invalid'}>"

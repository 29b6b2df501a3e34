"""Wiring: the engine, renderer, channels and dispatcher, built from the settings."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from scheduler.channels import Replier, Transport
from scheduler.core.config import ConfigError
from scheduler.core.domain import ChannelName
from scheduler.settings import Settings, clinic_settings
from scheduler.store.db import make_engine, session_factory

log = logging.getLogger(__name__)

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
    """The runtime of the clinic the settings are for."""
    [runtime] = open_runtimes([settings])
    return runtime


def open_runtimes(clinics: Sequence[Settings]) -> list[Runtime]:
    """A runtime for each clinic's settings, all on one engine (one pool of
    connections, whatever the number of clinics)."""
    engine = make_engine(clinics[0].database_url)
    return [
        Runtime(settings, engine, session_factory(engine, settings.clinic_id))
        for settings in clinics
    ]


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


class Clinics:
    """The runtime of every clinic of the installation, by slug, on the engine of the
    installation's own (for the web process, which answers for all of them). A
    clinic added while the process runs is found when it is first asked for; the
    registry is read again at most every RELOAD_SECONDS, whatever is asked for (a
    stranger posting to made-up clinics' addresses costs no query each time). A
    clinic whose settings cannot be read is left out, and said in the log."""

    RELOAD_SECONDS = 10.0

    def __init__(self, own: Runtime, env: Mapping[str, str]) -> None:
        self.own = own
        self.env = env
        self._by_slug = {own.settings.clinic_slug: own}
        self._lock = threading.Lock()
        self._loaded_at: float | None = None

    def find(self, slug: str) -> Runtime | None:
        if slug not in self._by_slug:
            self._load()
        return self._by_slug.get(slug)

    def every(self) -> list[Runtime]:
        self._load()
        return sorted(self._by_slug.values(), key=lambda runtime: runtime.settings.clinic_id)

    def _load(self) -> None:
        from scheduler.store.clinics import list_clinics
        from scheduler.store.db import reading

        with self._lock:
            now = time.monotonic()
            if self._loaded_at is not None and now - self._loaded_at < self.RELOAD_SECONDS:
                return
            self._loaded_at = now
            with reading(self.own.sessions) as session:
                entries = list_clinics(session)
            for entry in entries:
                if entry.slug in self._by_slug:
                    continue
                try:
                    settings = clinic_settings(
                        self.own.settings, self.env, entry.config_dir, entry.id, entry.slug
                    )
                except ConfigError as e:
                    log.error("clinic %s is not served: %s", entry.slug, e)
                    continue
                sessions = session_factory(self.own.engine, entry.id)
                self._by_slug[entry.slug] = Runtime(settings, self.own.engine, sessions)

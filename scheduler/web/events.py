"""LINE's webhook events, processed from the inbox (scheduler/store/inbox.py) and
answered: by the web process right after it has answered LINE, and by the worker
for any left behind. No Flask here: the worker uses this too.

An event's effect is committed before its reply is sent, and a reply that fails is
logged, not retried: a reply token answers once and only for a short while, and
undoing a link because LINE did not take its confirmation would be worse than a
confirmation that did not arrive.

The log says which event (its id) and what it did, never who sent it, what they
wrote, or the reply token.
"""

from __future__ import annotations

import logging
import traceback
from datetime import datetime
from typing import TYPE_CHECKING

from scheduler.channels import DeliveryError
from scheduler.messages.replies import reply_text
from scheduler.messages.templates import Renderer, TemplateError
from scheduler.store import inbox
from scheduler.store.db import reading

if TYPE_CHECKING:
    from scheduler.runtime import Runtime

log = logging.getLogger(__name__)


class EventProcessor:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._renderer = Renderer(runtime.settings.messages_dir)

    def _facts(self, event_id: str) -> dict[str, str]:
        """A log line's `extra=` (scheduler.logs)."""
        return {"clinic": self._runtime.settings.clinic_slug, "event_id": event_id}

    def process(self, event_id: str, now: datetime) -> bool:
        """Process one event and send its reply; whether it is processed (by this
        call or before)."""
        runtime = self._runtime
        try:
            done = inbox.process(runtime.sessions, event_id, now, runtime.settings.timezone)
        except Exception as e:
            self._failed(event_id, e)
            return False
        if done is None:
            return True
        log.info("LINE event %s: %s", event_id, done.outcome, extra=self._facts(event_id))
        if done.reply is not None:
            self._reply(event_id, done.reply)
        return True

    def process_pending(self, now: datetime) -> int:
        """Process the events left unprocessed (with attempts left); how many were."""
        with reading(self._runtime.sessions) as session:
            waiting = inbox.pending(session)
        return sum(self.process(event_id, now) for event_id in waiting)

    def _failed(self, event_id: str, error: Exception) -> None:
        try:
            attempts = inbox.record_failure(self._runtime.sessions, event_id, error)
        except Exception as e:
            log.error(
                "LINE event %s failed (%s), and so did recording it (%s); tried again later",
                event_id,
                inbox.describe_error(error),
                inbox.describe_error(e),
                extra=self._facts(event_id),
            )
            return
        given_up = attempts >= inbox.MAX_ATTEMPTS
        log.error(
            "LINE event %s failed (attempt %d of %d): %s; %s",
            event_id,
            attempts,
            inbox.MAX_ATTEMPTS,
            inbox.describe_error(error),
            "given up: it stays in the inbox" if given_up else "tried again by the worker",
            extra=self._facts(event_id),
        )
        # Where it failed, for a developer: the frames without the error's message,
        # which may quote a value (a database's "Key (line_user_id)=(U…)").
        where = "".join(traceback.format_tb(error.__traceback__))
        log.debug("LINE event %s failed here:\n%s", event_id, where, extra=self._facts(event_id))

    def _reply(self, event_id: str, reply: inbox.Reply) -> None:
        settings = self._runtime.settings
        try:
            text = reply_text(reply.say, settings.clinic, self._renderer, linked=reply.linked)
            self._runtime.replier.reply(reply.token, text)
        except TemplateError as e:
            log.error(
                "LINE event %s: no reply, its template cannot render: %s",
                event_id,
                e,
                extra=self._facts(event_id),
            )
        except DeliveryError as e:
            log.warning(
                "LINE event %s: reply not sent: %s", event_id, e.reason, extra=self._facts(event_id)
            )
        except Exception as e:
            log.error(
                "LINE event %s: reply not sent (%s)",
                event_id,
                inbox.describe_error(e),
                extra=self._facts(event_id),
            )
        else:
            log.info(
                "LINE event %s: replied (%s)", event_id, reply.say, extra=self._facts(event_id)
            )

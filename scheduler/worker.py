"""The worker: `tick` is one cycle (plan into the outbox, then send what is due),
and APScheduler fires it every minute in this process.

APScheduler only keeps this process's timers (in memory); the outbox in the
database is the shared state, so several workers can run side by side.
SIGTERM and SIGINT set a flag: the messages in flight are finished, those claimed
but not yet sent go back to the outbox, then we exit.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from scheduler.clock import Clock
from scheduler.core.domain import HoldCause
from scheduler.core.window import is_open, next_opening
from scheduler.messages.lint import lint_messages
from scheduler.outbox.dispatcher import DispatchSummary
from scheduler.outbox.planner import PlanResult, plan, plan_digest
from scheduler.runtime import Runtime
from scheduler.store.channel_state import release_holds
from scheduler.store.db import transaction
from scheduler.store.heartbeats import record_cycle, this_worker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TickResult:
    planned: PlanResult
    dispatched: DispatchSummary
    events: int = 0  # LINE webhook events processed from the inbox


def tick(
    runtime: Runtime, now: datetime, should_stop: Callable[[], bool] = lambda: False
) -> TickResult:
    """One cycle of the worker: process the LINE webhook events left in the inbox
    (their links and consent count in this cycle's plan), bring the outbox up to
    date, then send what is due."""
    events = runtime.events.process_pending(now)
    with transaction(runtime.sessions) as session:
        planned = plan(session, now, runtime.settings.rules, runtime.settings)
        digests = plan_digest(session, now, runtime.settings)
    planned = replace(planned, created=planned.created + digests)
    dispatched = runtime.dispatcher.dispatch_due(now, should_stop)
    return TickResult(planned, dispatched, events)


class Worker:
    def __init__(self, runtime: Runtime, clock: Clock) -> None:
        self.runtime = runtime
        self.clock = clock
        self.stopping = threading.Event()
        self._window_was_open: bool | None = None
        # The clinic whose lines these are (scheduler.logs).
        self._facts = {"clinic": runtime.settings.clinic_slug}
        self.name = this_worker()

    def run_once(self) -> None:
        """One scheduled cycle, recorded as this worker's heartbeat once complete;
        an error is logged and the next cycle tries again."""
        now = self.clock.now()
        # The duration is real time even when the clock is pinned (`--now`, tests).
        started = time.monotonic()
        try:
            self._log_window(now)
            result = tick(self.runtime, now, self.stopping.is_set)
        except Exception:
            log.exception("tick failed; retrying at the next cycle", extra=self._facts)
            return
        self._record_heartbeat(time.monotonic() - started)
        planned = result.planned
        if planned.created or planned.revived or planned.withdrawn:
            log.info(
                "planned %d new, %d revived, %d withdrawn",
                planned.created,
                planned.revived,
                planned.withdrawn,
                extra=self._facts,
            )

    def _record_heartbeat(self, duration_seconds: float) -> None:
        try:
            with transaction(self.runtime.sessions) as session:
                record_cycle(session, self.name, self.clock.now(), duration_seconds)
        except Exception:
            # The cycle's work is done; a missing heartbeat only shows in /healthz.
            log.exception("could not record this cycle's heartbeat")

    def _log_window(self, now: datetime) -> None:
        rules = self.runtime.settings.rules
        open_now = is_open(now, rules.window, rules.timezone)
        if open_now != self._window_was_open:
            if open_now:
                log.info(
                    "send window open (%s %s)",
                    rules.window.describe(),
                    rules.timezone.key,
                    extra=self._facts,
                )
            else:
                opens = next_opening(now, rules.window, rules.timezone).astimezone(rules.timezone)
                log.info(
                    "send window closed (%s %s): messages wait until %s",
                    rules.window.describe(),
                    rules.timezone.key,
                    opens.isoformat(timespec="minutes"),
                    extra=self._facts,
                )
        self._window_was_open = open_now

    def start_up(self) -> None:
        """Check the templates and tips, and give held channels another chance."""
        report = lint_messages(self.runtime.settings, self.clock.now())
        for problem in report.problems:
            log.error("template problem: %s", problem)
        if not report.problems:
            log.info("%s", report.summary)
        with transaction(self.runtime.sessions) as session:
            # The operator may have mended the credentials or the server's address
            # before this start.
            for cause in (HoldCause.CREDENTIALS, HoldCause.UNREACHABLE):
                if release_holds(session, cause):
                    log.info("channels held (%s) are tried again", cause.value)

    def run(self) -> None:
        """Run until SIGTERM or SIGINT; the first cycle starts at once."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.start_up()
        cycle_seconds = self.runtime.settings.dispatch.cycle_seconds
        scheduler = BackgroundScheduler(timezone=UTC)
        scheduler.add_job(
            self.run_once,
            IntervalTrigger(seconds=cycle_seconds),
            id="tick",
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
        )
        scheduler.start()
        log.info("worker started; a cycle every %d seconds", cycle_seconds)
        self.stopping.wait()
        log.info("stopping: finishing the message in flight")
        scheduler.shutdown(wait=True)
        self.runtime.close()
        log.info("worker stopped")

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping.set()

"""The worker: `tick` is one cycle (plan into the outbox, then send what is due),
and APScheduler fires it every minute in this process.

APScheduler only keeps this process's timers (in memory); the outbox in the
database is the shared state, so several workers can run side by side. A worker
serves every clinic of the installation (or those it is given): each cycle goes
round them, starting one further each time, and each clinic may claim messages for
its share of the cycle's claiming time, so that one clinic's big campaign never
holds up another's appointment reminders.
SIGTERM and SIGINT set a flag: the messages in flight are finished, those claimed
but not yet sent go back to the outbox, then we exit.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from scheduler.clock import Clock
from scheduler.core.domain import HoldCause
from scheduler.core.window import is_open, next_opening
from scheduler.messages.lint import lint_messages
from scheduler.outbox.dispatcher import CLAIMING_SECONDS, DispatchSummary
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
    runtime: Runtime,
    now: datetime,
    should_stop: Callable[[], bool] = lambda: False,
    claiming_seconds: float = CLAIMING_SECONDS,
) -> TickResult:
    """One cycle of the worker: process the LINE webhook events left in the inbox
    (their links and consent count in this cycle's plan), bring the outbox up to
    date, then send what is due."""
    events = runtime.events.process_pending(now)
    with transaction(runtime.sessions) as session:
        planned = plan(session, now, runtime.settings.rules, runtime.settings)
        digests = plan_digest(session, now, runtime.settings)
    planned = replace(planned, created=planned.created + digests)
    dispatched = runtime.dispatcher.dispatch_due(now, should_stop, claiming_seconds)
    return TickResult(planned, dispatched, events)


class Worker:
    def __init__(
        self,
        runtimes: Sequence[Runtime],
        clock: Clock,
        claiming_seconds: float = CLAIMING_SECONDS,
    ) -> None:
        if not runtimes:
            raise ValueError("a worker serves at least one clinic")
        self.runtimes = list(runtimes)
        self.clock = clock
        self.claiming_seconds = claiming_seconds
        self.stopping = threading.Event()
        self.name = this_worker()
        self._window_was_open: dict[int, bool] = {}
        self._first = 0  # the clinic that goes first this cycle

    def run_once(self) -> None:
        """One scheduled cycle: every clinic in turn, the first one further round each
        time, each claiming messages for its share of the claiming time; the cycle is
        recorded as this worker's heartbeat. An error is logged and the next cycle
        tries again."""
        now = self.clock.now()
        # The duration is real time even when the clock is pinned (`--now`, tests).
        started = time.monotonic()
        share = self.claiming_seconds / len(self.runtimes)
        turn = self.runtimes[self._first :] + self.runtimes[: self._first]
        self._first = (self._first + 1) % len(self.runtimes)
        for runtime in turn:
            if self.stopping.is_set():
                return
            self._run_clinic(runtime, now, share)
        # A clinic whose cycle failed is in the log and in the metrics (its oldest due
        # message ages): the worker itself is alive. With the database gone, the
        # heartbeat cannot be written either.
        self._record_heartbeat(time.monotonic() - started)

    def _run_clinic(self, runtime: Runtime, now: datetime, claiming_seconds: float) -> None:
        facts = _facts(runtime)
        try:
            self._log_window(runtime, now)
            result = tick(runtime, now, self.stopping.is_set, claiming_seconds)
        except Exception:
            log.exception("tick failed; retrying at the next cycle", extra=facts)
            return
        planned = result.planned
        if planned.created or planned.revived or planned.withdrawn:
            log.info(
                "planned %d new, %d revived, %d withdrawn",
                planned.created,
                planned.revived,
                planned.withdrawn,
                extra=facts,
            )

    def _record_heartbeat(self, duration_seconds: float) -> None:
        try:
            # The heartbeat is the worker's, not a clinic's: any clinic's sessions do.
            with transaction(self.runtimes[0].sessions) as session:
                record_cycle(session, self.name, self.clock.now(), duration_seconds)
        except Exception:
            # The cycle's work is done; a missing heartbeat only shows in /healthz.
            log.exception("could not record this cycle's heartbeat")

    def _log_window(self, runtime: Runtime, now: datetime) -> None:
        settings = runtime.settings
        rules = settings.rules
        open_now = is_open(now, rules.window, rules.timezone)
        if open_now != self._window_was_open.get(settings.clinic_id):
            if open_now:
                log.info(
                    "send window open (%s %s)",
                    rules.window.describe(),
                    rules.timezone.key,
                    extra=_facts(runtime),
                )
            else:
                opens = next_opening(now, rules.window, rules.timezone).astimezone(rules.timezone)
                log.info(
                    "send window closed (%s %s): messages wait until %s",
                    rules.window.describe(),
                    rules.timezone.key,
                    opens.isoformat(timespec="minutes"),
                    extra=_facts(runtime),
                )
        self._window_was_open[settings.clinic_id] = open_now

    def start_up(self) -> None:
        """Check each clinic's templates and tips, and give held channels another
        chance."""
        for runtime in self.runtimes:
            facts = _facts(runtime)
            report = lint_messages(runtime.settings, self.clock.now())
            for problem in report.problems:
                log.error("template problem: %s", problem, extra=facts)
            if not report.problems:
                log.info("%s", report.summary, extra=facts)
            with transaction(runtime.sessions) as session:
                # The operator may have mended the credentials or the server's
                # address before this start.
                for cause in (HoldCause.CREDENTIALS, HoldCause.UNREACHABLE):
                    if release_holds(session, cause):
                        log.info("channels held (%s) are tried again", cause.value, extra=facts)

    def run(self) -> None:
        """Run until SIGTERM or SIGINT; the first cycle starts at once."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.start_up()
        # The clinic that wants the shortest cycle sets it for all.
        cycle_seconds = min(r.settings.dispatch.cycle_seconds for r in self.runtimes)
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
        log.info(
            "worker started for %d clinic(s); a cycle every %d seconds",
            len(self.runtimes),
            cycle_seconds,
        )
        self.stopping.wait()
        log.info("stopping: finishing the message in flight")
        scheduler.shutdown(wait=True)
        log.info("worker stopped")

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping.set()


def _facts(runtime: Runtime) -> dict[str, str]:
    """The clinic whose lines these are (scheduler.logs)."""
    return {"clinic": runtime.settings.clinic_slug}

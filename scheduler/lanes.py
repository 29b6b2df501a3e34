"""Lanes: a fixed number of threads that each take the next piece of work and do it,
so that the network waits of several messages overlap while one loop claims and
composes the next ones.

The loop hands work in with `put` (which waits while every lane is busy and the
queue is full) and can ask to be woken when a piece of work finishes: a message
that comes back to `planned` (rerouted to another contact, or held) may be
claimable again. `GroupCommit` lets the lanes record their outcomes in shared
transactions.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Work = TypeVar("Work")


class Lanes(Generic[Work]):
    def __init__(self, count: int, do: Callable[[Work], None], name: str = "lane") -> None:
        self._do = do
        self._queue: queue.Queue[Work | None] = queue.Queue(maxsize=count)
        self._changed = threading.Condition()
        self._in_flight = 0
        self._finished = 0
        self.error: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{n}", daemon=True)
            for n in range(count)
        ]

    def __enter__(self) -> Lanes[Work]:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        if self.error is not None and error is None:
            raise self.error

    def put(self, work: Work) -> None:
        with self._changed:
            self._in_flight += 1
        self._queue.put(work)

    @property
    def finished(self) -> int:
        """How many pieces of work have finished so far."""
        with self._changed:
            return self._finished

    def wait_for_more(self, seen: int) -> bool:
        """Wait until work finishes beyond the first `seen`; False at once when
        nothing is in flight and nothing finished since."""
        with self._changed:
            while self._finished == seen and self._in_flight > 0:
                self._changed.wait()
            return self._finished != seen

    def _run(self) -> None:
        while (work := self._queue.get()) is not None:
            try:
                # After a failure the remaining work is only drained: what it left
                # half done is found again by the next cycle.
                if self.error is None:
                    self._do(work)
            except BaseException as e:
                log.exception("a lane stopped on an unexpected error")
                self.error = self.error or e
            finally:
                with self._changed:
                    self._in_flight -= 1
                    self._finished += 1
                    self._changed.notify_all()


class GroupCommit(Generic[Work]):
    """Writes what the lanes report in as few transactions as the load allows, and
    never leaves a report only in memory: `add` returns once its item is written,
    by its own lane or by the lane that was writing when it arrived (one writer at
    a time; whoever writes next takes everything waiting)."""

    def __init__(self, write: Callable[[list[Work]], None]) -> None:
        self._write = write
        self._waiting: list[Work] = []
        self._waiting_lock = threading.Lock()
        self._writing = threading.Lock()

    @property
    def waiting(self) -> int:
        """How many reported items wait for a writer."""
        with self._waiting_lock:
            return len(self._waiting)

    def add(self, item: Work) -> None:
        with self._waiting_lock:
            self._waiting.append(item)
        with self._writing:
            # Here `item` is either written already or still waiting: write what waits.
            with self._waiting_lock:
                group, self._waiting = self._waiting, []
            if not group:
                return
            try:
                self._write(group)
            except BaseException:
                with self._waiting_lock:  # for the next writer; this lane reports the error
                    self._waiting = group + self._waiting
                raise

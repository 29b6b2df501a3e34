"""Lanes: a fixed number of threads that each take the next piece of work and do it,
so that the network waits of several messages overlap while one loop claims and
composes the next ones.

The loop hands work in with `put` (which waits while every lane is busy and the
queue is full) and can ask to be woken when a piece of work made more work: `do`
returns True for that (a message that comes back to `planned`, rerouted to another
contact or held, may be claimable again). `GroupCommit` lets the lanes record
their outcomes in shared transactions.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Work = TypeVar("Work")
Result = TypeVar("Result")


class Lanes(Generic[Work]):
    def __init__(self, count: int, do: Callable[[Work], bool], name: str = "lane") -> None:
        self._do = do
        self._queue: queue.Queue[Work | None] = queue.Queue(maxsize=count)
        self._changed = threading.Condition()
        self._in_flight = 0
        self._made_more = 0
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
    def made_more(self) -> int:
        """How many pieces of work so far made more work (`do` returned True)."""
        with self._changed:
            return self._made_more

    def wait_for_more(self, seen: int) -> bool:
        """Wait until more than `seen` pieces of work made more work (True) or
        nothing is in flight any more (False, unless one did meanwhile)."""
        with self._changed:
            while self._made_more == seen and self._in_flight > 0:
                self._changed.wait()
            return self._made_more != seen

    def _run(self) -> None:
        while (work := self._queue.get()) is not None:
            made_more = False
            try:
                # Every piece is handed to `do`, after a failure too: `do` sees
                # `error` and can put its work back rather than leave it half done.
                made_more = self._do(work)
            except BaseException as e:
                log.exception("work in a lane failed unexpectedly; the cycle stops")
                self.error = self.error or e
            finally:
                with self._changed:
                    self._in_flight -= 1
                    self._made_more += made_more
                    self._changed.notify_all()


class GroupCommit(Generic[Work, Result]):
    """Writes what the lanes report in as few transactions as the load allows, and
    never lets a lane go on before its report is written: `add` returns once its
    item is written, by its own lane or by the lane that was writing when it
    arrived (one writer at a time; whoever writes next takes everything waiting),
    with what the write said of that item, and raises if the write failed."""

    def __init__(self, write: Callable[[list[Work]], list[Result]]) -> None:
        self._write = write
        self._waiting: list[_Ticket[Work, Result]] = []
        self._waiting_lock = threading.Lock()
        self._writing = threading.Lock()

    @property
    def waiting(self) -> int:
        """How many reported items wait for a writer."""
        with self._waiting_lock:
            return len(self._waiting)

    def add(self, item: Work) -> Result:
        ticket: _Ticket[Work, Result] = _Ticket(item)
        with self._waiting_lock:
            self._waiting.append(ticket)
        with self._writing:
            if not ticket.done:
                with self._waiting_lock:
                    group, self._waiting = self._waiting, []
                try:
                    results = self._write([waiting.item for waiting in group])
                except BaseException as e:
                    for waiting in group:
                        waiting.done, waiting.error = True, e
                    raise
                for waiting, result in zip(group, results, strict=True):
                    waiting.done, waiting.result = True, result
        if ticket.error is not None:
            raise ticket.error
        assert ticket.done
        return ticket.result  # type: ignore[return-value]


@dataclass
class _Ticket(Generic[Work, Result]):
    item: Work
    done: bool = False
    result: Result | None = None
    error: BaseException | None = None

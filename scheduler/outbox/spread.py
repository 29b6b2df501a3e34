"""Spreading a large plan's reading and rules over processes.

A plan of a whole clinic (the first, after a settings change, when a campaign
occurrence starts) and the dry run read each patient's facts and run the rules on
them: plain Python, a core's work, and independent from one batch of patients to the
next. With more than one core, the batches go to child processes, each reading
through a connection of its own; the parent gets back what the rules decided and
writes it itself, in its one transaction, while the children read the next batches.

What a child reads is what the parent would have read: the patients being planned
(their `replans` rows) are locked by the parent's transaction before any batch is
read, and a change of their facts marks them by updating those rows, so it cannot
commit before the plan does (store/replan.py). A child reads the committed facts,
never the parent's own writes, which are outbox rows and `replan_at`, not facts.

Children are forked from a fork server (outbox/fork_server.py), a process of its own
started once with the planner imported, not from the worker itself: a worker has
threads (its scheduler, the dispatcher's lanes), and a forked copy of a threaded
process can hang on a lock some other thread held. The server's start costs about
as much as importing the planner (under a second; `tayori plan` and `tayori tick`
start it as they start, and a plan that starts it reads the first batches itself
meanwhile), and a plan is spread only from `Spreading.from_patients` patients on.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from scheduler.outbox import fork_server
from scheduler.settings import Spreading
from scheduler.store.clinics import clinic_of

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
# A function of a session and a batch of patient ids, run in a child process.
BatchWork = Callable[Concatenate[Session, Sequence[int], P], T]


# The collector's thresholds while a plan runs: a young generation's collection at
# 50,000 allocations rather than 700, and the full ones almost never.
_PLANNING_THRESHOLDS = (50_000, 20, 100)
_collector = threading.Lock()
_planning = 0
_thresholds_before: tuple[int, int, int] = gc.get_threshold()

# About as long as the fork server takes to start and import the planner: what a
# plan that starts it reads itself meanwhile.
_FORK_SERVER_START_SECONDS = 0.4


@contextmanager
def rarely_collecting() -> Iterator[None]:
    """Python's cyclic garbage collector, nearly paused while a plan runs. A plan
    allocates millions of small objects that live until it ends and form no cycles:
    with the usual thresholds every full collection walks all of them again, a
    tenth of a plan's time and a fifth of a dry run's. Reference counting still
    frees what is dropped; the thresholds come back when the last plan of the
    process (a web process may run several at once) ends."""
    global _planning, _thresholds_before
    with _collector:
        if _planning == 0:
            _thresholds_before = gc.get_threshold()
            gc.set_threshold(*_PLANNING_THRESHOLDS)
        _planning += 1
    try:
        yield
    finally:
        with _collector:
            _planning -= 1
            if _planning == 0:
                gc.set_threshold(*_thresholds_before)


@contextmanager
def spread(
    session: Session,
    work: BatchWork[P, T],
    groups: Sequence[Sequence[int]],
    spreading: Spreading,
    *args: P.args,
    **kwargs: P.kwargs,
) -> Iterator[Iterator[T]]:
    """`work(session, group, *args, **kwargs)` for each group of patient ids, in their
    order: in child processes when the settings allow more than one and there are
    enough patients, on a database another process can open; else in this one, on
    `session`. The arguments go to the children by pickling.

    A context, so that the children are stopped whatever ends it (an error, Ctrl-C,
    a caller that stops early): `with spread(...) as answers: for answer in answers:`.
    """
    answers = _answers(session, work, groups, spreading, *args, **kwargs)
    try:
        yield answers
    finally:
        answers.close()


def _answers(
    session: Session,
    work: BatchWork[P, T],
    groups: Sequence[Sequence[int]],
    spreading: Spreading,
    *args: P.args,
    **kwargs: P.kwargs,
) -> Generator[T, None, None]:
    patients = sum(len(group) for group in groups)
    url = _shared_url(session)
    processes = spreading.processes
    if processes < 2 or len(groups) < 2 or patients < spreading.from_patients or url is None:
        for group in groups:
            yield work(session, group, *args, **kwargs)
        return
    done = 0
    if fork_server.start(url):
        # While it starts and imports the planner, this process reads the first
        # batches itself (at most its share), rather than wait for the children.
        starting = time.monotonic() + _FORK_SERVER_START_SECONDS
        while done < len(groups) // (processes + 1) and time.monotonic() < starting:
            yield work(session, groups[done], *args, **kwargs)
            done += 1
    log.debug("%d batches of patients sent to %d other processes", len(groups) - done, processes)
    answers = _in_children(url, clinic_of(session), work, groups[done:], processes, args, kwargs)
    try:
        for answer in answers:
            yield answer
            done += 1
    except BrokenProcessPool:
        # A child ended without answering (killed for its memory, say): the rest is
        # done here, as if the plan had never been spread, rather than failing it at
        # every cycle.
        log.warning(
            "a planning process ended abruptly; %d batch(es) of patients are planned "
            "in this process instead",
            len(groups) - done,
        )
        for group in groups[done:]:
            yield work(session, group, *args, **kwargs)
    finally:
        answers.close()  # the children's pool is shut down, whatever happened


def _in_children(
    url: str,
    clinic_id: int,
    work: BatchWork[P, T],
    groups: Sequence[Sequence[int]],
    processes: int,
    args: tuple[object, ...],
    kwargs: dict[str, object],
) -> Generator[T, None, None]:
    context = multiprocessing.get_context("forkserver")
    pool = ProcessPoolExecutor(
        max_workers=processes, mp_context=context, initializer=_leave_interrupts_to_the_parent
    )
    try:
        # A few batches ahead of the parent, not all of them: what the children
        # decided waits in memory only until the parent has written it.
        pending: deque[Future[T]] = deque()
        for group in groups:
            pending.append(pool.submit(_in_child, url, clinic_id, work, group, args, kwargs))
            if len(pending) > 2 * processes:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        # On an error, or a caller that stops early, the batches not started are dropped.
        pool.shutdown(wait=True, cancel_futures=True)


def _shared_url(session: Session) -> str | None:
    """The database's URL, password included, if another process can open the same
    database (not an in-memory SQLite one). A SQLite file's path is made absolute:
    the fork server keeps the directory it started in."""
    url = session.get_bind().engine.url
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            return None
        url = url.set(database=str(Path(url.database).resolve()))
    return url.render_as_string(hide_password=False)


def _leave_interrupts_to_the_parent() -> None:
    # Ctrl-C reaches every process of the terminal's group: the worker stops as it
    # does on SIGINT, and its children finish the batch at hand rather than failing
    # it with KeyboardInterrupt (which the parent would take for a plan's error).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# A child's sessions, by database and clinic: made once, used for every batch it is given.
_sessions: dict[tuple[str, int], sessionmaker[Session]] = {}


def _in_child(
    url: str,
    clinic_id: int,
    work: Callable[..., T],
    group: Sequence[int],
    args: tuple[object, ...],
    kwargs: dict[str, object],
) -> T:
    # Imported here: the parent needs none of this to send the work.
    from scheduler.store.db import make_engine, reading, session_factory

    key = (url, clinic_id)
    if key not in _sessions:
        _sessions[key] = session_factory(make_engine(url), clinic_id)
    with rarely_collecting(), reading(_sessions[key]) as session:
        return work(session, group, *args, **kwargs)

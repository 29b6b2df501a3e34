"""The claims a worker holds, kept alive while it works on them.

A claim's lease ends at a moment of the database's clock. While the worker still has
a claimed delivery to send (queued for a lane, or being sent), a thread renews the
leases every third of their length, so a slow but live send keeps its row and only a
dead worker's rows come back to the others.

A lane asks `holds` before it sends: the worker's own measure of how long the lease
surely lasts (from the last renewal that succeeded, on a monotonic clock, less a
margin), and whether the last renewal found the row taken over. A worker cut off
from its database stops sending once its leases may have ended, rather than risk a
message another worker has taken.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from types import TracebackType

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from scheduler.outbox import transitions
from scheduler.outbox.transitions import Claim
from scheduler.store.db import DatabaseClock, transaction

log = logging.getLogger(__name__)


class Leases:
    def __init__(
        self, sessions: sessionmaker[Session], clock: DatabaseClock, lease: timedelta
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._lease = lease
        # Sure to last: a margin for the database's clock moving on between its
        # reading and the commit, and for a send that starts just before the end.
        self._sure_for = lease.total_seconds() * 0.8
        self._lock = threading.Lock()
        self._held: dict[str, set[str]] = {}  # token → ids still held
        self._valid_until: dict[str, float] = {}  # token → monotonic deadline
        self._lost: set[str] = set()
        self._db_time = (datetime.min, 0.0)  # the database's time, and when it was read
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leases", daemon=True)

    def __enter__(self) -> Leases:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def took(self, token: str, ids: Iterable[str], db_now: datetime, claimed_at: float) -> None:
        """A claim was committed: `claimed_at` is the monotonic time before its
        transaction began, `db_now` the database's time it was claimed at."""
        with self._lock:
            self._held[token] = set(ids)
            self._valid_until[token] = claimed_at + self._sure_for
            self._db_time = (db_now, claimed_at)

    def done(self, claim: Claim) -> None:
        """The claim's outcome is recorded (or dropped): no more renewing."""
        with self._lock:
            held = self._held.get(claim.token)
            if held is not None:
                held.discard(claim.id)
                if not held:
                    del self._held[claim.token]
                    del self._valid_until[claim.token]

    def holds(self, claim: Claim) -> bool:
        with self._lock:
            if claim.id in self._lost:
                return False
            return time.monotonic() < self._valid_until.get(claim.token, 0.0)

    def db_now(self) -> datetime:
        """The database's time now, as last read plus the time gone since."""
        with self._lock:
            read, at = self._db_time
        return read + timedelta(seconds=time.monotonic() - at)

    def _run(self) -> None:
        interval = self._lease.total_seconds() / 3
        while not self._stop.wait(interval):
            try:
                self.renew()
            except SQLAlchemyError as e:
                # Tried again at the next interval; until then `holds` says how long
                # the leases surely last.
                log.warning(
                    "leases could not be renewed (%s); trying again",
                    str(e).splitlines()[0][:200],
                )

    def renew(self) -> None:
        with self._lock:
            held = {token: set(ids) for token, ids in self._held.items()}
        if not held:
            return
        started = time.monotonic()
        with transaction(self._sessions) as session:
            db_now = self._clock.read(session)
            taken_over = transitions.renew(session, held, db_now, self._lease)
        if taken_over:
            log.warning(
                "%d claimed deliveries were taken over by another worker: not sent here",
                len(taken_over),
            )
        with self._lock:
            self._db_time = (db_now, started)
            self._lost |= taken_over
            for token in held:
                if token in self._valid_until:
                    self._valid_until[token] = started + self._sure_for

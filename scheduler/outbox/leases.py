"""The claims a worker holds, kept alive while it works on them.

A claim's lease ends at a moment of the database's clock. While the worker still has
a claimed delivery to send (queued for a lane, or being sent), a thread renews the
leases every third of their length, so a slow but live send keeps its row and only a
dead worker's rows come back to the others.

A lane asks `holds` before it sends: the worker's own measure of how long the row's
lease surely lasts (from the last renewal of that row that succeeded, on a monotonic
clock, less a margin), and whether a renewal found the row taken over. A worker cut
off from its database stops sending once its leases may have ended, rather than risk
a message another worker has taken. (A send already under way finishes: keep
`lease_seconds` well above the channels' timeouts, 10 s for LINE and 30 s for SMTP.)
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
        self._held: dict[str, tuple[str, float]] = {}  # id → (token, monotonic deadline)
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
        deadline = claimed_at + self._sure_for
        with self._lock:
            self._held.update({i: (token, deadline) for i in ids})
            self._db_time = (db_now, claimed_at)

    def done(self, claim: Claim) -> None:
        """The claim's outcome is recorded (or dropped): no more renewing."""
        with self._lock:
            if self._held.get(claim.id, ("", 0.0))[0] == claim.token:
                del self._held[claim.id]

    def holds(self, claim: Claim) -> bool:
        with self._lock:
            token, deadline = self._held.get(claim.id, ("", 0.0))
        return token == claim.token and time.monotonic() < deadline

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
            held: dict[str, set[str]] = {}
            for delivery_id, (token, _) in self._held.items():
                held.setdefault(token, set()).add(delivery_id)
        if not held:
            return
        started = time.monotonic()
        with transaction(self._sessions) as session:
            db_now = self._clock.read(session)
            renewed, taken_over = transitions.renew(session, held, db_now, self._lease)
        if taken_over:
            log.warning(
                "%d claimed deliveries were taken over by another worker: not sent here",
                len(taken_over),
            )
        with self._lock:
            self._db_time = (db_now, started)
            for delivery_id in taken_over:
                self._held.pop(delivery_id, None)
            # Only the rows renewed last longer; a row another transaction was writing
            # keeps the deadline of its last renewal.
            for delivery_id in renewed:
                if delivery_id in self._held:
                    token, _ = self._held[delivery_id]
                    self._held[delivery_id] = (token, started + self._sure_for)

"""Dispatch throughput through the real channels: LINE and SMTP servers on loopback.

    .venv/bin/python bench/dispatch_channels.py --channel line --concurrency 8,16,32
    .venv/bin/python bench/dispatch_channels.py --channel email --concurrency 1,4,8
    .venv/bin/python bench/dispatch_channels.py --channel line --concurrency 32 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/tayori_bench

The PostgreSQL database is emptied (and vacuumed) first: give it one of its own.

Builds the synthetic clinic of bench/plan_and_dispatch.py (every patient preferring
LINE for `--channel line`; email only for `--channel email`), plans at a pinned moment
inside the send window and keeps exactly `--messages` deliveries due. Then, for each
concurrency value, times `dispatch_due` through the real transport (line-bot-sdk to
tests/servers/line_api.py, smtplib to tests/servers/smtp.py), and checks that the
server received every delivery exactly once and that every row is `sent`: a run
that loses or repeats a message is reported as a failure, not as a figure.

The loopback server runs in a child process by default (`--server process`), as
LINE's and a mail provider's servers are not on the sending machine; `--server
thread` runs it inside the benchmark's own process, where it competes for the GIL.
Prints one line per measurement. Results: bench/README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import math
import multiprocessing
import os
import platform
import pstats
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from email.parser import BytesHeaderParser
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from plan_and_dispatch import NOW, TABLES, build_clinic
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.engine import make_url

from scheduler.core.domain import ChannelName, DeliveryState
from scheduler.outbox.planner import plan
from scheduler.runtime import open_runtime
from scheduler.settings import Settings, load_settings
from scheduler.store import db
from scheduler.store.models import ChannelState, Delivery, Patient

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-channel-access-token"
MAIL_FROM = "たより整体院 <info@clinic.example>"
MESSAGES_PER_PATIENT = 0.6  # due at NOW per synthetic patient is about 0.72; keep a margin


# The loopback servers ------------------------------------------------------------


def _line_server(latency: float) -> Any:
    from tests.servers.line_api import LineApiServer

    # No monthly limit: the quota must not hold any message back.
    return LineApiServer(access_token=TOKEN, monthly_limit=None, latency_seconds=latency)


def _smtp_server(latency: float) -> Any:
    from tests.servers.smtp import SmtpServer

    return SmtpServer(latency_seconds=latency)


def _address(channel: str, server: Any) -> str:
    return server.base_url if channel == "line" else f"{server.host}:{server.port}"


def _delivered(channel: str, server: Any) -> list[str]:
    """The delivery id of every message the server took in, repeats included."""
    if channel == "line":
        # Keyed by retry key; a push that was not accepted (a repeat answered 409, an
        # error) counts as an extra.
        accepted = list(server.accepted)
        return accepted + ["<not accepted>"] * (server.pushes - len(accepted))
    parser = BytesHeaderParser()
    ids = []
    for received in server.received:
        message_id = str(parser.parsebytes(received.data)["Message-ID"] or "")
        ids.append(message_id.strip("<>").partition("@")[0])
    return ids


def _serve(channel: str, latency: float, pipe: Connection) -> None:
    """The child process: run the server and answer "cpu" and "delivered" until "stop"."""
    with (_line_server if channel == "line" else _smtp_server)(latency) as server:
        pipe.send(_address(channel, server))
        while (command := pipe.recv()) != "stop":
            if command == "cpu":
                pipe.send(time.process_time())
            else:
                assert command == "delivered"
                pipe.send(_delivered(channel, server))


class Server:
    """A loopback server in a child process (or a thread of this one)."""

    def __init__(self, channel: str, latency: float, mode: str) -> None:
        self.channel = channel
        self._process: Any = None
        self._local: Any = None
        if mode == "thread":
            factory = _line_server if channel == "line" else _smtp_server
            self._local = factory(latency).start()
            self.address = _address(channel, self._local)
            return
        # spawn, not fork: the child must not inherit this process's threads or
        # database connections.
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(
            target=_serve,
            args=(channel, latency, child),
            name=f"{channel}-server",
            daemon=True,
        )
        self._process.start()
        self.address = self._pipe.recv()

    def cpu_seconds(self) -> float | None:
        """The server process's CPU time so far; None when it shares this process."""
        if self._local is not None:
            return None
        self._pipe.send("cpu")
        seconds: float = self._pipe.recv()
        return seconds

    def delivered(self) -> list[str]:
        if self._local is not None:
            return _delivered(self.channel, self._local)
        self._pipe.send("delivered")
        result: list[str] = self._pipe.recv()
        return result

    def close(self) -> None:
        if self._local is not None:
            self._local.stop()
            return
        self._pipe.send("stop")
        self._process.join(10)


# The clinic -----------------------------------------------------------------------


def prepare_clinic(url: str, channel: str, messages: int, seed: int) -> None:
    """A clinic with at least `messages` deliveries due at NOW, all for `channel`."""
    patients = math.ceil(messages / MESSAGES_PER_PATIENT)
    engine = db.make_engine(url)
    build_clinic(url, patients, seed)  # migrates, and empties every table it fills
    with db.transaction(db.session_factory(engine)) as session:
        if channel == "line":  # everyone has a LINE id; everyone prefers it
            session.execute(update(Patient).values(preferred_channel=ChannelName.LINE))
        else:  # email only
            session.execute(
                update(Patient).values(line_user_id=None, preferred_channel=ChannelName.EMAIL)
            )
    engine.dispose()


def fresh_outbox(settings: Settings, messages: int) -> set[str]:
    """Empty the outbox, plan at NOW and keep exactly `messages` deliveries due (the
    rest are moved a month ahead). Returns the ids of those due."""
    engine = db.make_engine(settings.database_url)
    sessions = db.session_factory(engine)
    with db.transaction(sessions) as session:
        session.execute(delete(Delivery))
        session.execute(delete(ChannelState))
    with db.transaction(sessions) as session:
        plan(session, NOW, settings.rules)
    with db.transaction(sessions) as session:
        due = list(
            session.scalars(
                select(Delivery.id)
                .where(Delivery.state == DeliveryState.PLANNED, Delivery.send_after <= NOW)
                .order_by(Delivery.send_after, Delivery.id)
            )
        )
        if len(due) < messages:
            raise SystemExit(f"only {len(due)} messages due; the clinic is too small")
        later = due[messages:]
        for start in range(0, len(later), 500):
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_(later[start : start + 500]))
                .values(send_after=NOW + timedelta(days=30))
            )
    if engine.dialect.name == "postgresql":
        # This machine's PostgreSQL runs without autovacuum: the rows each measurement
        # deletes would otherwise pile up as dead tuples, and every later claim would
        # wade through them (the rate fell by a third over a few dozen runs).
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for table in TABLES:
                connection.execute(text(f"VACUUM FULL ANALYZE {table}"))
    engine.dispose()
    return set(due[:messages])


def bench_settings(
    url: str, channel: str, address: str, concurrency: int, scratch: str
) -> Settings:
    env = {"TAYORI_CONFIG": str(ROOT / "config" / "tayori.toml"), "DATABASE_URL": url}
    if channel == "line":
        env |= {"LINE_CHANNEL_ACCESS_TOKEN": TOKEN, "LINE_API_BASE_URL": address}
    else:
        host, _, port = address.rpartition(":")
        env |= {"SMTP_HOST": host, "SMTP_PORT": port, "SMTP_SECURITY": "none"}
        env |= {"MAIL_FROM": MAIL_FROM}
    settings = load_settings(env)
    config = settings.config
    config = replace(
        config,
        # A cycle stops claiming after half a lease; a long lease lets a slow
        # configuration (one lane, say) finish its messages in one measured cycle.
        dispatch=replace(config.dispatch, concurrency=concurrency, lease_seconds=3600),
        line=replace(config.line, monthly_quota=10**9),
    )
    return replace(
        settings,
        config=config,
        messages_dir=ROOT / "messages",
        outbox_dir=Path(scratch) / "outbox",
    )


# One measurement ------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    messages: int
    seconds: float
    cpu_seconds: float  # the dispatching process(es)
    server_cpu_seconds: float | None  # the server's process; None when it is this one
    machine_busy: float | None  # cores busy on the whole machine (every process)
    problems: list[str]

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def _busy_jiffies() -> tuple[int, int] | None:
    """(busy, all) clock ticks of every CPU since boot, from /proc/stat (Linux)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


@contextmanager
def profiled(path: str | None) -> Iterator[None]:
    """cProfile every thread started inside (the dispatch lanes) and the caller's;
    the merged statistics go to `path`."""
    if path is None:
        yield
        return
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start(*_: object) -> None:
        profile = cProfile.Profile()
        with lock:
            profiles.append(profile)
        profile.enable()  # replaces this hook for the rest of the thread

    threading.setprofile(start)
    main = cProfile.Profile()
    main.enable()
    try:
        yield
    finally:
        main.disable()
        threading.setprofile(None)  # type: ignore[arg-type]
        stats = pstats.Stats(main)
        for profile in profiles:
            profile.create_stats()
            stats.add(profile)
        stats.dump_stats(path)


def _dispatch_worker(settings: Settings, go: Any, pipe: Connection) -> None:
    """One more worker process (`--workers`): waits for `go`, then dispatches."""
    runtime = open_runtime(settings)
    dispatcher = runtime.dispatcher  # built (and the channels imported) before the clock
    pipe.send("ready")
    go.wait()
    cpu = time.process_time()
    summary = dispatcher.dispatch_due(NOW)
    pipe.send((time.monotonic(), time.process_time() - cpu, summary.counts))
    runtime.close()


def dispatch(
    settings: Settings, workers: int, profile: str | None
) -> tuple[float, float, Counter[str]]:
    """Run `dispatch_due` in `workers` processes at once (this one when 1): wall
    seconds until the last one finished, their CPU seconds, and the outcomes."""
    if workers == 1:
        runtime = open_runtime(settings)
        try:
            dispatcher = runtime.dispatcher  # built (and the channels imported) before the clock
            wall, cpu = time.monotonic(), time.process_time()
            with profiled(profile):
                summary = dispatcher.dispatch_due(NOW)
            return time.monotonic() - wall, time.process_time() - cpu, Counter(summary.counts)
        finally:
            runtime.close()
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    pipes, processes = [], []
    for n in range(workers):
        pipe, child = context.Pipe()
        process = context.Process(
            target=_dispatch_worker, args=(settings, go, child), name=f"worker-{n}", daemon=True
        )
        process.start()
        pipes.append(pipe)
        processes.append(process)
    for pipe in pipes:
        assert pipe.recv() == "ready"
    started = time.monotonic()
    go.set()
    results = [pipe.recv() for pipe in pipes]
    for process in processes:
        process.join(10)
    outcomes: Counter[str] = Counter()
    for _, _, counts in results:
        outcomes.update(counts)
    ended = max(finished for finished, _, _ in results)
    return ended - started, sum(cpu for _, cpu, _ in results), outcomes


def measure(
    settings: Settings, server: Server, expected: set[str], workers: int, profile: str | None
) -> Measurement:
    server_cpu, machine = server.cpu_seconds(), _busy_jiffies()
    seconds, cpu_seconds, outcomes = dispatch(settings, workers, profile)
    server_after, machine_after = server.cpu_seconds(), _busy_jiffies()
    busy = None
    if machine is not None and machine_after is not None:
        cores = multiprocessing.cpu_count()
        busy = cores * (machine_after[0] - machine[0]) / max(machine_after[1] - machine[1], 1)
    engine = db.make_engine(settings.database_url)
    with db.transaction(db.session_factory(engine)) as session:
        sent = session.scalar(select(func.count()).where(Delivery.state == DeliveryState.SENT))
        errors = Counter(
            session.scalars(
                select(Delivery.last_error).where(
                    Delivery.id.in_(list(expected)), Delivery.state != DeliveryState.SENT
                )
            )
        )
    engine.dispose()
    problems = []
    if outcomes != {"sent": len(expected)}:
        problems.append(f"outcomes {dict(outcomes)}")
    if sent != len(expected):
        problems.append(f"{sent} rows sent")
        problems.extend(f"{n} × {error}" for error, n in errors.most_common(3))
    delivered = Counter(server.delivered())
    if set(delivered) != expected or any(n != 1 for n in delivered.values()):
        missing = len(expected - set(delivered))
        extra = sum(delivered.values()) - (len(expected) - missing)
        problems.append(f"server: {missing} missing, {extra} extra or repeated")
    return Measurement(
        len(expected),
        seconds,
        cpu_seconds,
        None if server_cpu is None or server_after is None else server_after - server_cpu,
        busy,
        problems,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channel", choices=("line", "email"), default="line")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument(
        "--latency-ms",
        type=float,
        help="added by the server to every request (LINE) or DATA (SMTP); "
        "default 50 for LINE, 0 for SMTP",
    )
    parser.add_argument(
        "--concurrency",
        default="8,16,32",
        help="dispatch lanes ([dispatch] concurrency): one value or a comma-separated list",
    )
    parser.add_argument("--repeat", type=int, default=1, help="measurements per value")
    parser.add_argument("--database-url", help="default: a SQLite file in a temporary directory")
    parser.add_argument("--server", choices=("process", "thread"), default="process")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="dispatching processes at once, each with --concurrency lanes (as several "
        "`tayori run`); 1: this process",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="write cProfile statistics of the claiming loop and the lanes (--workers 1)",
    )
    args = parser.parse_args()
    concurrency = [int(value) for value in args.concurrency.split(",")]
    latency_ms = args.latency_ms if args.latency_ms is not None else 50.0 * (args.channel == "line")
    sys.path.insert(0, str(ROOT))  # tests.servers, here and in the server's process
    load = f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "?"
    print(
        f"# {multiprocessing.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {load} at start",
        flush=True,
    )
    failed = False
    with tempfile.TemporaryDirectory() as scratch:
        url = args.database_url or f"sqlite:///{scratch}/bench.db"
        database = make_url(url).get_backend_name()
        prepare_clinic(url, args.channel, args.messages, args.seed)
        for lanes in concurrency:
            for _ in range(args.repeat):
                # A fresh server each time: the same delivery ids would be repeats.
                server = Server(args.channel, latency_ms / 1000, args.server)
                try:
                    settings = bench_settings(url, args.channel, server.address, lanes, scratch)
                    expected = fresh_outbox(settings, args.messages)
                    result = measure(settings, server, expected, args.workers, args.profile)
                finally:
                    server.close()
                failed = failed or bool(result.problems)
                print(describe(args, database, latency_ms, lanes, result), flush=True)
    if failed:
        raise SystemExit(1)


def describe(
    args: argparse.Namespace, database: str, latency_ms: float, lanes: int, result: Measurement
) -> str:
    setup = (
        f"{args.channel} {database} server={args.server} latency={latency_ms:g}ms "
        f"workers={args.workers} concurrency={lanes}"
    )
    cpu = f"dispatcher cpu {1000 * result.cpu_seconds / result.messages:.2f} ms/message"
    if result.server_cpu_seconds is not None:
        cpu += f", server cpu {1000 * result.server_cpu_seconds / result.messages:.2f} ms/message"
    if result.machine_busy is not None:
        cpu += f", machine {result.machine_busy:.2f} cores busy"
    verdict = "; ".join(result.problems) or "each received exactly once"
    return (
        f"{setup}: {result.messages} messages in {result.seconds:.2f} s "
        f"= {result.rate:.0f}/s ({cpu}); {verdict}"
    )


if __name__ == "__main__":
    main()

"""Planning at scale (issue 14): each step of the real CLI on a synthetic clinic.

    .venv/bin/python bench/scale.py --patients 1000,10000,100000
    .venv/bin/python bench/scale.py --patients 1000,10000 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

For each size: a fresh database (a SQLite file in a temporary directory, or a
PostgreSQL database created for the run on the server of --database-url and dropped
after it), the clinic written as the CSV files `tayori import` takes, then every step
run as a child process of the CLI, timed, with its peak RSS (from `os.wait4`) and,
when it starts planning processes, the peak of its process tree's summed PSS. Beside
it, the naive way: one APScheduler date job per reminder in `SQLAlchemyJobStore`.

The clock is pinned before the send window and the digest's time (07:00 JST), so
the cycles measure planning; sending is measured by `dispatch_channels.py`. Messages
would go to preview files in the temporary directory: no LINE or SMTP settings are
passed on. A step that fails prints its stderr, and the run goes on. Results:
bench/README.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from scheduler.store.importer import PATIENT_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
JST = ZoneInfo("Asia/Tokyo")
# Before the 09:00 send window and the 08:30 digest: a cycle plans and sends nothing.
NOW = datetime(2026, 11, 25, 7, 0, tzinfo=JST)
PAST_VISITS = 10
CHANGED_PATIENTS = 1000
# Variables that would make a child send for real or read another clinic.
FOREIGN_VARIABLES = ("LINE_", "SMTP_", "MAIL_FROM", "TAYORI_", "DATABASE_URL")
NUDGE_DAYS = {"acute": 3, "rehab": 6, "maintenance": 12}  # config/tayori.toml
GAP_DAYS = {"acute": (3, 4), "rehab": (6, 8), "maintenance": (10, 16), "": (7, 30)}

# The targets (100k patients), by step.
TARGETS = {
    "tick, empty database": "(the fixed cost of a new process)",
    "import patients": "",
    "import appointments": "≤ 20 s, ≤ 300 MB",
    "plan --days 7 --json": "≤ 2.5 s, ≤ 200 MB",
    "tick, first cycle": "≤ 5 s",
    "tick, nothing changed": "(a new process: start-up included)",
    "plan --days 7, a planned clinic": "(a running installation's dry run)",
    "a worker's cycle, nothing changed": "≤ 0.3 s, ≤ 200 MB",
    "import 1,000 new bookings": "",
    "tick, 1,000 changed": "≤ 1 s",
    "digest": "",
    "status": "",
    "idle worker": "< 1 % of a core, < 100 MB",
}


@dataclass(frozen=True)
class Step:
    name: str
    seconds: float
    peak_mb: float
    ok: bool
    note: str = ""
    tree_note: str = ""  # the memory of the process and its children, when it had any


@dataclass(frozen=True)
class Result:
    steps: list[Step]
    jobs: int  # the naive scheduler's

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)


SCHEDULE, START = "APScheduler: schedule every job", "APScheduler: start over them"


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="minutes")


# --- the synthetic clinic ---------------------------------------------------------


@dataclass(frozen=True)
class Clinic:
    patients_csv: Path
    appointments_csv: Path
    changes_csv: Path
    reminders: list[tuple[str, datetime]]  # (job id, when): the naive scheduler's jobs
    appointments: int


def _patient_row(n: int, rng: random.Random) -> tuple[list[str], str]:
    phase = rng.choices(["acute", "rehab", "maintenance", ""], [20, 30, 40, 10])[0]
    line = f"U{rng.getrandbits(128):032x}" if rng.random() < 0.6 else ""
    email = f"p{n}@example.jp" if rng.random() < 0.7 or not line else ""
    if rng.random() < 0.03:  # no usable contact at all
        line = email = ""
    preferred = "line" if line and rng.random() < 0.8 else "email"
    reminders = "yes" if rng.random() < 0.9 else "no"
    newsletter = "yes" if rng.random() < 0.6 else "no"
    name = f"患者 {n}"
    row = [f"P{n:07d}", name, phase, email, line, preferred, reminders, newsletter]
    return row, phase


def _slot(day: datetime, rng: random.Random) -> datetime:
    """A bookable time on that day: 09:00–18:30 on the half hour."""
    return day.replace(hour=9 + rng.randrange(10), minute=rng.choice((0, 30)))


def _visits(phase: str, rng: random.Random) -> tuple[list[tuple[datetime, str]], datetime | None]:
    """Ten past appointments at the phase's rhythm (last one 1–90 days ago, so some
    patients have lapsed), and perhaps one booked in the next two weeks."""
    midnight = NOW.replace(hour=0, minute=0)
    day = midnight - timedelta(days=rng.randint(1, 90))
    past = []
    for _ in range(PAST_VISITS):
        status = rng.choices(["visited", "cancelled", "no_show"], [90, 6, 4])[0]
        past.append((_slot(day, rng), status))
        day -= timedelta(days=rng.randint(*GAP_DAYS[phase]))
    booked = _slot(midnight + timedelta(days=rng.randint(1, 14)), rng)
    return past, booked if rng.random() < 0.2 else None


def write_clinic(directory: Path, patients: int, seed: int) -> Clinic:
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    reminders: list[tuple[str, datetime]] = []
    count = 0
    paths = [directory / name for name in ("patients.csv", "appointments.csv")]
    with paths[0].open("w", newline="") as pf, paths[1].open("w", newline="") as af:
        patients_out, appointments_out = csv.writer(pf), csv.writer(af)
        patients_out.writerow(PATIENT_COLUMNS)
        appointments_out.writerow(["external_id", "starts_at", "status"])
        for n in range(patients):
            row, phase = _patient_row(n, rng)
            patients_out.writerow(row)
            external_id = row[0]
            past, booked = _visits(phase, rng)
            for starts_at, status in reversed(past):
                appointments_out.writerow([external_id, iso(starts_at), status])
            count += len(past)
            if booked is not None:
                appointments_out.writerow([external_id, iso(booked), "booked"])
                count += 1
                reminder = (booked - timedelta(days=1)).replace(hour=18, minute=0)
                if reminder > NOW:
                    reminders.append((f"reminder:{external_id}", reminder))
            elif phase and row[6] == "yes":
                last = max(s for s, status in past if status == "visited")
                nudge = (last + timedelta(days=NUDGE_DAYS[phase])).replace(hour=10, minute=0)
                if nudge > NOW:  # one already due would fire at once: not a reminder ahead
                    reminders.append((f"nudge:{external_id}", nudge))
    changes = directory / "changes.csv"
    with changes.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["external_id", "starts_at", "status"])
        for n in rng.sample(range(patients), min(CHANGED_PATIENTS, patients)):
            day = NOW + timedelta(days=rng.randint(2, 10))
            out.writerow([f"P{n:07d}", iso(day.replace(hour=12, minute=15)), "booked"])
    return Clinic(paths[0], paths[1], changes, reminders, count)


# --- running the CLI --------------------------------------------------------------


def child_env(database_url: str, work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_VARIABLES)}
    return env | {
        "DATABASE_URL": database_url,
        "TAYORI_CONFIG": str(ROOT / "config" / "tayori.toml"),
        "TAYORI_MESSAGES_DIR": str(ROOT / "messages"),
        "TAYORI_OUTBOX_DIR": str(work / "outbox"),
        "TAYORI_LOG_LEVEL": "WARNING",
        # This checkout's code, not whatever the virtualenv has installed.
        "PYTHONPATH": str(ROOT),
    }


def measure(name: str, args: list[str], env: dict[str, str], work: Path) -> Step:
    """Run one child to its end: wall time, and its peak RSS from the kernel."""
    out, err = work / f"{name}.out", work / f"{name}.err"
    # cwd is the temporary directory, so that no .env or var/ of the checkout is used.
    with out.open("wb") as stdout, err.open("wb") as stderr:
        started = time.perf_counter()
        child = subprocess.Popen(args, cwd=work, env=env, stdout=stdout, stderr=stderr)
        tree = _TreeMemory(child.pid)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        tree.stop()
    child.returncode = os.waitstatus_to_exitcode(status)
    ok = child.returncode == 0
    if not ok:
        print(f"  {name} failed (exit {child.returncode}):", file=sys.stderr)
        print(_tail(err), file=sys.stderr)
    peak = usage.ru_maxrss / 1024
    # A plan spread over processes (outbox/spread.py) has a fork server and its
    # children beside the command: their memory counts too.
    spread = f"{tree.peak_mb:.0f} MB PSS with its child processes" if tree.processes > 1 else ""
    return Step(name, seconds, peak, ok, tree_note=spread)


class _TreeMemory:
    """The peak of the summed PSS of a process and all its descendants, sampled every
    `INTERVAL` seconds from /proc (the kernel's own peak covers only processes a
    parent waited for, and a fork server's children are not waited for by the
    command). PSS, not RSS: the children are forked from one server and share most
    of its pages, which a sum of RSS would count once for each process (about 80 MB
    more for a dry run).

    Reading a process's PSS costs about a millisecond of CPU (the kernel walks its
    pages), taken from the step being measured: every 0.1 s, the five processes of a
    dry run cost about 3 % of a 2-core machine. A dry run's peak lasts longer than
    that: while its planning processes hold their last batches."""

    INTERVAL = 0.1

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_mb, self.processes = pid, 0.0, 1
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._done.wait(self.INTERVAL):
            tree = _descendants(self.pid)
            self.processes = max(self.processes, len(tree))
            self.peak_mb = max(self.peak_mb, sum(_pss_mb_or_zero(pid) for pid in tree))


def _descendants(root: int) -> list[int]:
    """A process and its descendants, from each thread's list of the children it
    started (a scan of every process's parent would cost more than the PSS)."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            for children in Path(f"/proc/{pid}/task").glob("*/children"):
                todo += [int(child) for child in children.read_text().split()]
        except OSError:
            continue  # ended meanwhile
    return found


def _pss_mb_or_zero(pid: int) -> float:
    """A process's proportional set size: its own pages, and its share of each page
    it shares (0 once it has ended)."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0.0
    pss = next(line for line in lines if line.startswith("Pss:"))
    return int(pss.split()[1]) / 1024


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def tayori(*args: str) -> list[str]:
    return [sys.executable, "-m", "scheduler", *args]


def idle_worker(env: dict[str, str], work: Path, seconds: float) -> Step:
    """`tayori run` left alone: its CPU over `seconds` once started, and its RSS."""
    err = work / "run.err"
    with err.open("wb") as stderr:
        worker = subprocess.Popen(
            tayori("run", "--now", iso(NOW + timedelta(minutes=3))),
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            time.sleep(10)  # start-up and its first cycle are not idling
            cpu_before, started = _cpu_seconds(worker.pid), time.perf_counter()
            time.sleep(seconds)
            cpu = _cpu_seconds(worker.pid) - cpu_before
            elapsed = time.perf_counter() - started
            rss = _rss_mb(worker.pid)
        except OSError as e:  # it died: /proc has no such process
            print(f"  idle worker failed ({e}):\n{_tail(err)}", file=sys.stderr)
            worker.kill()
            worker.wait()
            return Step("idle worker", 0, 0, False)
        finally:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=60)
    note = f"{100 * cpu / elapsed:.2f} % of a core"
    return Step("idle worker", cpu, rss, True, note)


CYCLE = "a worker's cycle, nothing changed"


def cycle_child() -> None:
    """In a child process, as a running worker: one cycle to settle, then one timed
    with nothing changed. Prints its seconds."""
    from scheduler.runtime import open_runtime
    from scheduler.settings import load_settings
    from scheduler.worker import tick

    runtime = open_runtime(load_settings(os.environ))
    tick(runtime, NOW + timedelta(minutes=4))
    started = time.perf_counter()
    tick(runtime, NOW + timedelta(minutes=5))
    print(time.perf_counter() - started)
    runtime.close()


def worker_cycle(env: dict[str, str], work: Path) -> Step:
    """A cycle inside a process that is already running: what a worker pays each
    minute, without a new process's start-up."""
    step = measure(CYCLE, [sys.executable, str(Path(__file__).resolve()), "--cycle"], env, work)
    if not step.ok:
        return step
    seconds = float((work / f"{CYCLE}.out").read_text().split()[-1])
    return Step(CYCLE, seconds, step.peak_mb, True)


def _cpu_seconds(pid: int) -> float:
    # utime and stime are the 14th and 15th fields; the name before them may hold spaces.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- fresh databases --------------------------------------------------------------


@dataclass
class Database:
    url: str
    drop: str | None = None  # the PostgreSQL database to drop afterwards


def fresh_database(base_url: str | None, work: Path, patients: int) -> Database:
    if base_url is None:
        return Database(f"sqlite:///{work / 'tayori.db'}")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"tayori_scale_{patients}_{os.getpid()}"
    engine = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    url = make_url(base_url).set(database=name)
    return Database(url.render_as_string(hide_password=False), drop=name)


def drop_database(base_url: str | None, database: Database) -> None:
    if base_url is None or database.drop is None:
        return
    from sqlalchemy import create_engine, text

    engine = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{database.drop}" WITH (FORCE)'))
    engine.dispose()


# --- the naive way: APScheduler ---------------------------------------------------


def naive_child(mode: str, jobs_csv: Path, store: Path) -> None:
    """In a child process: schedule every job of `jobs_csv`, or start over the store."""
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{store}")}, timezone="UTC"
    )
    if mode == "schedule":
        scheduler.start(paused=True)  # a started scheduler writes each job at once
        with jobs_csv.open() as f:
            for job_id, when in csv.reader(f):
                scheduler.add_job("builtins:print", "date", run_date=when, id=job_id, args=[job_id])
    else:
        # What the scheduler's thread does when it first wakes up, here at once so that
        # it is timed: read the due jobs and the next run time from the store.
        scheduler.start(paused=True)
        scheduler._process_jobs()
    scheduler.shutdown(wait=False)


def naive(clinic: Clinic, work: Path) -> list[Step]:
    jobs_csv, store = work / "jobs.csv", work / "apscheduler.db"
    with jobs_csv.open("w", newline="") as f:
        csv.writer(f).writerows((job_id, when.isoformat()) for job_id, when in clinic.reminders)
    script = [sys.executable, str(Path(__file__).resolve()), "--naive"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return [
        measure(name, [*script, mode, str(jobs_csv), str(store)], env, work)
        for name, mode in ((SCHEDULE, "schedule"), (START, "start"))
    ]


# --- one size ---------------------------------------------------------------------


def run_size(patients: int, base_url: str | None, seed: int, idle_seconds: float) -> Result:
    with tempfile.TemporaryDirectory(prefix=f"tayori-scale-{patients}-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        clinic = write_clinic(work / "csv", patients, seed)
        print(
            f"{patients:,} patients, {clinic.appointments:,} appointments: "
            f"CSV written in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
        database = fresh_database(base_url, work, patients)
        env = child_env(database.url, work)
        plan = [
            ("db upgrade", tayori("db", "upgrade")),
            # A cycle's fixed cost in a new process (imports, wiring), to subtract.
            ("tick, empty database", tayori("tick", "--now", iso(NOW - timedelta(hours=1)))),
            (
                "import patients",
                tayori("import", "patients", str(clinic.patients_csv), "--now", iso(NOW)),
            ),
            (
                "import appointments",
                tayori("import", "appointments", str(clinic.appointments_csv), "--now", iso(NOW)),
            ),
            ("plan --days 7 --json", tayori("plan", "--days", "7", "--json", "--now", iso(NOW))),
            ("tick, first cycle", tayori("tick", "--now", iso(NOW))),
            ("tick, nothing changed", tayori("tick", "--now", iso(NOW + timedelta(minutes=1)))),
            (
                "plan --days 7, a planned clinic",
                tayori("plan", "--days", "7", "--json", "--now", iso(NOW + timedelta(minutes=1))),
            ),
            (
                "import 1,000 new bookings",
                tayori(
                    "import",
                    "appointments",
                    str(clinic.changes_csv),
                    "--now",
                    iso(NOW + timedelta(minutes=2)),
                ),
            ),
            ("tick, 1,000 changed", tayori("tick", "--now", iso(NOW + timedelta(minutes=2)))),
            ("digest", tayori("digest", "--now", iso(NOW + timedelta(minutes=2)))),
            ("status", tayori("status", "--now", iso(NOW + timedelta(minutes=2)))),
        ]
        steps: list[Step] = []
        try:
            for name, args in plan:
                steps.append(measure(name, args, env, work))
                print(f"  {_row(steps[-1])}", file=sys.stderr)
            steps.append(worker_cycle(env, work))
            print(f"  {_row(steps[-1])}", file=sys.stderr)
            steps.append(idle_worker(env, work, idle_seconds))
            print(f"  {_row(steps[-1])}", file=sys.stderr)
            for step in naive(clinic, work):
                steps.append(step)
                print(f"  {_row(step)}", file=sys.stderr)
        finally:
            drop_database(base_url, database)
        return Result(steps, len(clinic.reminders))


def _row(step: Step) -> str:
    return f"{step.name}: {_cell(step)}"


def _cell(step: Step | None) -> str:
    if step is None:
        return "-"
    if not step.ok:
        return "failed"
    # The idle worker's line says how busy it was, not how long it ran.
    memory = f"{step.peak_mb:.0f} MB" + (f" ({step.tree_note})" if step.tree_note else "")
    return f"{step.note or f'{step.seconds:.2f} s'}, {memory}"


def report(results: dict[int, Result]) -> str:
    sizes = list(results)
    names = list(dict.fromkeys(s.name for r in results.values() for s in r.steps))
    header = ["step", *(f"{n:,} patients" for n in sizes), "target (100k)"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name in names:
        cells = [_cell(results[size].step(name)) for size in sizes]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {TARGETS.get(name, '')} |")
    lines += [
        "",
        "| patients | APScheduler jobs | first tick ÷ scheduling them | "
        "tick, nothing changed ÷ its start-up |",
        "| --- | --- | --- | --- |",
    ]
    for size, result in results.items():
        first = _ratio(result.step("tick, first cycle"), result.step(SCHEDULE))
        idle = _ratio(result.step("tick, nothing changed"), result.step(START))
        lines.append(f"| {size:,} | {result.jobs:,} | {first} | {idle} |")
    return "\n".join(lines)


def _ratio(ours: Step | None, theirs: Step | None) -> str:
    if ours is None or theirs is None or not (ours.ok and theirs.ok) or theirs.seconds == 0:
        return "-"
    return f"{ours.seconds / theirs.seconds:.2f}× time, {ours.peak_mb / theirs.peak_mb:.2f}× RSS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", default="1000,10000", help="sizes, comma-separated")
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server (any database on it): each size gets a new database there",
    )
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument(
        "--naive", nargs=3, metavar=("MODE", "JOBS", "STORE"), help=argparse.SUPPRESS
    )
    parser.add_argument("--cycle", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cycle:
        cycle_child()
        return
    if args.naive:
        mode, jobs, store = args.naive
        naive_child(mode, Path(jobs), Path(store))
        return
    results: dict[int, Result] = {}
    for size in (int(n) for n in args.patients.split(",")):
        results[size] = run_size(size, args.database_url, args.seed, args.idle_seconds)
    print(report(results))


if __name__ == "__main__":
    main()

"""How long `tayori import` takes, and how much memory, for a clinic of a given size.

    .venv/bin/python bench/import_scale.py --patients 100000
    .venv/bin/python bench/import_scale.py --patients 1000,10000 --reimport \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/tayori_bench

Writes a synthetic clinic as the two CSV files a clinic imports: N patients, each
with `--visits` appointments (default 10) a week apart, in the order of their start
times as a booking system exports them. Then runs, each as its own `tayori`
process: `db upgrade`,
`import patients`, `import appointments` and, with `--reimport`, both again with the
same files (nothing changes). The code run is this checkout's, or `--code DIR`'s (a
checkout of another commit, to compare). Prints each step's wall time and the process's peak
RSS (from `os.wait4`). The PostgreSQL database is emptied first: give it one of its
own. `run_imports` is there for a wider benchmark to call. Results: bench/README.md.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import sqlalchemy as sa

from scheduler.store.importer import PATIENT_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
# The imports run at this moment: visits before it are past, the rest booked.
NOW = "2026-11-25T10:30+09:00"
FIRST_DAY = date(2026, 9, 1)
# A one-practitioner clinic's half-hour slots, 09:00 to 19:30.
SLOTS = [f"{9 + n // 2:02d}:{30 * (n % 2):02d}" for n in range(22)]
PHASES = ("acute", "rehab", "maintenance", "")


@dataclass(frozen=True)
class Step:
    name: str
    seconds: float
    peak_rss_mb: float
    said: str  # what the command printed


def write_clinic(directory: Path, patients: int, visits: int) -> tuple[Path, Path]:
    """The clinic's patients.csv and appointments.csv (deterministic)."""
    patients_path = directory / "patients.csv"
    with patients_path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(PATIENT_COLUMNS)
        for n in range(patients):
            line_id = f"U{n:032x}" if n % 3 else ""
            email = f"patient{n}@example.jp" if n % 2 else ""
            preferred = "line" if line_id else "email"
            reminders = "yes" if n % 10 else "no"
            newsletter = "yes" if n % 4 == 0 else "no"
            phase = PHASES[n % 4]
            row = (
                f"P{n:07d}",
                f"患者 {n}",
                phase,
                email,
                line_id,
                preferred,
                reminders,
                newsletter,
            )
            writer.writerow(row)
    appointments_path = directory / "appointments.csv"
    today = date.fromisoformat(NOW[:10])
    rows = []
    for n in range(patients):
        first = FIRST_DAY + timedelta(days=n % 28)
        slot = SLOTS[n % len(SLOTS)]
        for visit in range(visits):
            day = first + timedelta(days=7 * visit)
            status = "booked" if day >= today else ("no_show" if n % 50 == 0 else "visited")
            rows.append((f"{day.isoformat()}T{slot}", n, status))
    rows.sort()  # by start time, as a booking system exports them
    with appointments_path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["external_id", "starts_at", "status"])
        for starts_at, n, status in rows:
            writer.writerow([f"P{n:07d}", starts_at, status])
    return patients_path, appointments_path


def tayori(args: list[str], env: dict[str, str], cwd: str) -> Step:
    """Run one `tayori` command; its wall time and peak RSS."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as output:
        # `python -m` looks in the current directory first: run where there is no code.
        process = subprocess.Popen(
            [sys.executable, "-m", "scheduler", *args],
            env=env,
            cwd=cwd,
            stdout=output,
            stderr=output,
        )
        # wait4 gives this child's own resource usage, peak RSS included (in KiB).
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        output.seek(0)
        said = output.read().decode()
        if process.returncode != 0:
            sys.exit(f"tayori {' '.join(args)} failed:\n{said[-3000:]}")
    return Step(" ".join(args[:2]), seconds, usage.ru_maxrss / 1024, said.strip())


def run_imports(
    database_url: str,
    patients_path: Path,
    appointments_path: Path,
    reimport: bool,
    code: Path = ROOT,
) -> list[Step]:
    with tempfile.TemporaryDirectory() as outbox:
        env = {
            **os.environ,
            "PYTHONPATH": str(code),
            "DATABASE_URL": database_url,
            "TAYORI_CONFIG": str(ROOT / "config" / "tayori.toml"),
            "TAYORI_MESSAGES_DIR": str(ROOT / "messages"),
            "TAYORI_OUTBOX_DIR": outbox,
        }
        tayori(["db", "upgrade"], env, outbox)
        imports = [
            ["import", "patients", str(patients_path), "--now", NOW],
            ["import", "appointments", str(appointments_path), "--now", NOW],
        ]
        steps = [tayori(args, env, outbox) for args in imports]
        if reimport:
            steps += [
                Step(f"re-{step.name}", step.seconds, step.peak_rss_mb, step.said)
                for step in (tayori(args, env, outbox) for args in imports)
            ]
        return steps


def empty_postgres(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("DROP SCHEMA public CASCADE"))
        connection.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", default="100000", help="comma-separated sizes")
    parser.add_argument("--visits", type=int, default=10, help="appointments per patient")
    parser.add_argument("--database-url", help="PostgreSQL (emptied first); default SQLite")
    parser.add_argument("--reimport", action="store_true", help="import the same files again")
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose code runs")
    args = parser.parse_args()
    print("patients  appointments  step                    time      peak RSS")
    for patients in (int(n) for n in args.patients.split(",")):
        with tempfile.TemporaryDirectory() as directory:
            # Written by another process: a child's peak RSS as wait4 reports it starts
            # from its parent's peak (Linux carries it over exec), so this one stays small.
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                files = pool.submit(write_clinic, Path(directory), patients, args.visits).result()
            if args.database_url:
                empty_postgres(args.database_url)
                url = args.database_url
            else:
                url = f"sqlite:///{directory}/tayori.db"
            for step in run_imports(url, *files, args.reimport, args.code):
                print(
                    f"{patients:>8,}  {patients * args.visits:>12,}  {step.name:<22}"
                    f"  {step.seconds:6.1f} s  {step.peak_rss_mb:6.0f} MB"
                    f"  ({step.said.rsplit(': ', 1)[-1]})",
                    flush=True,
                )


if __name__ == "__main__":
    main()

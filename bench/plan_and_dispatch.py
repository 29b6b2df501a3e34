"""How long one worker cycle takes for a clinic of a given size.

    .venv/bin/python bench/plan_and_dispatch.py --patients 2000
    .venv/bin/python bench/plan_and_dispatch.py --patients 2000 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/tayori_bench

The PostgreSQL database is emptied first: give it one of its own.

Builds a synthetic clinic (each patient with a few visits over the last weeks),
then times: the first plan (inserts the outbox), a repeated plan at the same
moment (the steady state of a worker's minute), and dispatching what is due to
the preview channel. Prints one line per measurement. Results: bench/README.md.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import text

from scheduler.core.domain import AppointmentStatus, ChannelName, Phase
from scheduler.outbox.planner import plan
from scheduler.runtime import open_runtime
from scheduler.settings import load_settings
from scheduler.store import db
from scheduler.store.importer import AppointmentRow, PatientRow, save_appointments, save_patients

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 25, 10, 30, tzinfo=ZoneInfo("Asia/Tokyo"))
# Every table a synthetic clinic fills, in an order that deletes them cleanly.
TABLES = (
    "deliveries",
    "consent_changes",
    "cadence_changes",
    "appointments",
    "channel_states",
    "patients",
)


def build_clinic(database_url: str, patients: int, seed: int) -> None:
    rng = random.Random(seed)
    engine = db.make_engine(database_url)
    db.upgrade(engine)
    sessions = db.session_factory(engine)
    phases = list(Phase)
    with db.transaction(sessions) as session:  # start from an empty clinic
        for table in TABLES:
            session.execute(text(f"DELETE FROM {table}"))
    with db.transaction(sessions) as session:
        rows = [
            PatientRow(
                n,
                f"B{n:06d}",
                f"患者 {n}",
                rng.choice(phases),
                f"p{n}@example.jp",
                f"U{n:032x}",
                rng.choice(list(ChannelName)),
                rng.random() < 0.9,
                False,
            )
            for n in range(patients)
        ]
        save_patients(session, rows, NOW)
        visits = [
            AppointmentRow(
                n,
                f"B{n:06d}",
                NOW
                - timedelta(days=rng.randint(0, 40), hours=rng.randint(0, 8))
                - timedelta(days=7 * k),
                AppointmentStatus.VISITED,
            )
            for n in range(patients)
            for k in range(3)
        ]
        save_appointments(session, Path("bench.csv"), visits, NOW)
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--database-url")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        url = args.database_url or f"sqlite:///{scratch}/bench.db"
        build_clinic(url, args.patients, args.seed)
        settings = replace(
            load_settings({"TAYORI_CONFIG": str(ROOT / "config" / "tayori.toml")}),
            database_url=url,
            messages_dir=ROOT / "messages",
            outbox_dir=Path(scratch) / "outbox",
        )
        runtime = open_runtime(settings)
        for label in ("first plan", "repeated plan"):
            started = time.perf_counter()
            with db.transaction(runtime.sessions) as session:
                result = plan(session, NOW, settings.rules)
            print(f"{label}: {time.perf_counter() - started:.3f} s ({result.created} created)")
        started = time.perf_counter()
        summary = runtime.dispatcher.dispatch_due(NOW)
        elapsed = time.perf_counter() - started
        print(
            f"dispatch: {elapsed:.3f} s for {summary.total} messages "
            f"({summary.total / elapsed:.0f} per second)"
        )
        runtime.close()


if __name__ == "__main__":
    main()

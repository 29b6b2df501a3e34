"""Worker processes for tests: `tayori run` started as a clinic would start it, with
settings that make leases short enough to watch them end."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from scheduler.core.domain import AppointmentStatus, ChannelName, Phase
from scheduler.runtime import Runtime
from scheduler.store.db import transaction
from scheduler.store.importer import AppointmentRow, PatientRow, save_appointments, save_patients
from tests.conftest import ROOT
from tests.integration.dispatching import PLANNED_AT

# A patient's email, LINE user id and preferred channel, by their number.
Contact = Callable[[int], tuple[str | None, str | None, ChannelName]]


def by_line(n: int) -> tuple[str | None, str | None, ChannelName]:
    return None, f"U{n:032x}", ChannelName.LINE


def by_email(n: int) -> tuple[str | None, str | None, ChannelName]:
    return f"p{n}@example.jp", None, ChannelName.EMAIL


def nudged_clinic(runtime: Runtime, count: int, contact: Contact) -> None:
    """`count` acute patients who visited the day before PLANNED_AT, so that each is
    nudged at NUDGE_TIME (imported as a clinic imports them)."""
    patients = [
        PatientRow(n, f"P{n:04d}", f"患者 {n}", Phase.ACUTE, *contact(n), True, False)
        for n in range(count)
    ]
    visits = [
        AppointmentRow(n, f"P{n:04d}", PLANNED_AT - timedelta(days=1), AppointmentStatus.VISITED)
        for n in range(count)
    ]
    with transaction(runtime.sessions) as session:
        save_patients(session, patients, PLANNED_AT)
        save_appointments(session, Path("visits.csv"), visits, PLANNED_AT)


def config_with(directory: Path, **values: int) -> Path:
    """The shipped settings file with some values changed (keys named once in it, such
    as `lease_seconds`), written to `directory` with the shipped campaigns beside it;
    its path."""
    text = (ROOT / "config" / "tayori.toml").read_text(encoding="utf-8")
    for key, value in values.items():
        text, found = re.subn(rf"(?m)^{key} = [^#\n]*", f"{key} = {value} ", text)
        assert found == 1, f"{key} is not in the shipped settings once"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tayori.toml"
    path.write_text(text, encoding="utf-8")
    shutil.copy(ROOT / "config" / "campaigns.toml", directory / "campaigns.toml")
    return path


class Worker:
    """A `tayori run` process, its log written to a file (a pipe nobody reads while
    it runs would fill up and stop the worker at its next log line)."""

    def __init__(self, env: dict[str, str], now: str, log: Path) -> None:
        self.log = log
        with log.open("w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "scheduler", "run", "--now", now],
                env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def kill(self) -> None:
        """SIGKILL: the worker stops mid-way, with nothing put back."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> str:
        """SIGTERM, as a supervisor stops a worker; its log."""
        self.process.terminate()
        self.process.wait(timeout=60)
        return self.log.read_text()


def start_workers(env: dict[str, str], now: str, logs: Path, count: int = 1) -> list[Worker]:
    logs.mkdir(parents=True, exist_ok=True)
    existing = len(list(logs.iterdir()))
    return [Worker(env, now, logs / f"worker-{existing + n}.log") for n in range(count)]


def wait_until(
    done: Callable[[], bool], workers: list[Worker], what: str, seconds: float = 120
) -> None:
    """Poll (no fixed sleep) until `done`; fail with the workers' logs if it never is
    or if a worker exits meanwhile."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and all(w.process.poll() is None for w in workers):
        if done():
            return
        time.sleep(0.05)
    for worker in workers:
        worker.process.kill()
        worker.process.wait()
    logs = "\n---\n".join(worker.log.read_text()[-20_000:] for worker in workers)
    raise AssertionError(f"{what} did not happen; the workers' logs:\n{logs}")

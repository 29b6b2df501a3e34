"""The worker as a user runs it: a real process, stopped by a signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scheduler.commands import main
from tests.conftest import ROOT

START = "2026-11-25T10:30:00+09:00"
# What the demo clinic has due at START: two nudges, two follow-ups, one no-show
# follow-up (see config/demo/), and the practitioner's digest.
DUE_AT_START = 5 + 1


def _wait_for_files(directory: Path, count: int, process: subprocess.Popen[str]) -> None:
    """Poll for the worker's output (not a fixed sleep): returns as soon as it is there."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if (
            directory.exists()
            and len([p for p in directory.iterdir() if p.suffix != ".part"]) >= count
        ):
            return
        time.sleep(0.05)
    process.kill()
    _, stderr = process.communicate()
    raise AssertionError(f"worker produced no {count} messages; its log:\n{stderr}")


@pytest.mark.parametrize(
    ("command", "stop_signal"),
    [
        pytest.param(["-m", "scheduler", "run"], signal.SIGTERM, id="tayori-run-TERM"),
        pytest.param([str(ROOT / "jobs.py")], signal.SIGINT, id="jobs.py-INT"),
    ],
)
def test_worker_sends_what_is_due_and_exits_cleanly_on_a_signal(
    clinic_env: dict[str, str], command: list[str], stop_signal: signal.Signals
) -> None:
    assert main(["demo", "load", "--now", START]) == 0
    outbox = Path(clinic_env["TAYORI_OUTBOX_DIR"])
    process = subprocess.Popen(
        [sys.executable, *command, "--now", START],
        env={**os.environ, **clinic_env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_files(outbox, DUE_AT_START, process)
    process.send_signal(stop_signal)
    _, log = process.communicate(timeout=60)

    assert process.returncode == 0, log
    assert "worker stopped" in log
    assert len(list(outbox.iterdir())) == DUE_AT_START
    assert log.count(": sent") == DUE_AT_START
    for private in ("山田", "佐藤", "ken.sato", "U0123456789abcdef"):
        assert private not in log

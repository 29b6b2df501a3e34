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
from pathlib import Path

from tests.conftest import ROOT


def config_with(directory: Path, **dispatch: int) -> Path:
    """The shipped settings file with some [dispatch] values changed, written to
    `directory` with the shipped campaigns beside it; its path."""
    text = (ROOT / "config" / "tayori.toml").read_text(encoding="utf-8")
    for key, value in dispatch.items():
        text, found = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert found == 1, f"no [dispatch] {key} in the shipped settings"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tayori.toml"
    path.write_text(text, encoding="utf-8")
    shutil.copy(ROOT / "config" / "campaigns.toml", directory / "campaigns.toml")
    return path


def start_worker(env: dict[str, str], now: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "scheduler", "run", "--now", now],
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(
    done: Callable[[], bool],
    workers: list[subprocess.Popen[str]],
    what: str,
    seconds: float = 90,
) -> None:
    """Poll (no fixed sleep) until `done`; fail with the workers' logs if it never is
    or if a worker exits meanwhile."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and all(w.poll() is None for w in workers):
        if done():
            return
        time.sleep(0.05)
    logs = []
    for worker in workers:
        worker.kill()
        logs.append(worker.communicate()[1])
    raise AssertionError(f"{what} did not happen; the workers' logs:\n" + "\n---\n".join(logs))


def stop(worker: subprocess.Popen[str]) -> str:
    """SIGTERM, as a supervisor stops a worker; its log."""
    worker.terminate()
    return worker.communicate(timeout=60)[1]

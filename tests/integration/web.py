"""The web process in tests: `tayori serve` started as a host starts it, on a free
loopback port, and stopped with SIGTERM."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextmanager
def web_process(env: dict[str, str], log: Path) -> Iterator[str]:
    """`tayori serve` on a free port; its base URL once it answers /healthz (an
    answer of 503, no worker yet, is an answer)."""
    port = free_port()
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scheduler",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env={**os.environ, **env, "PYTHONPATH": str(ROOT), "WEB_CONCURRENCY": "1"},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=5):
                    break
            except urllib.error.HTTPError:
                break
            # A loaded machine may accept the connection before the worker answers.
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"tayori serve did not start:\n{log.read_text()}") from e
                time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)

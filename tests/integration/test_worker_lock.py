"""On SQLite one worker runs at a time: a second `tayori run` (or `tayori tick`) on
the same database file refuses to start, in one line naming the file, and the lock
goes with the worker however it ends. PostgreSQL takes any number of workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.commands import main
from scheduler.store.worker_lock import sole_worker
from tests.conftest import run_tayori
from tests.integration.dispatching import NUDGE_TIME
from tests.integration.workers import Worker, start_workers, wait_until


def _refusal(database: Path) -> str:
    return (
        f"tayori: another worker is running on the database {database.resolve()}: stop it "
        "first (on SQLite one worker runs at a time; PostgreSQL takes several)"
    )


def _started(env: dict[str, str], logs: Path) -> Worker:
    """A `tayori run` process, once it has started (and so holds the lock)."""
    [worker] = start_workers(env, NUDGE_TIME.isoformat(), logs)
    wait_until(lambda: "worker started" in worker.log.read_text(), [worker], "the worker's start")
    return worker


def test_a_second_worker_on_the_same_sqlite_file_refuses_to_start(
    local_env: dict[str, str], tmp_path: Path
) -> None:
    first = _started(local_env, tmp_path / "logs")

    second = run_tayori("run", "--now", NUDGE_TIME.isoformat(), env=local_env)
    first.stop()

    assert second.returncode == 1
    assert second.stderr.splitlines() == [_refusal(tmp_path / "tayori.db")]
    assert first.process.returncode == 0


def test_a_worker_starts_once_the_one_before_it_was_killed(
    local_env: dict[str, str], tmp_path: Path
) -> None:
    _started(local_env, tmp_path / "logs").kill()

    after = _started(local_env, tmp_path / "logs")

    assert "worker stopped" in after.stop()


def test_a_cycle_by_hand_refuses_to_run_beside_a_worker(
    local_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with sole_worker(local_env["DATABASE_URL"]):
        assert main(["tick", "--now", NUDGE_TIME.isoformat()]) == 1
    assert capsys.readouterr().err.splitlines() == [_refusal(tmp_path / "tayori.db")]


def test_a_cycle_by_hand_lets_go_of_the_lock_when_it_ends(local_env: dict[str, str]) -> None:
    assert main(["tick", "--now", NUDGE_TIME.isoformat()]) == 0
    with sole_worker(local_env["DATABASE_URL"]):
        pass


def test_workers_on_postgresql_take_no_lock() -> None:
    url = "postgresql+psycopg://tayori@127.0.0.1/tayori"  # never connected to
    with sole_worker(url), sole_worker(url):
        pass

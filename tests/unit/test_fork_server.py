"""`tayori plan` and `tayori tick` start their planning processes' fork server as they
start (outbox/fork_server.py), when the settings may let a plan use it."""

from __future__ import annotations

import importlib.util
import multiprocessing.forkserver
from pathlib import Path

import pytest

from scheduler.commands import main
from scheduler.outbox import fork_server


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The servers launched, none of them for real, by a process that has none yet."""
    launched: list[str] = []
    monkeypatch.setattr(fork_server, "_started", False)
    monkeypatch.setattr(
        multiprocessing.forkserver, "ensure_running", lambda: launched.append("server")
    )
    return launched


@pytest.mark.parametrize(
    ("value", "cores", "launched"),
    [
        pytest.param(None, {0, 1}, ["server"], id="auto, two cores"),
        pytest.param("auto", {0}, [], id="auto, one core"),
        pytest.param("3", {0}, ["server"], id="three"),
        pytest.param("1", {0, 1}, [], id="one"),
        pytest.param("two", {0, 1}, [], id="refused by the settings"),
    ],
)
def test_the_server_starts_ahead_only_when_a_plan_may_spread(
    launches: list[str],
    monkeypatch: pytest.MonkeyPatch,
    value: str | None,
    cores: set[int],
    launched: list[str],
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: cores)
    env = {} if value is None else {"TAYORI_PLANNING_PROCESSES": value}
    fork_server.start_ahead(env)
    assert launches == launched


@pytest.mark.parametrize(
    ("url", "imports_psycopg"),
    [
        pytest.param("postgresql+psycopg://tayori@db.internal/tayori", True, id="postgresql"),
        pytest.param("sqlite:///var/tayori.db", False, id="sqlite"),
        pytest.param(None, False, id="no url in the environment"),
    ],
)
def test_the_server_imports_the_postgresql_driver_for_a_postgresql_database(
    launches: list[str], monkeypatch: pytest.MonkeyPatch, url: str | None, imports_psycopg: bool
) -> None:
    preloaded: list[str] = []
    monkeypatch.setattr(multiprocessing.forkserver, "set_forkserver_preload", preloaded.extend)
    env = {"TAYORI_PLANNING_PROCESSES": "2"} | ({"DATABASE_URL": url} if url else {})
    fork_server.start_ahead(env)
    assert "scheduler.outbox.planner" in preloaded
    assert ("psycopg" in preloaded) is imports_psycopg
    # The server passes over a name it cannot import without a word: each must exist.
    assert all(importlib.util.find_spec(name) for name in preloaded)


def test_the_server_is_started_once_in_a_process(launches: list[str]) -> None:
    assert [fork_server.start(), fork_server.start()] == [True, False]
    assert launches == ["server"]


@pytest.mark.parametrize(
    ("command", "launched"),
    [(["plan"], ["server"]), (["tick"], ["server"]), (["run"], []), (["status"], [])],
)
def test_the_commands_that_plan_a_clinic_start_it_before_anything_else(
    launches: list[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    launched: list[str],
) -> None:
    # In a folder without settings: the command itself fails, after the server
    # has been asked for.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TAYORI_PLANNING_PROCESSES", "2")
    monkeypatch.setenv("TAYORI_CONFIG", str(tmp_path / "missing.toml"))
    assert main(command) != 0
    assert launches == launched
    assert "missing.toml" in capsys.readouterr().err

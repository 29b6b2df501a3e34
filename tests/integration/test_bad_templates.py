"""A practitioner's mistake in a template costs that template's messages, never the
worker: the other messages go, the bad template's wait (listed by `tayori status`)
until it is mended, and rendering never holds the database's write lock."""

from __future__ import annotations

import shutil
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from scheduler.commands import main
from scheduler.core.domain import ChannelName, DeliveryState, Phase, Reason
from scheduler.messages.templates import Renderer
from scheduler.outbox.planner import plan_digest
from scheduler.runtime import Runtime, open_runtime
from scheduler.settings import load_settings
from scheduler.store.db import transaction
from scheduler.store.importer import PatientRow, save_patients
from scheduler.worker import tick
from tests.conftest import ROOT, install_clinic_env
from tests.integration.clinic import LINE_ID
from tests.integration.dispatching import (
    NUDGE_TIME,
    RecordingTransport,
    deliveries,
    dispatcher_with,
    nudged_patients,
)
from tests.integration.workers import start_workers, wait_until

NESTED_LOOPS = (
    "{{ patient_name }}\n"
    "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}\n"
)
# Within every size and step limit, but slow: only the time limit stops it.
SLOW = (
    "{{ patient_name }}\n"
    "{% for i in range(10000) %}{% set s = ('a' * 20000) | replace('a', 'bb') %}{% endfor %}\n"
)
BAD_TEMPLATES = [
    pytest.param(
        "cadence_nudge/line.j2",
        "{{ patient_name }}\n{% for i in range(10**9) %}.{% endfor %}\n",
        "cadence_nudge/line.j2:2:",
        id="range-of-a-billion",
    ),
    pytest.param(
        "_tip.j2", "{{ tip }}\n{% include '_tip.j2' %}\n", "_tip.j2:2:", id="tip-including-itself"
    ),
    pytest.param("cadence_nudge/line.j2", NESTED_LOOPS, "cadence_nudge/line.j2:2:", id="loops"),
    pytest.param(
        "cadence_nudge/line.j2",
        "{{ patient_name }}\n{{ 'x'.center(10**9) }}\n",
        "cadence_nudge/line.j2:2:",
        id="a-gigabyte-string",
    ),
    pytest.param(
        "cadence_nudge/line.j2",
        "{{ patient_name }}\n{{ [0] * 10**8 }}\n",
        "cadence_nudge/line.j2:2:",
        id="a-huge-list",
    ),
    pytest.param(
        "cadence_nudge/line.j2",
        "{{ patient_name }}\n{{ 2 ** 1000000 }}\n",
        "cadence_nudge/line.j2:2:",
        id="a-huge-number",
    ),
]


def _broken_messages(tmp_path: Path, name: str, content: str) -> Path:
    messages = tmp_path / "messages"
    shutil.copytree(ROOT / "messages", messages)
    (messages / name).write_text(content, encoding="utf-8")
    return messages


@pytest.mark.parametrize(("name", "content", "where"), BAD_TEMPLATES)
def test_a_bad_template_holds_its_messages_and_the_others_go(
    runtime: Runtime, tmp_path: Path, name: str, content: str, where: str
) -> None:
    messages = _broken_messages(tmp_path, name, content)
    nudged_patients(runtime, count=3)
    with transaction(runtime.sessions) as session:
        plan_digest(session, NUDGE_TIME, runtime.settings)
    transport = RecordingTransport()
    dispatcher = dispatcher_with(runtime, transport)
    dispatcher.renderer = Renderer(messages, time_limit=0.5)

    dispatcher.dispatch_due(NUDGE_TIME)

    assert [m.reason for m in transport.received] == [Reason.DAILY_DIGEST]
    held = deliveries(runtime.sessions, Reason.CADENCE_NUDGE)
    assert {(d.state, d.attempts) for d in held} == {(DeliveryState.PLANNED, 0)}
    assert all(f"{messages}/{where}" in (d.last_error or "") for d in held)


@pytest.mark.parametrize(("name", "content", "where"), BAD_TEMPLATES)
def test_status_lists_a_bad_template_by_file_and_line(
    clinic_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: str,
    where: str,
) -> None:
    messages = _broken_messages(tmp_path, name, content)
    monkeypatch.setenv("TAYORI_MESSAGES_DIR", str(messages))
    assert main(["db", "upgrade"]) == 0
    assert main(["status", "--now", NUDGE_TIME.isoformat()]) == 0
    out = capsys.readouterr()
    assert f"template problem: {messages}/{where}" in out.out
    assert "Traceback" not in out.err


def test_rendering_a_slow_template_holds_no_lock_an_import_would_wait_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_template: Path
) -> None:
    database = tmp_path / "tayori.db"
    shutil.copy(sqlite_template, database)
    env = install_clinic_env(f"sqlite:///{database}", tmp_path, monkeypatch)
    settings = replace(
        load_settings(env),
        messages_dir=_broken_messages(tmp_path, "cadence_nudge/line.j2", SLOW),
    )
    worker_side = open_runtime(settings)
    # The import gives up as soon as it finds the database locked for half a second:
    # half the rendering's second, and more than the worker's own writes take on a
    # machine busy with other tests (a fifth of a second was not, once).
    importer = open_runtime(replace(settings, database_url=f"sqlite:///{database}?timeout=0.5"))
    try:
        nudged_patients(worker_side)
        worker_side.dispatcher.renderer = Renderer(settings.messages_dir, time_limit=1.0)
        worker = threading.Thread(target=tick, args=(worker_side, NUDGE_TIME))
        worker.start()
        imports = 0
        while worker.is_alive():
            row = PatientRow(
                1, f"N{imports}", "新患", Phase.ACUTE, None, LINE_ID, ChannelName.LINE, True, False
            )
            with transaction(importer.sessions) as session:
                save_patients(session, [row], NUDGE_TIME)
            imports += 1
        worker.join()
        # A second of rendering, and imports went on all the while.
        assert imports > 5
        [nudge] = deliveries(worker_side.sessions, Reason.CADENCE_NUDGE)
        assert "line.j2:2: rendering took longer than 1 s" in (nudge.last_error or "")
    finally:
        worker_side.close()
        importer.close()


def test_tayori_run_keeps_running_with_a_template_that_never_finishes(
    clinic_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = _broken_messages(tmp_path, "cadence_nudge/line.j2", NESTED_LOOPS)
    env = {**clinic_env, "TAYORI_MESSAGES_DIR": str(messages)}
    monkeypatch.setenv("TAYORI_MESSAGES_DIR", str(messages))
    assert main(["db", "upgrade"]) == 0
    runtime = open_runtime(load_settings(env))
    try:
        nudged_patients(runtime, count=3)
        [worker] = start_workers(env, NUDGE_TIME.isoformat(), tmp_path / "logs")

        def settled() -> bool:
            digest = deliveries(runtime.sessions, Reason.DAILY_DIGEST)
            nudges = deliveries(runtime.sessions, Reason.CADENCE_NUDGE)
            return [d.state for d in digest] == [DeliveryState.SENT] and all(
                d.last_error and "line.j2:2:" in d.last_error for d in nudges
            )

        wait_until(settled, [worker], "the digest sent and the nudges held")
        log = worker.stop()
    finally:
        runtime.close()
    assert worker.process.returncode == 0
    assert "template problem" in log
    assert "Traceback" not in log

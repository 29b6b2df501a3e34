"""A patient's own cadence and phase over time: import, CLI, and the outbox."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.commands import main
from scheduler.core.domain import DeliveryState, Phase, Reason
from scheduler.outbox.planner import plan
from scheduler.settings import Settings
from scheduler.store.db import transaction
from scheduler.store.models import CadenceChange, Delivery, Patient
from tests.integration.clinic import add_patient, visited

JST = ZoneInfo("Asia/Tokyo")
HEADER = (
    "external_id,name,phase,email,line_user_id,preferred_channel,reminders_opt_in,newsletter_opt_in"
)
LINE_ID = "U" + "ab" * 16


def write_patients(tmp_path: Path, rows: list[str], extra_columns: str = "") -> Path:
    path = tmp_path / "patients.csv"
    path.write_text("\n".join([HEADER + extra_columns, *rows]) + "\n", encoding="utf-8")
    return path


def patient_row(external_id: str = "P1", phase: str = "acute") -> str:
    return f"{external_id},山田 花子,{phase},,{LINE_ID},line,yes,no"


def stored(sessions: sessionmaker[Session], external_id: str = "P1") -> Patient:
    with sessions() as session:
        return session.scalars(select(Patient).where(Patient.external_id == external_id)).one()


def history(sessions: sessionmaker[Session]) -> list[tuple[Phase | None, int | None, str]]:
    with sessions() as session:
        return [
            (c.phase, c.nudge_after_days, c.source)
            for c in session.scalars(select(CadenceChange).order_by(CadenceChange.id))
        ]


@pytest.mark.parametrize(
    ("cells", "nudge", "follow_up"),
    [
        pytest.param("1,1", 1, 1, id="lowest"),
        pytest.param("90,90", 90, 90, id="highest"),
        pytest.param(",", None, None, id="empty-means-phase-default"),
        pytest.param("10,", 10, None, id="one-of-two"),
    ],
)
def test_patients_csv_sets_each_patients_own_cadence(
    clinic_env: dict[str, str],
    tmp_path: Path,
    sessions: sessionmaker[Session],
    cells: str,
    nudge: int | None,
    follow_up: int | None,
) -> None:
    path = write_patients(
        tmp_path, [f"{patient_row()},{cells}"], ",nudge_after_days,follow_up_days"
    )
    assert main(["import", "patients", str(path)]) == 0
    patient = stored(sessions)
    assert (patient.nudge_after_days, patient.follow_up_days) == (nudge, follow_up)


@pytest.mark.parametrize("bad", ["0", "91", "abc", "1.5", "-3"])
def test_out_of_range_cadence_is_refused_naming_file_line_and_column(
    clinic_env: dict[str, str],
    tmp_path: Path,
    sessions: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
    bad: str,
) -> None:
    path = write_patients(
        tmp_path, [f"{patient_row('P1')},", f"{patient_row('P2')},{bad}"], ",nudge_after_days"
    )
    assert main(["import", "patients", str(path)]) == 1
    assert f"{path}:3: nudge_after_days: expected a whole number of days from 1 to 90" in (
        capsys.readouterr().err
    )
    with sessions() as session:
        assert session.scalars(select(Patient)).all() == []


def test_file_without_cadence_columns_keeps_each_patients_own_cadence(
    clinic_env: dict[str, str], tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    with_columns = write_patients(
        tmp_path, [f"{patient_row()},10,5"], ",nudge_after_days,follow_up_days"
    )
    assert main(["import", "patients", str(with_columns)]) == 0
    without = write_patients(tmp_path, [patient_row()])
    assert main(["import", "patients", str(without)]) == 0
    patient = stored(sessions)
    assert (patient.nudge_after_days, patient.follow_up_days) == (10, 5)


def test_phase_changes_are_recorded_with_time_and_source(
    clinic_env: dict[str, str], tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    assert main(["import", "patients", str(write_patients(tmp_path, [patient_row()]))]) == 0
    assert main(["import", "patients", str(write_patients(tmp_path, [patient_row()]))]) == 0
    assert main(["patient", "set", "P1", "--phase", "rehab", "--now", "2026-11-20T10:00"]) == 0
    rehab = write_patients(tmp_path, [patient_row(phase="maintenance")])
    assert main(["import", "patients", str(rehab)]) == 0
    assert history(sessions) == [
        (Phase.ACUTE, None, "import"),
        (Phase.REHAB, None, "cli"),
        (Phase.MAINTENANCE, None, "import"),
    ]
    with sessions() as session:
        cli_change = session.scalars(
            select(CadenceChange).where(CadenceChange.source == "cli")
        ).one()
    assert cli_change.changed_at == datetime(2026, 11, 20, 10, 0, tzinfo=JST)


def test_patient_set_changes_cadence_and_back_to_default(
    clinic_env: dict[str, str], tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    assert main(["import", "patients", str(write_patients(tmp_path, [patient_row()]))]) == 0
    assert main(["patient", "set", "P1", "--nudge-after-days", "4", "--follow-up-days", "9"]) == 0
    assert (stored(sessions).nudge_after_days, stored(sessions).follow_up_days) == (4, 9)
    assert main(["patient", "set", "P1", "--nudge-after-days", "default"]) == 0
    assert (stored(sessions).nudge_after_days, stored(sessions).follow_up_days) == (None, 9)


def test_patient_set_refuses_an_unknown_patient(
    clinic_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["patient", "set", "NOPE", "--phase", "rehab"]) == 1
    assert "no patient with external_id 'NOPE'" in capsys.readouterr().err


def test_patient_show_prints_cadence_source_and_hides_contacts(
    clinic_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_patients(tmp_path, [f"{patient_row()},5"], ",follow_up_days")
    assert main(["import", "patients", str(path)]) == 0
    capsys.readouterr()
    assert main(["patient", "show", "P1", "--now", "2026-11-20T10:00"]) == 0
    shown = capsys.readouterr().out
    assert "nudge after 3 days (acute default), follow-up 5 days later (patient)" in shown
    assert "consent: reminders yes, newsletter no" in shown
    assert LINE_ID not in shown
    assert main(["patient", "show", "P1", "--contacts"]) == 0
    assert LINE_ID in capsys.readouterr().out


def test_phase_change_mid_episode_withdraws_the_pending_nudge_and_replans(
    settings: Settings, sessions: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    monday = datetime(2026, 11, 23, 9, 0, tzinfo=JST)
    with transaction(sessions) as session:
        add_patient(session, monday, phase=Phase.MAINTENANCE)
        visited(session, monday, days_ago=2)  # Saturday: maintenance nudge on 12-03
        plan(session, monday, settings.rules)
    assert main(["patient", "set", "P1", "--phase", "acute", "--now", "2026-11-24T15:00"]) == 0
    wednesday = datetime(2026, 11, 25, 9, 0, tzinfo=JST)
    with transaction(sessions) as session:
        plan(session, wednesday, settings.rules)
        rows = {
            (d.reason, d.state): d.send_after.astimezone(JST)
            for d in session.scalars(select(Delivery))
        }
    assert rows == {
        (Reason.CADENCE_NUDGE, DeliveryState.WITHDRAWN): datetime(2026, 12, 3, 10, 0, tzinfo=JST),
        (Reason.CADENCE_FOLLOW_UP, DeliveryState.WITHDRAWN): datetime(
            2026, 12, 10, 10, 0, tzinfo=JST
        ),
        # The new episode starts on the day of the change (Tuesday) with the acute rhythm.
        (Reason.CADENCE_NUDGE, DeliveryState.PLANNED): datetime(2026, 11, 27, 10, 0, tzinfo=JST),
        (Reason.CADENCE_FOLLOW_UP, DeliveryState.PLANNED): datetime(
            2026, 11, 29, 10, 0, tzinfo=JST
        ),
    }


def test_patient_set_plans_the_patient_again_at_once(
    settings: Settings, sessions: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    monday = datetime(2026, 11, 23, 9, 0, tzinfo=JST)
    with transaction(sessions) as session:
        add_patient(session, monday, phase=Phase.MAINTENANCE)
        visited(session, monday, days_ago=2)
        plan(session, monday, settings.rules, settings)
    assert main(["patient", "set", "P1", "--phase", "acute", "--now", "2026-11-24T15:00"]) == 0
    assert "planned again: 2 new, 0 revived, 2 withdrawn" in capsys.readouterr().out
    with sessions() as session:  # no worker cycle in between
        planned = {
            d.reason: d.send_after.astimezone(JST)
            for d in session.scalars(
                select(Delivery).where(Delivery.state == DeliveryState.PLANNED)
            )
        }
    assert planned == {
        Reason.CADENCE_NUDGE: datetime(2026, 11, 27, 10, 0, tzinfo=JST),
        Reason.CADENCE_FOLLOW_UP: datetime(2026, 11, 29, 10, 0, tzinfo=JST),
    }


def test_rules_use_the_phase_in_force_at_now(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    monday = datetime(2026, 11, 23, 9, 0, tzinfo=JST)
    with transaction(sessions) as session:
        add_patient(session, monday, phase=Phase.MAINTENANCE)
        visited(session, monday, days_ago=2)
    assert main(["patient", "set", "P1", "--phase", "acute", "--now", "2026-11-30T15:00"]) == 0
    with transaction(sessions) as session:
        plan(session, monday, settings.rules)  # before the change: still maintenance
        nudge = session.scalars(
            select(Delivery).where(Delivery.reason == Reason.CADENCE_NUDGE)
        ).one()
    assert nudge.send_after == datetime(2026, 12, 3, 10, 0, tzinfo=JST)

"""The practitioner's desk: its accounts, the sign-in and its rules, and the Today
page — through the CLI as a user runs it, the Flask app against a real database
(SQLite and PostgreSQL) for the HTTP rules, and a real `tayori serve` driven by a
real Chromium for the page."""

from __future__ import annotations

from sqlalchemy import select

from scheduler.runtime import Runtime
from scheduler.store.models import DeskUser
from tests.conftest import run_tayori

PASSWORD = "correct horse battery staple"
STAFF = "reception@clinic.example"


# --- accounts: `tayori user add` --------------------------------------------------


def test_user_add_reads_the_password_from_standard_input_and_keeps_only_a_hash(
    clinic_env: dict[str, str], runtime: Runtime
) -> None:
    done = run_tayori(
        "user", "add", "Reception@Clinic.example", env=clinic_env, stdin=PASSWORD + "\n"
    )
    assert done.returncode == 0, done.stderr
    assert "desk account reception@clinic.example added" in done.stdout
    with runtime.sessions() as session:
        [user] = session.scalars(select(DeskUser)).all()
    assert user.email == STAFF
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash


def test_user_add_refuses_a_short_password_and_adds_nothing(
    clinic_env: dict[str, str], runtime: Runtime
) -> None:
    done = run_tayori("user", "add", STAFF, env=clinic_env, stdin="short pass\n")
    assert done.returncode == 1
    assert "the password is too short: at least 12 characters" in done.stderr
    with runtime.sessions() as session:
        assert session.scalars(select(DeskUser)).all() == []


def test_user_add_refuses_a_second_account_with_the_same_email(
    clinic_env: dict[str, str],
) -> None:
    assert run_tayori("user", "add", STAFF, env=clinic_env, stdin=PASSWORD).returncode == 0
    again = run_tayori("user", "add", STAFF.upper(), env=clinic_env, stdin=PASSWORD)
    assert again.returncode == 1
    assert f"this clinic has an account for {STAFF} already" in again.stderr

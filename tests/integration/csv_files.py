"""The clinic's CSV files as the import and CLI tests write them: one place for the
headers, a valid row, and writing a file in a chosen encoding."""

from __future__ import annotations

from pathlib import Path

PATIENTS_HEADER = (
    "external_id,name,phase,email,line_user_id,preferred_channel,reminders_opt_in,newsletter_opt_in"
)
APPOINTMENTS_HEADER = "external_id,starts_at,status"
LINE_ID = "U" + "0123456789abcdef" * 2


def write_csv(directory: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` as `directory/name` ("utf-8-sig" adds a BOM, as Excel does)."""
    path = directory / name
    path.write_bytes(text.encode(encoding))
    return path


def patients_csv(
    directory: Path, *rows: str, name: str = "patients.csv", encoding: str = "utf-8"
) -> Path:
    return write_csv(directory, name, "\n".join([PATIENTS_HEADER, *rows]) + "\n", encoding)


def appointments_csv(directory: Path, *rows: str, name: str = "appointments.csv") -> Path:
    return write_csv(directory, name, "\n".join([APPOINTMENTS_HEADER, *rows]) + "\n")


def patient_row(
    external_id: str = "P1",
    name: str = "山田 花子",
    phase: str = "acute",
    email: str = "",
    line_user_id: str = LINE_ID,
    preferred_channel: str = "line",
    reminders_opt_in: str = "yes",
    newsletter_opt_in: str = "no",
) -> str:
    """One valid row of patients.csv unless a cell is overridden."""
    return ",".join(
        [
            external_id,
            name,
            phase,
            email,
            line_user_id,
            preferred_channel,
            reminders_opt_in,
            newsletter_opt_in,
        ]
    )

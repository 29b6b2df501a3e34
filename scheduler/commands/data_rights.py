"""The clinic's and the patients' rights over their data: `tayori export` (the clinic
takes everything with it, in files any program reads) and `tayori forget` (a
patient's name and contacts erased at their request)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any, TextIO

from scheduler.commands.common import CommandError, command_now, local, opened
from scheduler.core.domain import PATIENT_REASONS
from scheduler.settings import Settings
from scheduler.store import db
from scheduler.store.export import TABLES, Table
from scheduler.store.forget import forget_patient
from scheduler.store.patients import find_patient

# The first line of an export's README.md: how a later export knows the folder is
# an earlier one it may replace.
EXPORT_MARKER = "<!-- tayori export: this folder is replaced by the next export into it -->"
FORMATS = ("csv", "json")
README = "README.md"


def export_files() -> set[str]:
    """Every file an export may write, in either format."""
    return {README} | {f"{t.name}.{f}" for t in TABLES for f in FORMATS}


def export(args: argparse.Namespace, settings: Settings) -> int:
    now = command_now(args, settings)
    directory: Path = args.directory
    earlier = _check_folder(directory)
    with opened(settings) as runtime, db.snapshot(runtime.sessions) as session:
        directory.mkdir(parents=True, exist_ok=True)
        # An earlier export goes first, whole, so that no file of it (in the other
        # format, say) is left beside the new one.
        for name in earlier:
            (directory / name).unlink()
        # The README first: a folder with it is an export, even one cut short, and
        # the next export may replace it.
        _write_readme(directory / README, args.format, settings, now)
        counts: dict[str, int] = {}
        for table in TABLES:
            rows = (_values(row, args.format, settings) for row in table.rows(session))
            path = directory / f"{table.name}.{args.format}"
            if args.format == "csv":
                with path.open("w", encoding="utf-8-sig", newline="") as out:
                    counts[table.name] = _write_csv(out, table, rows)
            else:
                with path.open("w", encoding="utf-8") as out:
                    counts[table.name] = _write_json(out, table, rows)
    listed = ", ".join(f"{name}.{args.format} ({count})" for name, count in counts.items())
    print(f"exported to {directory}: {listed}; {README} describes every column")
    return 0


def _check_folder(directory: Path) -> list[str]:
    """The files of an earlier export in `directory` (none if it is new or empty);
    refuses a folder holding anything else, so nothing of the clinic's is overwritten."""
    if not directory.exists():
        return []
    if not directory.is_dir():
        raise CommandError(f"{directory} is a file: name a folder to export into")
    present = sorted(entry.name for entry in directory.iterdir())
    if not present:
        return []
    ours = export_files()
    if _is_export(directory / README) and all(name in ours for name in present):
        return present
    raise CommandError(
        f"{directory} is not empty and not an earlier export of Tayori's: name a new or "
        "empty folder (nothing was written)"
    )


def _is_export(readme: Path) -> bool:
    try:
        with readme.open(encoding="utf-8") as text:
            return text.readline().rstrip("\n") == EXPORT_MARKER
    except (OSError, UnicodeDecodeError):
        return False


def _values(row: tuple[Any, ...], file_format: str, settings: Settings) -> list[Any]:
    return [_value(value, file_format, settings) for value in row]


def _value(value: Any, file_format: str, settings: Settings) -> Any:
    """Times in clinic time with their offset, seconds precision; yes/no in CSV as
    the import writes them; empty for nothing in CSV, null in JSON."""
    if isinstance(value, datetime):
        return value.astimezone(settings.timezone).isoformat(timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if file_format == "csv":
        if value is None:
            return ""
        if isinstance(value, bool):
            return "yes" if value else "no"
    return value


def _write_csv(out: TextIO, table: Table, rows: Iterator[list[Any]]) -> int:
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([c.name for c in table.columns])
    count = 0
    for row in rows:
        writer.writerow(row)
        count += 1
    return count


def _write_json(out: TextIO, table: Table, rows: Iterator[list[Any]]) -> int:
    """A JSON array of objects, one line each, written as it is read."""
    names = [c.name for c in table.columns]
    count = 0
    out.write("[")
    for row in rows:
        out.write(",\n" if count else "\n")
        out.write(json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


def _write_readme(path: Path, file_format: str, settings: Settings, now: datetime) -> None:
    if file_format == "csv":
        shape = (
            'Each table is a CSV file: UTF-8 with a byte order mark (Excel\'s "CSV UTF-8", '
            "so that Excel shows Japanese text), a header line with the column names, "
            "commas, and double quotes around a cell that needs them. `yes`/`no` for "
            "true and false; an empty cell means nothing is recorded."
        )
    else:
        shape = (
            "Each table is a JSON file (UTF-8): an array with one object per row, whose "
            "keys are the column names. `true`/`false` where the columns below say yes/no; "
            "`null` means nothing is recorded."
        )
    lines = [
        EXPORT_MARKER,
        "",
        f"# {settings.clinic.name}: the data Tayori holds",
        "",
        f"Exported by `tayori export` on {local(now, settings)} (clinic time). The data "
        "is the clinic's: these files hold all of it that concerns patients, so it can be "
        "kept, checked, or taken to another system.",
        "",
        shape,
        "",
        "Times are ISO 8601 in the clinic's time zone with its offset "
        "(`2027-03-01T10:00:00+09:00`); days are `YYYY-MM-DD`. A patient is named in "
        "every table by `external_id`, the clinic's own patient number. No message's "
        "text is here: Tayori renders each message from the templates in `messages/` "
        "when it sends it and does not keep it. A patient forgotten at their request "
        "(`tayori forget`) keeps their number, phase, appointments and history, without "
        "name or contacts.",
        "",
        "Exporting again into this folder replaces these files; nothing else may be in the folder.",
    ]
    for table in TABLES:
        lines += [
            "",
            f"## {table.name}.{file_format}",
            "",
            f"{table.meaning[0].upper()}{table.meaning[1:]}.",
            "",
            "| column | meaning |",
            "| --- | --- |",
        ]
        lines += [f"| `{c.name}` | {c.meaning} |" for c in table.columns]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def forget(args: argparse.Namespace, settings: Settings) -> int:
    now = command_now(args, settings)
    with opened(settings) as runtime:
        with db.reading(runtime.sessions) as session:
            patient = find_patient(session, args.external_id)
            if patient is None:
                raise CommandError(f"no patient with external_id {args.external_id!r}")
            forgotten_at = patient.forgotten_at
        if forgotten_at is not None:
            print(
                f"patient {args.external_id} was forgotten on {local(forgotten_at, settings)} "
                "already: nothing to do"
            )
            return 0
        if not args.yes and not _confirmed(args.external_id):
            raise CommandError("not confirmed: nothing was changed")
        with db.transaction(runtime.sessions) as session:
            patient = find_patient(session, args.external_id)
            assert patient is not None  # a patient is never deleted
            if patient.forgotten_at is not None:  # by another process while we asked
                print(f"patient {args.external_id} was forgotten meanwhile: nothing to do")
                return 0
            done = forget_patient(session, patient, now)
    removed = _remove_previews(settings, args.external_id, done.delivery_ids)
    print(
        f"patient {args.external_id} forgotten: name, email, LINE user id and link code "
        f"erased; consent withdrawn (source 'forget'); {done.withdrawn} planned message(s) "
        f"withdrawn; {len(done.delivery_ids)} delivery record(s) kept without a name"
        + (f"; {removed} preview file(s) removed" if removed else "")
    )
    print(
        "files written earlier still hold what was erased: delete the patient's earlier "
        "exports and printed link-code pages yourself"
    )
    return 0


def _confirmed(external_id: str) -> bool:
    """The user types the external_id: a typo in the command does not erase the
    wrong patient."""
    print(
        f"This erases the name, email and LINE user id of patient {external_id} for good "
        "and withdraws their consent; it cannot be undone.\n"
        f"Type {external_id} to confirm: ",
        end="",
        file=sys.stderr,
        flush=True,
    )
    answer = sys.stdin.readline()
    return answer.strip() == external_id


def _remove_previews(settings: Settings, external_id: str, delivery_ids: list[str]) -> int:
    """The preview channel's files of the patient's messages (var/outbox/) and
    `tayori preview --patient`'s pages: they hold the name and the contacts."""
    candidates = [
        settings.outbox_dir / f"{delivery_id}.{suffix}"
        for delivery_id in delivery_ids
        for suffix in ("json", "eml")
    ]
    preview = settings.outbox_dir.parent / "preview"
    candidates += [preview / f"{reason.value}-{external_id}.html" for reason in PATIENT_REASONS]
    removed = 0
    for path in candidates:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed += 1
    return removed

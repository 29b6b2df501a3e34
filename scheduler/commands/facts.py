"""The clinic's facts: `tayori import`, `tayori demo` and `tayori patient`."""

from __future__ import annotations

import argparse
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.commands import USE_DEFAULT
from scheduler.commands.common import CommandError, command_now, local, opened, progress
from scheduler.core.domain import Phase
from scheduler.outbox.planner import plan_patient
from scheduler.settings import Settings
from scheduler.store import db
from scheduler.store.clinics import clinic_of
from scheduler.store.demo import load_demo
from scheduler.store.importer import (
    ImportResult,
    read_appointments,
    read_patients,
    save_appointments,
    save_patients,
)
from scheduler.store.models import Patient
from scheduler.store.patients import PatientView, find_patient, record_cadence, view_patient


def import_csv(args: argparse.Namespace, settings: Settings) -> int:
    now = command_now(args, settings)
    with opened(settings) as runtime:
        result: ImportResult
        # The file is checked before the write transaction begins: on SQLite that
        # takes the database's write lock, and the worker waits while it is held.
        if args.kind == "patients":
            patients = read_patients(args.file)
            with db.transaction(runtime.sessions) as session:
                result = save_patients(
                    session,
                    patients,
                    now,
                    progress=progress(len(patients), "patients"),
                    path=args.file,
                )
        else:
            with db.reading(runtime.sessions) as session:
                known = set(
                    session.scalars(
                        select(Patient.external_id).where(Patient.clinic_id == clinic_of(session))
                    )
                )
            appointments = read_appointments(args.file, settings.timezone, known)
            with db.transaction(runtime.sessions) as session:
                result = save_appointments(
                    session,
                    args.file,
                    appointments,
                    now,
                    progress=progress(len(appointments), "appointments"),
                )
    print(
        f"{args.file}: {result.created} created, {result.updated} updated, "
        f"{result.unchanged} unchanged"
    )
    return 0


def demo(args: argparse.Namespace, settings: Settings) -> int:
    now = command_now(args, settings)
    with opened(settings) as runtime:
        if args.if_empty and not db.is_empty(runtime.sessions):
            print("the database already has patients: demo not loaded")
            return 0
        directory = settings.config_path.parent / "demo"
        with db.transaction(runtime.sessions) as session:
            patients, appointments = load_demo(session, now, settings.rules, directory)
    print(
        f"demo clinic loaded from {directory}: {patients.created} patients, "
        f"{appointments.created} appointments"
    )
    return 0


def patient(args: argparse.Namespace, settings: Settings) -> int:
    now = command_now(args, settings)
    with opened(settings) as runtime, db.transaction(runtime.sessions) as session:
        patient = find_patient(session, args.external_id)
        if patient is None:
            raise CommandError(f"no patient with external_id {args.external_id!r}")
        if args.action == "set":
            if patient.forgotten_at is not None:
                raise CommandError(
                    f"patient {patient.external_id} was forgotten on "
                    f"{local(patient.forgotten_at, settings)}: nothing to change"
                )
            _set_patient(session, patient, args, now, settings)
        print(_describe(view_patient(session, patient, now, settings.rules), args, settings))
    return 0


def _set_patient(
    session: Session, patient: Patient, args: argparse.Namespace, now: datetime, settings: Settings
) -> None:
    def days(value: int | str | None, current: int | None) -> int | None:
        if value is None:
            return current
        return None if value == USE_DEFAULT else int(value)

    changed = record_cadence(
        session,
        patient,
        now,
        "cli",
        phase=Phase(args.phase) if args.phase else patient.phase,
        nudge_after_days=days(args.nudge_after_days, patient.nudge_after_days),
        follow_up_days=days(args.follow_up_days, patient.follow_up_days),
    )
    if not changed:
        print("nothing to change")
        return
    patient.updated_at = now
    print("changed: a new cadence episode starts now")
    # Planned again at once, as the desk does: `patient show` and `plan` say so now.
    session.flush()
    planned = plan_patient(session, patient.id, now, settings.rules, settings)
    if planned is None:
        print("planned again at the worker's next cycle (a campaign's first plan is pending)")
    else:
        print(
            f"planned again: {planned.created} new, {planned.revived} revived, "
            f"{planned.withdrawn} withdrawn"
        )


def _describe(view: PatientView, args: argparse.Namespace, settings: Settings) -> str:
    p = view.patient
    lines = [f"patient {p.external_id}  {p.name}"]
    if p.forgotten_at:
        lines.append(
            f"  forgotten on {local(p.forgotten_at, settings)}: name and contacts erased "
            "at the patient's request, consent withdrawn"
        )
    lines.append(f"  phase: {p.phase.value if p.phase else '(none: no cadence messages)'}")
    if view.cadence:
        c = view.cadence
        lines.append(
            f"  cadence: nudge after {c.nudge_after_days} days ({c.nudge_source}), "
            f"follow-up {c.follow_up_days} days later ({c.follow_up_source})"
        )
    visit = local(view.last_visit, settings) if view.last_visit else "(none)"
    lines.append(f"  last visit: {visit}{'  (lapsed: no cadence messages)' if view.lapsed else ''}")
    consent = ", ".join(f"{k.value} {'yes' if v else 'no'}" for k, v in view.consent.items())
    lines.append(f"  consent: {consent}")
    lines += [
        f"    {local(c.changed_at, settings)}  {c.kind.value} "
        f"{'yes' if c.granted else 'no'}  ({c.source})"
        for c in view.consent_history
    ]
    contacts = {"LINE": p.line_user_id, "email": p.email}
    shown = ", ".join(
        f"{name} {(value if getattr(args, 'contacts', False) else 'on file') if value else 'none'}"
        for name, value in contacts.items()
    )
    lines.append(f"  contacts: {shown}; prefers {p.preferred_channel.value}")
    if p.line_linked_at:
        lines.append(f"  LINE linked on {local(p.line_linked_at, settings)} (a link code)")
    lines.append("  phase and cadence history:")
    lines += [
        f"    {local(c.changed_at, settings)}  {c.phase.value if c.phase else '-'}  "
        f"nudge {c.nudge_after_days or 'default'}, follow-up {c.follow_up_days or 'default'}"
        f"  ({c.source})"
        for c in view.cadence_history
    ]
    lines.append("  upcoming:")
    lines += [
        f"    {local(d.send_after, settings)}  {d.reason.value}  "
        f"{d.channel.value if d.channel else '-'}"
        for d in view.upcoming
    ] or ["    (nothing planned)"]
    lines.append("  history:")
    lines += [
        f"    {local(d.sent_at or d.updated_at, settings)}  {d.reason.value}  "
        f"{d.channel.value if d.channel else '-'}  {d.state.value}"
        + (f" ({d.last_error})" if d.last_error else "")
        for d in view.history
    ] or ["    (no messages yet)"]
    return "\n".join(lines)

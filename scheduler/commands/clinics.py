"""`tayori clinic add` and `tayori clinic list`: the clinics an installation serves."""

from __future__ import annotations

import argparse
import os
import shutil

from sqlalchemy import func, select

from scheduler.commands.common import (
    CommandError,
    clinics_served,
    command_now,
    opened,
    table,
)
from scheduler.core.config import ConfigError
from scheduler.settings import Settings, clinic_settings
from scheduler.store import db
from scheduler.store.clinics import add_clinic as register
from scheduler.store.models import Patient


def add_clinic(args: argparse.Namespace, settings: Settings) -> int:
    """Check the clinic's folder (its settings must load), give it the installation's
    messages when it has none, then register it."""
    folder = args.config.resolve()
    if not (folder / "tayori.toml").is_file():
        raise CommandError(f"{folder}: no tayori.toml (the clinic's settings) in this folder")
    messages = folder / "messages"
    copied = not messages.exists()
    try:
        # Checked before anything is written: a folder with a mistake is refused whole.
        clinic_settings(settings, os.environ, folder, clinic_id=0, slug=args.slug)
        if copied:
            shutil.copytree(settings.messages_dir, messages)
        with opened(settings) as runtime, db.transaction(runtime.sessions) as session:
            entry = register(session, args.slug, folder, command_now(args, settings))
    except (ConfigError, ValueError) as e:
        if copied:
            shutil.rmtree(messages, ignore_errors=True)
        raise CommandError(str(e)) from None
    print(f"clinic {entry.slug} added: settings in {folder}")
    if copied:
        print(f"  its messages are a copy of {settings.messages_dir}: edit them in {messages}")
    print(f"  its LINE webhook: {settings.public_url or 'https://…'}/line/webhook/{entry.slug}")
    print("  restart the workers to serve it (the web process finds it by itself)")
    return 0


def list_clinics(args: argparse.Namespace, settings: Settings) -> int:
    clinics = clinics_served(settings)
    with opened(settings) as runtime, db.reading(runtime.sessions) as session:
        counted = select(Patient.clinic_id, func.count()).group_by(Patient.clinic_id)
        patients: dict[int, int] = {clinic: count for clinic, count in session.execute(counted)}
    rows = [
        [
            clinic.clinic_slug,
            str(patients.get(clinic.clinic_id, 0)),
            "yes" if clinic.line_api else "preview",
            "yes" if clinic.smtp else "preview",
            str(clinic.config_path.parent),
        ]
        for clinic in clinics
    ]
    print(table(["clinic", "patients", "LINE", "email", "settings"], rows))
    return 0

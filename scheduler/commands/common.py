"""What every command shares: errors a user can fix, the command's moment, the
runtime on a migrated database, and tables for the terminal."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from sqlalchemy.engine import make_url

from scheduler.clock import FixedClock, SystemClock, parse_moment
from scheduler.core.config import ConfigError
from scheduler.outbox.budget import LineQuotaView
from scheduler.runtime import Runtime, open_runtime
from scheduler.settings import Settings, clinic_settings
from scheduler.store import db
from scheduler.store.clinics import ClinicEntry, list_clinics

T = TypeVar("T")
log = logging.getLogger(__name__)
PROGRESS_MIN_ROWS = 500


class CommandError(Exception):
    """A problem the user can fix; printed without a traceback."""


def fixed_clock(args: argparse.Namespace, settings: Settings) -> FixedClock | None:
    if not getattr(args, "now", None):
        return None
    try:
        return FixedClock(parse_moment(args.now, settings.timezone))
    except ValueError as e:
        raise CommandError(f"--now: {e}") from None


def command_now(args: argparse.Namespace, settings: Settings) -> datetime:
    return (fixed_clock(args, settings) or SystemClock()).now()


def migrated_runtime(settings: Settings) -> Runtime:
    runtime = open_runtime(settings)
    if not db.is_up_to_date(runtime.engine):
        runtime.close()
        raise CommandError(_not_migrated(settings))
    return runtime


@contextmanager
def opened(settings: Settings) -> Iterator[Runtime]:
    """The runtime of one command, on a migrated database, closed afterwards."""
    runtime = migrated_runtime(settings)
    try:
        yield runtime
    finally:
        runtime.close()


def progress(total: int, what: str) -> Callable[[Iterable[T]], Iterable[T]]:
    """A progress bar for large files, only when a person is watching a terminal."""
    from tqdm import tqdm

    show = total >= PROGRESS_MIN_ROWS and sys.stderr.isatty()
    return lambda rows: tqdm(rows, total=total, desc=what, unit="row", disable=not show)


def quota_line(quota: LineQuotaView, settings: Settings) -> str:
    source = (
        f"LINE's reading of {local(quota.read_at, settings)}"
        if quota.read_at
        else "counted by Tayori; the limit is [line] monthly_quota"
    )
    limit = "no limit" if quota.limit is None else f"{quota.limit}"
    planned = sum(quota.planned.values())
    warning = (
        "  (more than the quota: the most important go first, the rest by email or later)"
        if quota.limit is not None and quota.forecast > quota.limit
        else ""
    )
    return (
        f"LINE quota this month: {quota.used} used of {limit} ({source}); "
        f"{planned} more planned, forecast {quota.forecast}{warning}"
    )


def local(moment: datetime, settings: Settings) -> str:
    return moment.astimezone(settings.timezone).strftime("%Y-%m-%d %H:%M")


def width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded for the terminal (Japanese characters are two cells wide)."""
    widths = [max(width(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    return "\n".join(
        "  ".join(
            str(cell) + " " * (widths[i] - width(str(cell))) for i, cell in enumerate(row)
        ).rstrip()
        for row in [headers, *rows]
    )


# --- which clinic -----------------------------------------------------------------


def one_clinic(settings: Settings, slug: str | None) -> Settings:
    """The settings of the clinic a command acts on: the one `--clinic` names, or
    the only one. Without `--clinic` and without a migrated database, the
    installation's own (a command that needs the database then says so)."""
    registered = _registered(settings)
    if slug is None:
        if registered is None or len(registered) <= 1:
            return settings
        slugs = ", ".join(entry.slug for entry in registered)
        raise CommandError(
            f"this installation serves {len(registered)} clinics ({slugs}): "
            "name one with --clinic SLUG"
        )
    [settings] = clinics_served(settings, slug)
    return settings


def clinics_served(settings: Settings, slug: str | None = None) -> list[Settings]:
    """The settings of every clinic of the installation, or of the one named."""
    registered = _registered(settings)
    if registered is None:
        raise CommandError(_not_migrated(settings))
    if slug is not None:
        registered = [entry for entry in registered if entry.slug == slug]
        if not registered:
            raise CommandError(f"--clinic {slug}: no such clinic (see `tayori clinic list`)")
    served = []
    for entry in registered:
        try:
            served.append(
                clinic_settings(settings, os.environ, entry.config_dir, entry.id, entry.slug)
            )
        except ConfigError as e:
            if slug is not None:
                raise
            # One clinic's mistake leaves the others served; it is said at each start.
            log.error("clinic %s is not served: %s", entry.slug, e, extra={"clinic": entry.slug})
    if not served:
        raise CommandError("no clinic's settings can be read: see the errors above")
    return served


def _registered(settings: Settings) -> list[ClinicEntry] | None:
    """The clinics in the database, or None when it is not there or not migrated."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return None  # asking would create an empty database file
    engine = db.make_engine(settings.database_url)
    try:
        if not db.is_up_to_date(engine):
            return None
        with db.reading(db.session_factory(engine)) as session:
            return list_clinics(session)
    finally:
        engine.dispose()


def _not_migrated(settings: Settings) -> str:
    where = make_url(settings.database_url).render_as_string(hide_password=True)
    return f"the database {where} is not up to date: run `tayori db upgrade`"

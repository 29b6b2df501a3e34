"""Which clinic a unit of work is for.

Every session works for one clinic, named in its `info` by the session factory
(`store.db.session_factory`): queries read and write that clinic's rows only, and a
row added through the ORM is stamped with it when it is flushed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session, UOWTransaction

from scheduler.store.models import Clinic

_CLINIC = "tayori_clinic_id"


def session_info(clinic_id: int) -> dict[str, Any]:
    return {_CLINIC: clinic_id}


def clinic_of(session: Session) -> int:
    """The clinic this session works for."""
    try:
        clinic_id: int = session.info[_CLINIC]
    except KeyError:
        raise RuntimeError("this session works for no clinic (see store.clinics)") from None
    return clinic_id


@event.listens_for(Session, "before_flush")
def _stamp_new_rows(session: Session, _flush: UOWTransaction, _instances: Any) -> None:
    for row in session.new:
        if getattr(row, "clinic_id", 0) is None:
            row.clinic_id = clinic_of(session)


# --- the clinics an installation serves ------------------------------------------

SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")


@dataclass(frozen=True)
class ClinicEntry:
    id: int
    slug: str
    config_dir: Path | None  # None: the installation's own settings


def list_clinics(session: Session) -> list[ClinicEntry]:
    rows = session.execute(select(Clinic.id, Clinic.slug, Clinic.config_dir).order_by(Clinic.id))
    return [ClinicEntry(id, slug, Path(folder) if folder else None) for id, slug, folder in rows]


def add_clinic(session: Session, slug: str, config_dir: Path, now: datetime) -> ClinicEntry:
    """Register a clinic whose settings are in `config_dir` (an absolute path)."""
    if not SLUG.fullmatch(slug):
        raise ValueError(
            f"{slug!r}: a clinic's slug is 1 to 40 lowercase letters, digits and hyphens "
            "(it goes in its webhook's address)"
        )
    for entry in list_clinics(session):
        if entry.slug == slug:
            raise ValueError(f"a clinic {slug!r} exists already")
        if entry.config_dir == config_dir:
            # Two clinics on one folder would share its LINE channel and count its
            # quota twice over.
            raise ValueError(f"{config_dir} is clinic {entry.slug}'s folder already")
    clinic = Clinic(slug=slug, config_dir=str(config_dir), created_at=now)
    session.add(clinic)
    session.flush()
    return ClinicEntry(clinic.id, slug, config_dir)

"""The versions of the practitioner's message and tip files, kept by the desk's
editor (one row per text saved or restored, per clinic and file)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.store.clinics import clinic_of
from scheduler.store.models import TemplateVersion


def versions_of(session: Session, path: str, limit: int | None = 50) -> list[TemplateVersion]:
    """The file's kept versions, newest first (the newest `limit`; None: all)."""
    return list(
        session.scalars(
            select(TemplateVersion)
            .where(TemplateVersion.clinic_id == clinic_of(session), TemplateVersion.path == path)
            .order_by(TemplateVersion.id.desc())
            .limit(limit)
        )
    )


def find_version(session: Session, path: str, version_id: int) -> TemplateVersion | None:
    """One kept version of the file, if it is this clinic's and this file's."""
    version = session.get(TemplateVersion, version_id)
    if version is None or version.clinic_id != clinic_of(session) or version.path != path:
        return None
    return version


def keep_version(
    session: Session, path: str, content: str, saved_by: int | None, now: datetime
) -> TemplateVersion:
    version = TemplateVersion(path=path, content=content, saved_by=saved_by, saved_at=now)
    session.add(version)
    session.flush()
    return version


def keep_as_found(session: Session, path: str, content: str, now: datetime) -> None:
    """Keep the file's text as it is on disk before the desk replaces it, unless it
    is the newest version kept already: the first save keeps the original, and an
    edit made outside the desk (by hand, by an update) is kept as well."""
    newest = versions_of(session, path, limit=1)
    if not newest or newest[0].content != content:
        keep_version(session, path, content, None, now)

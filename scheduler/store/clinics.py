"""Which clinic a unit of work is for.

Every session works for one clinic, named in its `info` by the session factory
(`store.db.session_factory`): queries read and write that clinic's rows only, and a
row added through the ORM is stamped with it when it is flushed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, UOWTransaction

# Migration 0009's clinic: the installation's own settings.
DEFAULT_CLINIC_ID = 1
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

"""`tayori db`."""

from __future__ import annotations

import argparse

from scheduler.settings import Settings
from scheduler.store import db


def upgrade(args: argparse.Namespace, settings: Settings) -> int:
    engine = db.make_engine(settings.database_url)
    try:
        db.upgrade(engine)
    finally:
        engine.dispose()
    print("database is up to date")
    return 0

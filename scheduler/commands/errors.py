"""What a clinic sees when a command cannot do its work: one line on stderr that
says what is wrong and what to do, and an exit status other than 0.

Every failure of every command ends here (`report`), so no traceback reaches the
clinic's screen; with TAYORI_LOG_LEVEL=DEBUG the traceback follows the line. What
this module writes carries no password and nothing from the database: a database
URL is shown with its password hidden, a database error by the driver's first line
only (later lines may quote the data), an unforeseen error by its type only.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
from dataclasses import dataclass

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from scheduler.commands.common import CommandError
from scheduler.settings import ConfigError
from scheduler.store.db import SQLITE_BUSY_TIMEOUT, DatabaseFolderError
from scheduler.store.importer import ImportRejected
from scheduler.store.worker_lock import WorkerRunning

log = logging.getLogger(__name__)

# Exit statuses.
FAILED = 1
CONFIGURATION = 2
INTERRUPTED = 128 + signal.SIGINT
OUTPUT_CLOSED = 128 + signal.SIGPIPE  # what a shell reports for `tayori status | head`

UNEXPECTED = "unexpected error ({}); run again with TAYORI_LOG_LEVEL=DEBUG for details"

# What to do about a database's answer (matched in the driver's words, lower case).
DATABASE_HINTS = (
    (r"connection refused", "is PostgreSQL running? check DATABASE_URL"),
    (r"^database .* does not exist", "create it, or check the database name in DATABASE_URL"),
    (
        r"^role .* does not exist|password authentication failed|no password supplied",
        "check the user and password in DATABASE_URL",
    ),
    (r"failed to resolve host|could not translate host name", "check the host in DATABASE_URL"),
    (r"timeout expired", "is the database server reachable? check DATABASE_URL"),
    (
        r"unable to open database file",
        "check the path in DATABASE_URL, and that Tayori may write to its folder",
    ),
    (r"readonly database", "let Tayori write to the database file and its folder"),
)
# Where psycopg says which server it tried before saying why it failed.
PSYCOPG_PREFIX = re.compile(
    r"^(connection failed: )?(connection to server .*? failed: )?(FATAL: +)?"
)


@dataclass(frozen=True)
class Answer:
    lines: tuple[str, ...]
    status: int
    # A mistake the message already pinpoints needs no traceback, even at DEBUG.
    traceback: bool = True


def report(error: BaseException, database_url: str | None) -> int:
    """Tell the clinic what went wrong; returns the exit status. `database_url` is
    the one the command used (None before the settings were read)."""
    if isinstance(error, BrokenPipeError):
        # The reader of our output left (`tayori status | head`): nothing to say.
        # Python flushes stdout again at exit, which may fail again and print a
        # warning: what is left goes to /dev/null instead.
        _discard_stdout()
        log.debug("the output was closed early", exc_info=error)
        return OUTPUT_CLOSED
    answer = explain(error, database_url)
    for line in answer.lines:
        print(line, file=sys.stderr)
    if answer.traceback:
        log.debug("the traceback of the error above", exc_info=error)
    return answer.status


def in_words(error: BaseException, database_url: str | None) -> str:
    """What `report` says of `error`, without the command's name: one finding among
    others (`tayori doctor`)."""
    return " ".join(line.removeprefix("tayori: ") for line in explain(error, database_url).lines)


def explain(error: BaseException, database_url: str | None) -> Answer:
    match error:
        case ConfigError():
            return Answer((f"tayori: configuration: {error}",), CONFIGURATION, traceback=False)
        case CommandError() | WorkerRunning():
            return Answer((f"tayori: {error}",), FAILED, traceback=False)
        case ImportRejected():
            summary = f"tayori: nothing imported ({len(error.problems)} problem(s))"
            return Answer((*error.problems, summary), FAILED, traceback=False)
        case KeyboardInterrupt():
            return Answer(("tayori: interrupted",), INTERRUPTED, traceback=False)
        case DatabaseFolderError() if database_url:
            line = (
                f"tayori: cannot create the folder {error.folder} for the database at "
                f"{hide_password(database_url)}: {error.reason} — check DATABASE_URL"
            )
            return Answer((line,), FAILED)
        # A failure to connect, whatever the driver calls it, and a database that
        # fails while working (locked, gone away); not a statement's own error,
        # which is a bug to report.
        case DBAPIError() if database_url and (
            error.statement is None or isinstance(error, OperationalError)
        ):
            return Answer((f"tayori: {database_problem(error, database_url)}",), FAILED)
        case OSError() if error.filename:
            line = (
                f"tayori: {error.filename}: {error.strerror} — check the path and its permissions"
            )
            return Answer((line,), FAILED)
    return Answer((f"tayori: {UNEXPECTED.format(type(error).__name__)}",), FAILED)


def database_problem(error: DBAPIError, database_url: str) -> str:
    where = hide_password(database_url)
    reason = _driver_reason(error, database_url)
    if reason == "database is locked":
        url = make_url(database_url)
        waited = url.query.get("timeout", SQLITE_BUSY_TIMEOUT)
        return (
            f"the database at {where} is locked by another process (waited {waited} s) — "
            "try again when that process is done, or raise ?timeout= in DATABASE_URL"
        )
    found = next((h for p, h in DATABASE_HINTS if re.search(p, reason.lower())), None)
    if error.statement is None:
        return (
            f"cannot connect to the database at {where}: {reason} — {found or 'check DATABASE_URL'}"
        )
    hint = found or "try again; if it fails again, run with TAYORI_LOG_LEVEL=DEBUG for details"
    return f"the database at {where} failed: {reason} — {hint}"


def _driver_reason(error: DBAPIError, database_url: str) -> str:
    """The driver's first line, without where psycopg tried to connect (the line
    already says where), starting in lower case to read as part of the line."""
    lines = str(error.orig).strip().splitlines()
    reason = PSYCOPG_PREFIX.sub("", lines[0]).strip() if lines else ""
    if not reason:
        return type(error.orig).__name__
    password = make_url(database_url).password
    if password:
        reason = reason.replace(str(password), "***")
    return reason[0].lower() + reason[1:] if reason[:2].istitle() else reason


def hide_password(database_url: str) -> str:
    return make_url(database_url).render_as_string(hide_password=True)


def _discard_stdout() -> None:
    try:
        descriptor = sys.stdout.fileno()
    except (OSError, ValueError):
        return  # not a real file (a test's capture): nothing will flush at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    os.close(devnull)

"""Operating an installation: `tayori release`, the one-off step of a deployment, and
`tayori doctor`, which tries everything the settings name and says what to fix."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from sqlalchemy.engine import make_url

from scheduler.channels import DeliveryError
from scheduler.commands import read_settings
from scheduler.commands.common import command_now, one_clinic
from scheduler.commands.database import upgrade
from scheduler.commands.errors import hide_password, in_words
from scheduler.commands.messages import lint
from scheduler.messages.lint import lint_messages
from scheduler.settings import Settings
from scheduler.store import db

log = logging.getLogger(__name__)


def release(args: argparse.Namespace, settings: Settings) -> int:
    """Templates first: a release they would fail changes nothing, not even the database
    (the running workers keep their last good templates meanwhile)."""
    return lint(args, settings) or upgrade(args, settings)


class Outcome(Enum):
    OK = "ok"
    PROBLEM = "PROBLEM"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Finding:
    outcome: Outcome
    text: str
    details: tuple[str, ...] = ()


# The template problems `tayori doctor` shows; `tayori lint` lists them all.
PROBLEMS_SHOWN = 5
PREVIEWS = "{what} are written to {outbox} as previews, not sent"


def doctor(args: argparse.Namespace) -> int:
    settings, finding = _settings(args)
    findings = [("settings", finding)]
    for name, check in CHECKS:
        if settings is None:
            findings.append((name, Finding(Outcome.SKIPPED, "fix the settings first")))
        else:
            findings.append((name, _run(check, args, settings)))
    for name, finding in findings:
        print(f"{finding.outcome.value:<8} {name}: {finding.text}")
        for detail in finding.details:
            print(f"{'':<8}   {detail}")
    problems = sum(finding.outcome is Outcome.PROBLEM for _, finding in findings)
    print(f"{problems} problem(s): see above" if problems else "all checks passed")
    return 1 if problems else 0


def _settings(args: argparse.Namespace) -> tuple[Settings | None, Finding]:
    try:
        settings = read_settings()
        if args.clinic is not None:
            settings = one_clinic(settings, args.clinic)
    except Exception as e:
        log.debug("the settings could not be read", exc_info=e)
        return None, Finding(Outcome.PROBLEM, in_words(e, None))
    return settings, Finding(Outcome.OK, f"read {settings.config_path} and the environment")


def _run(
    check: Callable[[argparse.Namespace, Settings], Finding],
    args: argparse.Namespace,
    settings: Settings,
) -> Finding:
    """One check; a failure it did not foresee is a finding too, in the words any
    command would use for it, so that the checks after it still run."""
    try:
        return check(args, settings)
    except DeliveryError as e:
        return Finding(Outcome.PROBLEM, e.reason)
    except Exception as e:
        log.debug("a check failed", exc_info=e)
        return Finding(Outcome.PROBLEM, in_words(e, settings.database_url))


def _database(args: argparse.Namespace, settings: Settings) -> Finding:
    where = hide_password(settings.database_url)
    url = make_url(settings.database_url)
    file = url.database if url.get_backend_name() == "sqlite" else None
    if file and file != ":memory:" and not Path(file).exists():
        # Connecting would create an empty file: a check changes nothing.
        return Finding(Outcome.PROBLEM, f"no database at {where} yet: run `tayori db upgrade`")
    engine = db.make_engine(settings.database_url)
    try:
        state = db.migrations(engine)
        may_stage = db.may_use_temporary_tables(engine)
    finally:
        engine.dispose()
    match state:
        case db.Migrations.CURRENT if not may_stage:
            return Finding(
                Outcome.PROBLEM,
                f"{where}: Tayori's role may not create temporary tables, through which "
                "plans write their rows: GRANT TEMPORARY ON DATABASE to it",
            )
        case db.Migrations.CURRENT:
            return Finding(Outcome.OK, f"{where} is reachable and up to date")
        case db.Migrations.BEHIND:
            return Finding(Outcome.PROBLEM, f"{where} is not up to date: run `tayori db upgrade`")
        case db.Migrations.NEWER:
            return Finding(
                Outcome.PROBLEM,
                f"{where} was migrated by a newer version of Tayori: run that version",
            )


def _templates(args: argparse.Namespace, settings: Settings) -> Finding:
    report = lint_messages(settings, command_now(args, settings))
    if not report.problems:
        return Finding(Outcome.OK, report.summary)
    return Finding(
        Outcome.PROBLEM,
        f"{len(report.problems)} problem(s) in {settings.messages_dir}: fix them, then check "
        "with `tayori lint`, which lists them all",
        tuple(report.problems[:PROBLEMS_SHOWN]),
    )


def _line(args: argparse.Namespace, settings: Settings) -> Finding:
    api = settings.line_api
    if api is None:
        previews = PREVIEWS.format(what="LINE messages", outbox=settings.outbox_dir)
        return Finding(Outcome.OK, f"not set (LINE_CHANNEL_ACCESS_TOKEN): {previews}")
    from scheduler.channels.line import LineTransport

    # The month's quota: a call that only reads, and costs no message.
    transport = LineTransport(api, max_connections=1)
    try:
        quota = transport.quota()
    except DeliveryError as e:
        if e.status == 401:
            return Finding(
                Outcome.PROBLEM,
                "the channel access token is wrong or expired: issue a new one in the LINE "
                "Developers console and set it as LINE_CHANNEL_ACCESS_TOKEN",
            )
        raise
    finally:
        transport.close()
    used = (
        f"{quota.used} messages used this month, no monthly limit"
        if quota.limit is None
        else f"{quota.used} of {quota.limit} messages used this month"
    )
    return Finding(Outcome.OK, f"the channel access token works ({used})")


SECURITY = {"starttls": "with STARTTLS", "ssl": "over TLS", "none": "without encryption"}


def _email(args: argparse.Namespace, settings: Settings) -> Finding:
    smtp = settings.smtp
    if smtp is None:
        previews = PREVIEWS.format(what="emails", outbox=settings.outbox_dir)
        return Finding(Outcome.OK, f"not set (SMTP_HOST): {previews}")
    from scheduler.channels.email import SmtpTransport

    SmtpTransport(smtp).check()
    login = "logged in" if smtp.username else "no login (SMTP_USERNAME is not set)"
    return Finding(
        Outcome.OK,
        f"connected to {smtp.host}:{smtp.port} {SECURITY[smtp.security]}, {login}; no message sent",
    )


CHECKS = (
    ("database", _database),
    ("templates", _templates),
    ("LINE", _line),
    ("email", _email),
)

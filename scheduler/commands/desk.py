"""The desk's accounts: `tayori user add`."""

from __future__ import annotations

import argparse
import getpass
import sys

from scheduler.commands.common import CommandError, command_now, opened
from scheduler.settings import DEFAULT_CLINIC_ID, Settings
from scheduler.store import db
from scheduler.store.desk import AccountError, Role, add_user, check_email, check_password


def user_add(args: argparse.Namespace, settings: Settings) -> int:
    """An account of the clinic: an owner if it is the clinic's first or with
    `--owner`, staff otherwise. The password is asked twice on a terminal, or
    read as one line from standard input (a script, a secret manager's pipe); never
    from an argument, which would stay in the shell's history and `ps`."""
    try:
        email = check_email(args.email)
        password = _password()
        check_password(password)
    except AccountError as e:
        raise CommandError(str(e)) from None
    now = command_now(args, settings)
    with opened(settings) as runtime, db.transaction(runtime.sessions) as session:
        try:
            user = add_user(session, email, password, now, Role.OWNER if args.owner else None)
        except AccountError as e:
            raise CommandError(str(e)) from None
        role = user.role
    if role == Role.OWNER:
        what = "an owner: manages the clinic's accounts in the desk too"
    else:
        what = "staff: uses the desk but manages no accounts (--owner makes an owner)"
    print(f"desk account {email} added to clinic {settings.clinic_slug} as {what}")
    address = settings.public_url or "http://HOST:PORT"
    print(f"  sign in at {address}{desk_path(settings)}/login")
    return 0


def desk_path(settings: Settings) -> str:
    """Where a clinic's desk lives: at the root for the installation's own clinic,
    under /desk/SLUG for the others (scheduler/web/desk)."""
    return "" if settings.clinic_id == DEFAULT_CLINIC_ID else f"/desk/{settings.clinic_slug}"


def _password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("the same password again: ") != first:
            raise CommandError("the two passwords differ: nothing was added")
        return first
    line = sys.stdin.readline()
    if not line:
        raise CommandError("no password on standard input: nothing was added")
    return line.rstrip("\r\n")

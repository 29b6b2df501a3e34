"""The `tayori` command (also `python -m scheduler`).

This module holds the command line itself, every command with its options; what a
command does lives in the module of its group (`facts`, `plan`, `outbox`, `worker`,
`messages`, `seasonal`, `database`, `linking`, `data_rights`, `web`, `desk`, `results`,
`operations`), imported only when that command runs.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from scheduler.core.domain import PATIENT_REASONS, ChannelName, Phase, Reason
from scheduler.core.seasons import FIRST_YEAR, LAST_YEAR

if TYPE_CHECKING:
    from scheduler.settings import Settings


def program() -> NoReturn:
    """The `tayori` program: `main`, then the end of the process."""
    status = main()
    # Python's last garbage collection would walk every object still alive (a dry
    # run keeps hundreds of thousands) just before the process gives its memory
    # back whole: a sixth of a second of `tayori plan`. Frozen objects are skipped.
    gc.freeze()
    sys.exit(status)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.plans_a_clinic:
        # First thing: the server's import of the planner then runs beside this
        # process's own imports rather than after them (outbox/fork_server.py).
        from scheduler.outbox.fork_server import start_ahead

        start_ahead(os.environ)
    # Imported after the arguments are read: `--help` and a mistyped option need none.
    from scheduler.commands.errors import report

    settings: Settings | None = None
    try:
        module, _, function = args.command.partition(":")
        handler = getattr(importlib.import_module(f"scheduler.commands.{module}"), function)
        if args.reads_settings:
            # `tayori doctor`: a mistake in the settings is one of its findings.
            status: int = handler(args)
        else:
            settings = read_settings()
            if args.clinics == ONE_CLINIC:
                from scheduler.commands.common import one_clinic

                settings = one_clinic(settings, args.clinic)
            status = handler(args, settings)
        # Written out here, not at exit, so that a reader who left early is noticed
        # while its error can still be answered.
        sys.stdout.flush()
        return status
    except (Exception, KeyboardInterrupt) as e:
        # Every failure, foreseen or not, is answered without a traceback: see errors.py.
        return report(e, settings.database_url if settings else None)


def read_settings() -> Settings:
    """The settings of a command: `.env`, logging, then the environment and the files
    it names."""
    from scheduler import logs
    from scheduler.settings import load_env_file, load_settings, log_format, log_level

    load_env_file(Path(".env"))
    # Logging first, so that a failure to read the rest can be logged at DEBUG.
    logs.configure(log_level(os.environ), log_format(os.environ))
    return load_settings()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tayori",
        description="Visit-cadence reminders for small clinics. Settings: .env and "
        "config/tayori.toml (see README.md).",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(
        name: str,
        handler: str,
        help: str,
        clinics: str | None = ONE_CLINIC,
        *,
        reads_settings: bool = False,
        plans_a_clinic: bool = False,
    ) -> argparse.ArgumentParser:
        """A command whose `handler` is `module:function` in this package, imported
        only when the command runs (so `tayori --help` starts at once). It is given
        the settings, unless it `reads_settings` itself (with `read_settings`). It
        acts on one clinic (`--clinic`, needed when the installation serves several),
        on every clinic unless `--clinic` narrows it, or on the installation itself.
        One that `plans_a_clinic` whole starts its planning processes' fork server
        first thing (outbox/fork_server.py)."""
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(
            command=handler,
            reads_settings=reads_settings,
            clinics=clinics,
            plans_a_clinic=plans_a_clinic,
        )
        if clinics is not None:
            clinic_option(sub, clinics)
        return sub

    def now_option(sub: argparse.ArgumentParser, what: str) -> None:
        sub.add_argument(
            "--now",
            metavar="ISO",
            help=f"{what} (ISO 8601; without an offset it is clinic time); default: the real time",
        )

    database = command("db", "database:upgrade", "manage the database", clinics=None)
    database_commands = database.add_subparsers(required=True, metavar="ACTION")
    database_commands.add_parser("upgrade", help="apply the migrations (creates the database)")

    command(
        "release",
        "operations:release",
        "the release step of a deployment: check every template and tip, then migrate "
        "the database; exit 1 with the problems, migrating nothing, if a template is wrong",
        clinics=None,
    )

    command(
        "doctor",
        "operations:doctor",
        "check the settings, database, templates, LINE and SMTP; say what to fix",
        reads_settings=True,
    )

    importing = command("import", "facts:import_csv", "import patients or appointments from CSV")
    importing.add_argument("kind", choices=["patients", "appointments"])
    importing.add_argument("file", type=Path)
    now_option(importing, "record the import (consent and phase history) at this moment")

    planning = command(
        "plan",
        "plan:plan",
        "show what would be sent, without sending or writing",
        plans_a_clinic=True,
    )
    now_option(planning, "plan as of this moment")
    planning.add_argument("--days", type=positive_int, default=7, help="look ahead (default 7)")
    planning.add_argument("--json", action="store_true", help="print a JSON array")
    planning.add_argument(
        "--keys", action="store_true", help="also each message's key (for `tayori hold`)"
    )

    ticking = command(
        "tick",
        "worker:tick_once",
        "run one worker cycle: plan, then send what is due",
        clinics=EVERY_CLINIC,
        plans_a_clinic=True,
    )
    now_option(ticking, "run the cycle as of this moment")

    replanning = command(
        "replan", "worker:replan", "have the next worker cycle plan every patient again"
    )
    replanning.add_argument(
        "--all",
        action="store_true",
        required=True,
        help="every patient (a change of the settings does this by itself)",
    )

    running = command(
        "run",
        "worker:run",
        "start the worker (a cycle every minute) until stopped",
        clinics=EVERY_CLINIC,
    )
    now_option(running, "start the worker's clock at this moment")

    status_command = command(
        "status",
        "outbox:status",
        "deliveries by state, channels, LINE quota, next due and failures",
    )
    now_option(status_command, "report as of this moment")

    send_test = command(
        "send-test", "outbox:send_test", "send one sample message to a patient now, for a check"
    )
    send_test.add_argument("--channel", choices=[c.value for c in ChannelName], required=True)
    send_test.add_argument("--to", metavar="PATIENT", required=True, help="the external_id")
    send_test.add_argument(
        "--reason",
        choices=[r.value for r in PATIENT_REASONS],
        default=Reason.CADENCE_NUDGE.value,
        help="which message to send (default cadence_nudge)",
    )
    now_option(send_test, "render and record the message as of this moment")

    seasons = command(
        "seasons", "seasonal:seasons", "the year's seasonal dates and the clinic's closures"
    )
    seasons.add_argument("year", type=_year)
    seasons.add_argument("--json", action="store_true", help="print a JSON object")

    campaigns = command(
        "campaigns", "seasonal:campaigns", "coming newsletters: audience, channels, LINE quota"
    )
    campaigns.add_argument("--year", type=_year, help="that year (default: the next 12 months)")
    campaigns.add_argument("--json", action="store_true", help="print a JSON array")
    now_option(campaigns, "count the audience as of this moment")

    pausing = command("campaign", "seasonal:campaign", "pause or resume a campaign", clinics=None)
    pausing.set_defaults(clinics=ONE_CLINIC)
    pausing_actions = pausing.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, help in (
        ("pause", "stop a campaign: its planned newsletters are withdrawn, none is sent"),
        ("resume", "send a paused campaign again from the next worker cycle"),
    ):
        acting = pausing_actions.add_parser(action, help=help, description=help)
        clinic_option(acting, ONE_CLINIC)
        acting.add_argument("name", metavar="NAME", help="the campaign's id in campaigns.toml")
        now_option(acting, "record it at this moment")
    reporting = command(
        "report",
        "results:report",
        "results: messages sent and how many were followed by a booking or visit within "
        "7 and 14 days, beside those who could not be messaged; booking-link presses",
    )
    reporting.add_argument(
        "--from", dest="first", type=_day, help="first day, YYYY-MM-DD (default: 89 days ago)"
    )
    reporting.add_argument("--to", dest="last", type=_day, help="last day (default: today)")
    reporting.add_argument("--json", action="store_true", help="print a JSON object")
    now_option(reporting, "report as of this moment")

    lint = command(
        "lint", "messages:lint", "check every template and tip; exit 1 with every problem"
    )
    now_option(lint, "render the samples as of this moment")

    preview = command("preview", "messages:preview", "print what a patient would receive")
    preview.add_argument("reason", choices=[r.value for r in PATIENT_REASONS])
    who = preview.add_mutually_exclusive_group()
    who.add_argument("--patient", metavar="ID", help="a patient's external_id")
    who.add_argument("--sample", action="store_true", help="a made-up patient (the default)")
    preview.add_argument(
        "--channel", choices=[c.value for c in ChannelName], default=ChannelName.LINE.value
    )
    now_option(preview, "compose the message as of this moment")

    retry = command("retry", "outbox:retry", "send a failed or skipped delivery again")
    retry.add_argument("delivery", help="the delivery id (see `tayori status`)")
    now_option(retry, "queue it as of this moment")

    holding = command(
        "hold", "outbox:hold", "keep a coming message from being sent until `tayori unhold`"
    )
    holding.add_argument(
        "message", metavar="KEY|DELIVERY", help="its key (`tayori plan --keys`) or delivery id"
    )
    now_option(holding, "record the hold at this moment")

    unholding = command("unhold", "outbox:unhold", "let a held message be sent again")
    unholding.add_argument(
        "message", metavar="KEY|DELIVERY", help="its key (`tayori plan --keys`) or delivery id"
    )

    digest = command("digest", "messages:digest", "print the practitioner's daily digest")
    now_option(digest, "the digest as of this moment")

    patient = command("patient", "facts:patient", "show or change one patient", clinics=None)
    patient.set_defaults(clinics=ONE_CLINIC)
    patient_actions = patient.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = patient_actions.add_parser("show", help="facts, cadence, consent and messages")
    clinic_option(show, ONE_CLINIC)
    show.add_argument("external_id")
    show.add_argument("--contacts", action="store_true", help="also print email and LINE id")
    now_option(show, "show the patient as of this moment")
    change = patient_actions.add_parser("set", help="change phase or the patient's own cadence")
    clinic_option(change, ONE_CLINIC)
    change.add_argument("external_id")
    change.add_argument("--phase", choices=[p.value for p in Phase])
    for option in ("--nudge-after-days", "--follow-up-days"):
        change.add_argument(
            option,
            type=_cadence_days,
            metavar="N|default",
            help="whole days 1-90, or 'default' for the phase default",
        )
    now_option(change, "record the change at this moment")

    link_code = command(
        "link-code", "linking:link_code", "issue a patient's one-time code to link their LINE"
    )
    link_code.add_argument("external_id", metavar="PATIENT", help="the patient's external_id")
    link_code.add_argument(
        "--qr",
        type=_qr_file,
        metavar="FILE.png|FILE.svg",
        help="also write a QR code that opens the clinic's LINE chat with the code typed",
    )
    now_option(link_code, "issue the code at this moment")

    link_codes = command(
        "link-codes",
        "linking:link_codes",
        "printable pages with a link code and its QR code, one per patient, and an index",
    )
    which = link_codes.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--all-unlinked",
        action="store_true",
        help="every patient without a LINE user id (new codes replace earlier ones)",
    )
    link_codes.add_argument(
        "directory", metavar="DIR", type=Path, help="where to write the pages (created if missing)"
    )
    now_option(link_codes, "issue the codes at this moment")

    exporting = command(
        "export",
        "data_rights:export",
        "write the clinic's data to DIR: a file per table and a README describing each column",
    )
    exporting.add_argument(
        "directory",
        metavar="DIR",
        type=Path,
        help="an empty or new folder, or the folder of an earlier export (replaced)",
    )
    exporting.add_argument(
        "--format", choices=["csv", "json"], default="csv", help="file format (default csv)"
    )
    now_option(exporting, "date the export")

    forgetting = command(
        "forget",
        "data_rights:forget",
        "erase a patient's name and contacts at their request and withdraw their consent",
    )
    forgetting.add_argument("external_id", metavar="PATIENT", help="the patient's external_id")
    forgetting.add_argument(
        "--yes", action="store_true", help="do not ask to type the external_id to confirm"
    )
    now_option(forgetting, "record it at this moment")

    serving = command(
        "serve",
        "web:serve",
        "run the web process (LINE webhook, unsubscribe page)",
        clinics=None,
    )
    serving.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    serving.add_argument("--port", type=positive_int, help="port (default: $PORT, else 8000)")

    user = command("user", "desk:user_add", "the desk's staff accounts", clinics=None)
    user.set_defaults(clinics=ONE_CLINIC)
    user_actions = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    adding_user = user_actions.add_parser(
        "add",
        help="add an account for the desk; the password is asked for (or read as one "
        "line from standard input when that is not a terminal)",
    )
    clinic_option(adding_user, ONE_CLINIC)
    adding_user.add_argument("email", metavar="EMAIL", help="the account's sign-in name")
    adding_user.add_argument(
        "--owner",
        action="store_true",
        help="an owner, who also manages the clinic's accounts in the desk (the clinic's "
        "first account is one anyway; later ones are staff without --owner)",
    )

    clinic = command("clinic", "clinics:list_clinics", "the clinics this installation serves", None)
    clinic_actions = clinic.add_subparsers(dest="action", required=True, metavar="ACTION")
    adding = clinic_actions.add_parser(
        "add", help="serve another clinic, whose settings are in its own folder"
    )
    adding.set_defaults(command="clinics:add_clinic")
    adding.add_argument("slug", metavar="SLUG", help="its short name: a-z, 0-9 and -")
    adding.add_argument(
        "--config",
        metavar="DIR",
        type=Path,
        required=True,
        help="its folder: tayori.toml, campaigns.toml, messages/ and .env (see README.md)",
    )
    clinic_actions.add_parser("list", help="every clinic, its folder and its channels")

    demo = command("demo", "facts:demo", "load the demo clinic from config/demo/")
    demo.add_argument("action", choices=["load"])
    demo.add_argument("--if-empty", action="store_true", help="only if there are no patients")
    now_option(demo, "date the demo visits relative to this moment")
    return parser


ONE_CLINIC = "one"
EVERY_CLINIC = "every"


def clinic_option(sub: argparse.ArgumentParser, clinics: str) -> None:
    sub.add_argument(
        "--clinic",
        metavar="SLUG",
        help=(
            "only this clinic (default: every clinic)"
            if clinics == EVERY_CLINIC
            else "the clinic (needed when the installation serves several)"
        ),
    )


USE_DEFAULT = "default"


def _cadence_days(text: str) -> int | str:
    if text == USE_DEFAULT:
        return USE_DEFAULT
    if not text.isdigit() or not 1 <= int(text) <= 90:
        raise argparse.ArgumentTypeError(f"expected 1 to 90 or 'default', got {text!r}")
    return int(text)


QR_FORMATS = (".png", ".svg")


def _qr_file(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in QR_FORMATS:
        raise argparse.ArgumentTypeError(f"expected a file ending in .png or .svg, got {text!r}")
    return path


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return int(text)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def _year(text: str) -> int:
    if not text.isdigit() or not FIRST_YEAR <= int(text) <= LAST_YEAR:
        raise argparse.ArgumentTypeError(f"expected a year {FIRST_YEAR}-{LAST_YEAR}, got {text!r}")
    return int(text)

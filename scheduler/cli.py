"""The `tayori` command (also `python -m scheduler`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from dotenv import load_dotenv
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from tqdm import tqdm

from scheduler import db
from scheduler.channel_state import LineQuotaView, line_quota
from scheduler.channels.email import email_html
from scheduler.clock import Clock, FixedClock, ShiftedClock, SystemClock, parse_moment
from scheduler.closures import WEEKDAYS, closure_spans
from scheduler.demo import load_demo
from scheduler.digest import build_digest, digest_context
from scheduler.domain import ChannelName, Phase, Reason
from scheduler.importer import (
    ImportRejected,
    ImportResult,
    read_appointments,
    read_patients,
    save_appointments,
    save_patients,
)
from scheduler.lint import PATIENT_REASONS, lint_messages
from scheduler.manual import preview_message, requeue, send_sample
from scheduler.models import Delivery, Patient
from scheduler.newsletters import CampaignForecast, forecast_campaigns
from scheduler.patients import PatientView, find_patient, record_cadence, view_patient
from scheduler.planner import dry_run
from scheduler.report import DeliveryLine, status
from scheduler.runtime import Runtime, open_runtime, tick
from scheduler.seasons import FIRST_YEAR, JAPANESE, LAST_YEAR, seasonal_dates
from scheduler.settings import ConfigError, Settings, load_settings
from scheduler.templates import Renderer, TemplateError, template_name
from scheduler.worker import Worker

log = logging.getLogger("tayori")
T = TypeVar("T")
PROGRESS_MIN_ROWS = 500


class CommandError(Exception):
    """A problem the user can fix; printed without a traceback."""


def main(argv: Sequence[str] | None = None) -> int:
    load_dotenv(Path(".env"))
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        logging.basicConfig(
            level=settings.log_level,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        for chatty in ("alembic", "apscheduler"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
        command: Callable[[argparse.Namespace, Settings], int] = args.command
        return command(args, settings)
    except ConfigError as e:
        print(f"tayori: configuration: {e}", file=sys.stderr)
        return 2
    except CommandError as e:
        print(f"tayori: {e}", file=sys.stderr)
        return 1
    except ImportRejected as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        print(f"tayori: nothing imported ({len(e.problems)} problem(s))", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tayori",
        description="Visit-cadence reminders for small clinics. Settings: .env and "
        "config/tayori.toml (see README.md).",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[..., int], help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(command=handler)
        return sub

    def now_option(sub: argparse.ArgumentParser, what: str) -> None:
        sub.add_argument(
            "--now",
            metavar="ISO",
            help=f"{what} (ISO 8601; without an offset it is clinic time); default: the real time",
        )

    database = command("db", _db_upgrade, "manage the database")
    database_commands = database.add_subparsers(required=True, metavar="ACTION")
    database_commands.add_parser("upgrade", help="apply the migrations (creates the database)")

    importing = command("import", _import, "import patients or appointments from CSV")
    importing.add_argument("kind", choices=["patients", "appointments"])
    importing.add_argument("file", type=Path)
    now_option(importing, "record the import (consent and phase history) at this moment")

    planning = command("plan", _plan, "show what would be sent, without sending or writing")
    now_option(planning, "plan as of this moment")
    planning.add_argument("--days", type=_positive_int, default=7, help="look ahead (default 7)")
    planning.add_argument("--json", action="store_true", help="print a JSON array")

    ticking = command("tick", _tick, "run one worker cycle: plan, then send what is due")
    now_option(ticking, "run the cycle as of this moment")

    running = command("run", _run, "start the worker (a cycle every minute) until stopped")
    now_option(running, "start the worker's clock at this moment")

    status_command = command(
        "status", _status, "deliveries by state, channels, LINE quota, next due and failures"
    )
    now_option(status_command, "report as of this moment")

    send_test = command(
        "send-test", _send_test, "send one sample message to a patient now, for a check"
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

    seasons = command("seasons", _seasons, "the year's seasonal dates and the clinic's closures")
    seasons.add_argument("year", type=_year)
    seasons.add_argument("--json", action="store_true", help="print a JSON object")

    campaigns = command(
        "campaigns", _campaigns, "coming newsletters: audience, channels, LINE quota"
    )
    campaigns.add_argument("--year", type=_year, help="that year (default: the next 12 months)")
    campaigns.add_argument("--json", action="store_true", help="print a JSON array")
    now_option(campaigns, "count the audience as of this moment")

    command("lint", _lint, "check every template and tip; exit 1 with every problem")

    preview = command("preview", _preview, "print what a patient would receive")
    preview.add_argument("reason", choices=[r.value for r in PATIENT_REASONS])
    who = preview.add_mutually_exclusive_group()
    who.add_argument("--patient", metavar="ID", help="a patient's external_id")
    who.add_argument("--sample", action="store_true", help="a made-up patient (the default)")
    preview.add_argument(
        "--channel", choices=[c.value for c in ChannelName], default=ChannelName.LINE.value
    )
    now_option(preview, "compose the message as of this moment")

    retry = command("retry", _retry, "send a failed or skipped delivery again")
    retry.add_argument("delivery", help="the delivery id (see `tayori status`)")
    now_option(retry, "queue it as of this moment")

    digest = command("digest", _digest, "print the practitioner's daily digest")
    now_option(digest, "the digest as of this moment")

    patient = command("patient", _patient, "show or change one patient")
    patient_actions = patient.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = patient_actions.add_parser("show", help="facts, cadence, consent and messages")
    show.add_argument("external_id")
    show.add_argument("--contacts", action="store_true", help="also print email and LINE id")
    now_option(show, "show the patient as of this moment")
    change = patient_actions.add_parser("set", help="change phase or the patient's own cadence")
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

    demo = command("demo", _demo, "load the demo clinic from config/demo/")
    demo.add_argument("action", choices=["load"])
    demo.add_argument("--if-empty", action="store_true", help="only if there are no patients")
    now_option(demo, "date the demo visits relative to this moment")
    return parser


USE_DEFAULT = "default"


def _cadence_days(text: str) -> int | str:
    if text == USE_DEFAULT:
        return USE_DEFAULT
    if not text.isdigit() or not 1 <= int(text) <= 90:
        raise argparse.ArgumentTypeError(f"expected 1 to 90 or 'default', got {text!r}")
    return int(text)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return int(text)


def _clock(args: argparse.Namespace, settings: Settings) -> FixedClock | None:
    if not getattr(args, "now", None):
        return None
    try:
        return FixedClock(parse_moment(args.now, settings.timezone))
    except ValueError as e:
        raise CommandError(f"--now: {e}") from None


def _now(args: argparse.Namespace, settings: Settings) -> datetime:
    return (_clock(args, settings) or SystemClock()).now()


def _runtime(settings: Settings) -> Runtime:
    runtime = open_runtime(settings)
    if not db.is_up_to_date(runtime.engine):
        where = make_url(settings.database_url).render_as_string(hide_password=True)
        runtime.close()
        raise CommandError(f"the database {where} is not up to date: run `tayori db upgrade`")
    return runtime


@contextmanager
def _opened(settings: Settings) -> Iterator[Runtime]:
    """The runtime of one command, on a migrated database, closed afterwards."""
    runtime = _runtime(settings)
    try:
        yield runtime
    finally:
        runtime.close()


def _db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    engine = db.make_engine(settings.database_url)
    try:
        db.upgrade(engine)
    finally:
        engine.dispose()
    print("database is up to date")
    return 0


def _progress(total: int, what: str) -> Callable[[Iterable[T]], Iterable[T]]:
    """A progress bar for large files, only when a person is watching a terminal."""
    show = total >= PROGRESS_MIN_ROWS and sys.stderr.isatty()
    return lambda rows: tqdm(rows, total=total, desc=what, unit="row", disable=not show)


def _import(args: argparse.Namespace, settings: Settings) -> int:
    now = _now(args, settings)
    with _opened(settings) as runtime, db.transaction(runtime.sessions) as session:
        result: ImportResult
        if args.kind == "patients":
            patients = read_patients(args.file)
            result = save_patients(
                session, patients, now, progress=_progress(len(patients), "patients")
            )
        else:
            known = set(session.scalars(select(Patient.external_id)))
            appointments = read_appointments(args.file, settings.timezone, known)
            result = save_appointments(
                session,
                args.file,
                appointments,
                now,
                progress=_progress(len(appointments), "appointments"),
            )
    print(
        f"{args.file}: {result.created} created, {result.updated} updated, "
        f"{result.unchanged} unchanged"
    )
    return 0


def _plan(args: argparse.Namespace, settings: Settings) -> int:
    now = _now(args, settings)
    with _opened(settings) as runtime, runtime.sessions() as session:
        until = now + timedelta(days=args.days)
        messages = dry_run(session, now, until, settings.rules, settings)
        quota = line_quota(session, now, settings.timezone, settings.config.line.monthly_quota)
    tz = settings.timezone
    if args.json:
        document = [
            {
                "patient": m.patient,
                "reason": m.reason,
                "channel": m.channel.value,
                "send_at": m.send_at.astimezone(tz).isoformat(),
                "template": m.template,
            }
            for m in messages
        ]
        print(json.dumps(document, ensure_ascii=False, indent=2))
        return 0
    if not messages:
        print(f"nothing to send in the next {args.days} day(s)")
        return 0
    print(
        _table(
            ["send at", "patient", "reason", "channel", "template"],
            [
                [_local(m.send_at, settings), m.patient, m.reason, m.channel.value, m.template]
                for m in messages
            ],
        )
    )
    by_line = sum(m.channel is ChannelName.LINE for m in messages)
    print(f"\n{by_line} of these by LINE. {_quota_line(quota, settings)}")
    return 0


def _tick(args: argparse.Namespace, settings: Settings) -> int:
    now = _now(args, settings)
    with _opened(settings) as runtime:
        result = tick(runtime, now)
    planned, sent = result.planned, result.dispatched
    outcomes = ", ".join(f"{n} {k}" for k, n in sorted(sent.counts.items())) or "nothing due"
    print(
        f"planned {planned.created} new, {planned.revived} revived, "
        f"{planned.withdrawn} withdrawn; dispatched: {outcomes}"
    )
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    fixed = _clock(args, settings)
    clock: Clock = ShiftedClock(fixed.now()) if fixed else SystemClock()
    Worker(_runtime(settings), clock).run()
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    now = _now(args, settings)
    with _opened(settings) as runtime, runtime.sessions() as session:
        report = status(session, now, settings)
    print("deliveries: " + ", ".join(f"{n} {state}" for state, n in report.counts.items()))
    print(_quota_line(report.line_quota, settings))
    for problem in lint_messages(settings, now).problems:
        print(f"template problem: {problem}")
    for hold in report.holds:
        until = f" until {_local(hold.until, settings)}" if hold.until else ""
        print(
            f"{hold.channel.value} held since {_local(hold.since, settings)}{until}: {hold.reason}"
        )

    def lines(items: list[DeliveryLine], with_error: bool) -> str:
        headers = ["when", "patient", "reason", "channel", "delivery"]
        rows = [
            [_local(d.at, settings), d.patient, d.reason, d.channel, d.id]
            + ([d.error or ""] if with_error else [])
            for d in items
        ]
        return _table(headers + (["note"] if with_error else []), rows)

    print("\nnext due:")
    print(lines(report.next_due, True) if report.next_due else "  (nothing planned)")
    print("\nfailures:")
    print(lines(report.failures, True) if report.failures else "  (none)")
    return 0


def _quota_line(quota: LineQuotaView, settings: Settings) -> str:
    source = (
        f"LINE's reading of {_local(quota.read_at, settings)}"
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


def _send_test(args: argparse.Namespace, settings: Settings) -> int:
    now = _now(args, settings)
    channel = ChannelName(args.channel)
    with _opened(settings) as runtime:
        try:
            delivery_id, outcome = send_sample(runtime, args.to, Reason(args.reason), channel, now)
        except LookupError as e:
            raise CommandError(str(e)) from None
        with runtime.sessions() as session:
            delivery = session.get_one(Delivery, delivery_id)
            error = delivery.last_error
    print(
        f"{args.reason} to {args.to} by {channel.value}: {outcome}"
        + (f" ({error})" if error else "")
    )
    print(f"delivery {delivery_id}")
    return 0 if outcome == "sent" else 1


def _seasons(args: argparse.Namespace, settings: Settings) -> int:
    dates = seasonal_dates(args.year, settings.timezone)
    closures = settings.config.closures
    spans = closure_spans(args.year, closures)
    weekly = [WEEKDAYS[day] for day in sorted(closures.weekly)]
    if args.json:
        document: dict[str, object] = {
            moment.value: day.isoformat() for moment, day in dates.items()
        }
        document["closures"] = [
            {"name": s.name, "first": s.first.isoformat(), "last": s.last.isoformat()}
            for s in spans
        ]
        document["closed_weekdays"] = weekly
        print(json.dumps(document, ensure_ascii=False, indent=2))
        return 0
    rows = [[day.isoformat(), JAPANESE[moment], moment.value] for moment, day in dates.items()]
    print(_table(["date", "moment", "key"], rows))
    print("\nclosed:")
    closed = [
        [s.first.isoformat(), s.last.isoformat() if s.last != s.first else "", s.name]
        for s in spans
    ]
    print(_table(["from", "to", "why"], closed) if closed else "  (no closures)")
    if weekly:
        print(f"and every {', '.join(weekly)} (定休日)")
    return 0


def _campaigns(args: argparse.Namespace, settings: Settings) -> int:
    now = _now(args, settings)
    today = now.astimezone(settings.timezone).date()
    first, last = (
        (date(args.year, 1, 1), date(args.year, 12, 31))
        if args.year
        else (today, today + timedelta(days=365))
    )
    with _opened(settings) as runtime, runtime.sessions() as session:
        forecasts = forecast_campaigns(session, settings, first, last, now)
        quota = line_quota(session, now, settings.timezone, settings.config.line.monthly_quota)
    month = (today.year, today.month)

    def line_left(day: date) -> int | None:
        """LINE messages the month of `day` has room for, as far as known now."""
        return quota.left if (day.year, day.month) == month else quota.limit

    def over(forecast: CampaignForecast) -> int:
        left = line_left(forecast.occurrence.day)
        return 0 if left is None else max(forecast.by_line - left, 0)

    if args.json:
        document = [
            {
                "campaign": f.campaign.id,
                "day": f.occurrence.day.isoformat(),
                "starts_at": f.occurrence.starts_at.astimezone(settings.timezone).isoformat(),
                "audience": f.audience,
                "line": f.by_line,
                "email": f.by_email,
                "line_left_that_month": line_left(f.occurrence.day),
                "line_over_quota": over(f),
            }
            for f in forecasts
        ]
        print(json.dumps(document, ensure_ascii=False, indent=2))
        return 0
    if not forecasts:
        print(f"no campaign occurrences from {first} to {last}")
        return 0

    def quota_note(forecast: CampaignForecast) -> str:
        left = line_left(forecast.occurrence.day)
        if left is None:
            return "no limit"
        excess = over(forecast)
        return f"{left} left" + (f", {excess} over: by email or later" if excess else "")

    rows = [
        [
            f.occurrence.day.isoformat(),
            f.campaign.id,
            str(f.audience),
            str(f.by_line),
            str(f.by_email),
            quota_note(f),
        ]
        for f in forecasts
    ]
    print(_table(["day", "campaign", "audience", "LINE", "email", "LINE quota"], rows))
    return 0


def _year(text: str) -> int:
    if not text.isdigit() or not FIRST_YEAR <= int(text) <= LAST_YEAR:
        raise argparse.ArgumentTypeError(f"expected a year {FIRST_YEAR}-{LAST_YEAR}, got {text!r}")
    return int(text)


def _lint(args: argparse.Namespace, settings: Settings) -> int:
    report = lint_messages(settings, SystemClock().now())
    for problem in report.problems:
        print(problem)
    if report.problems:
        print(
            f"tayori: {len(report.problems)} problem(s) in {settings.messages_dir}", file=sys.stderr
        )
        return 1
    print(report.summary)
    return 0


def _preview(args: argparse.Namespace, settings: Settings) -> int:
    now = _now(args, settings)
    reason, channel = Reason(args.reason), ChannelName(args.channel)
    with _opened(settings) as runtime:
        try:
            message = preview_message(runtime, reason, channel, now, args.patient)
        except (LookupError, TemplateError) as e:
            raise CommandError(str(e)) from None
    if channel is ChannelName.LINE:
        print(message.text)
        return 0
    page = (
        settings.outbox_dir.parent / "preview" / f"{reason.value}-{args.patient or 'sample'}.html"
    )
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(email_html(message), encoding="utf-8")
    print(f"件名: {message.subject}\n\n{message.text}\n\nHTML: {page}")
    return 0


def _retry(args: argparse.Namespace, settings: Settings) -> int:
    now = _now(args, settings)
    with _opened(settings) as runtime, db.transaction(runtime.sessions) as session:
        try:
            delivery = requeue(session, args.delivery, now)
        except LookupError as e:
            raise CommandError(str(e)) from None
        when = _local(delivery.send_after, settings)
    print(f"delivery {args.delivery} queued again: it goes with the next cycle ({when})")
    return 0


def _digest(args: argparse.Namespace, settings: Settings) -> int:
    """The same text the clinic's digest email carries, rendered by the same template."""
    now = _now(args, settings)
    with _opened(settings) as runtime:
        try:
            with runtime.sessions() as session:
                context = digest_context(build_digest(session, now, settings), settings)
            rendered = Renderer(settings.messages_dir).render(
                template_name(Reason.DAILY_DIGEST, ChannelName.EMAIL), context
            )
        except TemplateError as e:
            raise CommandError(str(e)) from None
    print(f"{rendered.subject}\n\n{rendered.text}")
    return 0


def _patient(args: argparse.Namespace, settings: Settings) -> int:
    now = _now(args, settings)
    with _opened(settings) as runtime, db.transaction(runtime.sessions) as session:
        patient = find_patient(session, args.external_id)
        if patient is None:
            raise CommandError(f"no patient with external_id {args.external_id!r}")
        if args.action == "set":
            _set_patient(session, patient, args, now)
        print(_describe(view_patient(session, patient, now, settings.rules), args, settings))
    return 0


def _set_patient(
    session: Session, patient: Patient, args: argparse.Namespace, now: datetime
) -> None:
    def days(value: int | str | None, current: int | None) -> int | None:
        if value is None:
            return current
        return None if value == USE_DEFAULT else int(value)

    changed = record_cadence(
        session,
        patient,
        now,
        "cli",
        phase=Phase(args.phase) if args.phase else patient.phase,
        nudge_after_days=days(args.nudge_after_days, patient.nudge_after_days),
        follow_up_days=days(args.follow_up_days, patient.follow_up_days),
    )
    if changed:
        patient.updated_at = now
    print("changed: a new cadence episode starts now" if changed else "nothing to change")


def _describe(view: PatientView, args: argparse.Namespace, settings: Settings) -> str:
    p = view.patient
    lines = [f"patient {p.external_id}  {p.name}"]
    lines.append(f"  phase: {p.phase.value if p.phase else '(none: no cadence messages)'}")
    if view.cadence:
        c = view.cadence
        lines.append(
            f"  cadence: nudge after {c.nudge_after_days} days ({c.nudge_source}), "
            f"follow-up {c.follow_up_days} days later ({c.follow_up_source})"
        )
    visit = _local(view.last_visit, settings) if view.last_visit else "(none)"
    lines.append(f"  last visit: {visit}{'  (lapsed: no cadence messages)' if view.lapsed else ''}")
    consent = ", ".join(f"{k.value} {'yes' if v else 'no'}" for k, v in view.consent.items())
    lines.append(f"  consent: {consent}")
    lines += [
        f"    {_local(c.changed_at, settings)}  {c.kind.value} "
        f"{'yes' if c.granted else 'no'}  ({c.source})"
        for c in view.consent_history
    ]
    contacts = {"LINE": p.line_user_id, "email": p.email}
    shown = ", ".join(
        f"{name} {(value if getattr(args, 'contacts', False) else 'on file') if value else 'none'}"
        for name, value in contacts.items()
    )
    lines.append(f"  contacts: {shown}; prefers {p.preferred_channel.value}")
    lines.append("  phase and cadence history:")
    lines += [
        f"    {_local(c.changed_at, settings)}  {c.phase.value if c.phase else '-'}  "
        f"nudge {c.nudge_after_days or 'default'}, follow-up {c.follow_up_days or 'default'}"
        f"  ({c.source})"
        for c in view.cadence_history
    ]
    lines.append("  upcoming:")
    lines += [
        f"    {_local(d.send_after, settings)}  {d.reason.value}  "
        f"{d.channel.value if d.channel else '-'}"
        for d in view.upcoming
    ] or ["    (nothing planned)"]
    lines.append("  history:")
    lines += [
        f"    {_local(d.sent_at or d.updated_at, settings)}  {d.reason.value}  "
        f"{d.channel.value if d.channel else '-'}  {d.state.value}"
        + (f" ({d.last_error})" if d.last_error else "")
        for d in view.history
    ] or ["    (no messages yet)"]
    return "\n".join(lines)


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    now = _now(args, settings)
    with _opened(settings) as runtime:
        if args.if_empty and not db.is_empty(runtime.sessions):
            print("the database already has patients: demo not loaded")
            return 0
        directory = settings.config_path.parent / "demo"
        with db.transaction(runtime.sessions) as session:
            patients, appointments = load_demo(session, now, settings.rules, directory)
    print(
        f"demo clinic loaded from {directory}: {patients.created} patients, "
        f"{appointments.created} appointments"
    )
    return 0


def _local(moment: datetime, settings: Settings) -> str:
    return moment.astimezone(settings.timezone).strftime("%Y-%m-%d %H:%M")


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded for the terminal (Japanese characters are two cells wide)."""
    widths = [max(_width(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    return "\n".join(
        "  ".join(
            str(cell) + " " * (widths[i] - _width(str(cell))) for i, cell in enumerate(row)
        ).rstrip()
        for row in [headers, *rows]
    )

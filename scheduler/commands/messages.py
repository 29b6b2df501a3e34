"""The practitioner's messages: `tayori lint`, `preview` and `digest`."""

from __future__ import annotations

import argparse
import sys

from scheduler.channels.email import email_html
from scheduler.commands.common import CommandError, command_now, opened
from scheduler.core.domain import ChannelName, Reason
from scheduler.messages.digest import build_digest, digest_context
from scheduler.messages.lint import lint_messages
from scheduler.messages.template_names import template_name
from scheduler.messages.templates import Renderer, TemplateError
from scheduler.outbox.manual import preview_message
from scheduler.settings import Settings


def lint(args: argparse.Namespace, settings: Settings) -> int:
    report = lint_messages(settings, command_now(args, settings))
    for problem in report.problems:
        print(problem)
    if report.problems:
        print(
            f"tayori: {len(report.problems)} problem(s) in {settings.messages_dir}", file=sys.stderr
        )
        return 1
    print(report.summary)
    return 0


def preview(args: argparse.Namespace, settings: Settings) -> int:
    now = command_now(args, settings)
    reason, channel = Reason(args.reason), ChannelName(args.channel)
    with opened(settings) as runtime:
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


def digest(args: argparse.Namespace, settings: Settings) -> int:
    """The same text the clinic's digest email carries, rendered by the same template."""
    now = command_now(args, settings)
    with opened(settings) as runtime:
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

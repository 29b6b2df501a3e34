"""`tayori lint`: every problem in the practitioner's templates and tips, found
before a patient could meet it. The worker runs the same checks when it starts.

Each template is rendered with a made-up patient in every phase through the same
`Renderer` that sends, so what passes here renders when sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import jinja2
from jinja2 import meta, nodes

from scheduler.channels import DeliveryError
from scheduler.channels.line import line_message
from scheduler.core.campaigns import CAMPAIGN_VARIABLES
from scheduler.core.domain import PATIENT_REASONS, ChannelName, Phase, Reason
from scheduler.messages.context import (
    MESSAGE_VARIABLES,
    SAMPLE_CAMPAIGN,
    SAMPLE_UNSUBSCRIBE_URL,
    STOPPABLE,
    sample_context,
)
from scheduler.messages.digest import digest_context, sample_digest
from scheduler.messages.sandbox import LimitedEnvironment
from scheduler.messages.templates import (
    TEMPLATE_GLOBALS,
    Renderer,
    TemplateError,
    TemplateLimitError,
    template_in,
    template_name,
)
from scheduler.messages.tips import TipError, load_tips
from scheduler.settings import Settings


@dataclass(frozen=True)
class LintReport:
    problems: list[str]
    templates: int
    tips: int

    @property
    def summary(self) -> str:
        return f"{self.templates} templates and {self.tips} tips checked: no problems"


def lint_messages(settings: Settings, now: datetime) -> LintReport:
    directory = settings.messages_dir
    problems: list[str] = []
    paths = sorted(directory.rglob("*.j2"))
    for path in paths:
        problems += _source_problems(directory, path)
    renderer = Renderer(directory)
    for name in _required_templates(settings):
        if not (directory / name).is_file():
            problems.append(f"{directory / name}: missing: the settings use this message")
            continue
        problems += _render_problems(renderer, name, settings, now)
    tips = 0
    try:
        tips = len(load_tips(directory / "tips"))
    except TipError as e:
        problems += e.problems
    return LintReport(list(dict.fromkeys(problems)), len(paths), tips)


def _required_templates(settings: Settings) -> list[str]:
    names = [template_name(r, c) for r in PATIENT_REASONS for c in ChannelName]
    names += [
        template_in(campaign.template, channel)
        for campaign in settings.campaigns
        if campaign.enabled
        for channel in ChannelName
    ]
    digest = settings.digest
    if digest.enabled:
        names += [
            template_name(Reason.DAILY_DIGEST, channel)
            for channel, address in (
                (ChannelName.EMAIL, digest.email),
                (ChannelName.LINE, digest.line_user_id),
            )
            if address
        ]
    return names


def _source_problems(directory: Path, path: Path) -> list[str]:
    """Syntax errors, and names a template uses that no message provides."""
    name = path.relative_to(directory).as_posix()
    try:
        source = path.read_text(encoding="utf-8")
        tree = LimitedEnvironment().parse(source, name, str(path))
    except UnicodeDecodeError:
        return [f"{path}: not UTF-8 text: save the file as UTF-8"]
    except jinja2.TemplateSyntaxError as e:
        return [f"{path}:{e.lineno}: {e.message}"]
    folder = name.split("/")[0]
    if folder == Reason.DAILY_DIGEST.value:
        allowed = _digest_variables()
    elif folder in {r.value for r in Reason} or folder.startswith("_"):
        allowed = MESSAGE_VARIABLES
    else:  # a campaign's folder
        allowed = MESSAGE_VARIABLES | CAMPAIGN_VARIABLES
    allowed |= set(TEMPLATE_GLOBALS)
    lines = {n.name: n.lineno for n in reversed(list(tree.find_all(nodes.Name)))}
    return [
        f"{path}:{lines.get(variable, '?')}: unknown variable '{variable}' "
        "(messages/README.md lists the ones a message has)"
        for variable in sorted(meta.find_undeclared_variables(tree) - allowed)
    ]


def _digest_variables() -> frozenset[str]:
    return frozenset(digest_context(sample_digest(datetime.now().date()), Settings()))


def _render_problems(renderer: Renderer, name: str, settings: Settings, now: datetime) -> list[str]:
    path = settings.messages_dir / name
    folder, channel = name.split("/")[0], ChannelName(name.split("/")[1][:-3])
    reason = Reason(folder) if folder in {r.value for r in Reason} else Reason.NEWSLETTER
    if reason is Reason.DAILY_DIGEST:
        contexts = [digest_context(sample_digest(now.date()), settings)]
    else:
        phases: list[Phase | None] = [*Phase, None]
        contexts = [
            sample_context(reason, phase, settings.clinic, now, settings.timezone)
            for phase in phases
        ]
        if reason is Reason.NEWSLETTER:
            contexts = [c | SAMPLE_CAMPAIGN | {"campaign": folder} for c in contexts]
    problems: list[str] = []
    for context in contexts:
        try:
            rendered = renderer.render(name, context)
        except TemplateLimitError as e:
            problems.append(str(e))
            break  # each other patient would take as long to go over it again
        except TemplateError as e:
            problems.append(str(e))
            continue
        if channel is ChannelName.LINE:
            try:
                line_message(rendered.text)
            except DeliveryError as e:
                problems.append(f"{path}: {e.reason}")
        elif reason is not Reason.DAILY_DIGEST:
            problems += _footer_problems(path, rendered.text, reason, settings)
    return problems


def _footer_problems(path: Path, text: str, reason: Reason, settings: Settings) -> list[str]:
    """Japan's Act on Specified Electronic Mail: the sender's name, address and a
    contact, and how to stop the messages, in every mail to a patient."""
    clinic = settings.clinic
    required = [clinic.name, clinic.address, clinic.phone or clinic.email]
    problems = []
    if not all(value in text for value in required if value):
        problems.append(
            f"{path}: no sender footer (clinic name, address, contact): "
            'keep {% include "_footer.j2" %}'
        )
    if reason in STOPPABLE and SAMPLE_UNSUBSCRIBE_URL not in text:
        problems.append(
            f"{path}: no unsubscribe link: the footer must show {{{{ unsubscribe_url }}}}"
        )
    return problems

"""`tayori lint`: every problem in the practitioner's templates and tips, found
before a patient could meet it. The worker runs the same checks when it starts.

Each template is rendered with a made-up patient in every phase through the same
`Renderer` that sends, so what passes here renders when sent; and again with an
awkward name (quotes, a backslash, emoji, 200 characters), so that a template which
pastes a name into JSON unescaped is found before a patient with such a name is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta, nodes

from scheduler.channels import DeliveryError
from scheduler.channels.line import check_line_text
from scheduler.core.campaigns import CAMPAIGN_VARIABLES
from scheduler.core.domain import PATIENT_REASONS, ChannelName, Phase, Reason
from scheduler.core.window import local_date
from scheduler.messages.context import (
    AWKWARD_PATIENT,
    LINE_FOLLOW,
    LINE_FOLLOW_VARIABLES,
    MESSAGE_VARIABLES,
    SAMPLE_CAMPAIGN,
    SAMPLE_PATIENT,
    SAMPLE_UNSUBSCRIBE_URL,
    STOPPABLE,
    line_follow_context,
    sample_context,
)
from scheduler.messages.digest import digest_context, sample_digest
from scheduler.messages.sandbox import LimitedEnvironment
from scheduler.messages.template_names import template_in, template_name
from scheduler.messages.templates import (
    TEMPLATE_GLOBALS,
    Renderer,
    TemplateError,
    TemplateLimitError,
)
from scheduler.messages.tips import TipError, load_tips, read_tip
from scheduler.settings import Settings


@dataclass(frozen=True)
class LintReport:
    problems: list[str]
    templates: int
    tips: int

    @property
    def summary(self) -> str:
        return f"{self.templates} templates and {self.tips} tips checked: no problems"


# Words that promise a result: a message or tip from a clinic may encourage, never
# promise a cure (messages/tips/README.md asks for 「〜しやすくなります」 instead).
CURE_PROMISE = re.compile("治る|治り|治せ|完治|必ず|絶対")


def lint_messages(settings: Settings, now: datetime) -> LintReport:
    """Every problem in the templates and tips, rendered as at `now` (the command's
    moment, which `--now` pins)."""
    directory = settings.messages_dir
    problems: list[str] = []
    paths = sorted(directory.rglob("*.j2"))
    for path in paths:
        problems += _source_problems(directory, path)
        problems += cure_promises(path)
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
    for tip in sorted((directory / "tips").glob("*.md")):
        if tip.name != "README.md":
            problems += cure_promises(tip)
    return LintReport(list(dict.fromkeys(problems)), len(paths), tips)


def cure_promises(path: Path, text: str | None = None) -> list[str]:
    """`file:line: problem` for each line of a template or tip that promises a cure;
    `text` is the file's text being edited (else the file is read)."""
    try:
        lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    except (OSError, UnicodeDecodeError):
        return []  # reported where the file is read for its content
    return [
        f"{path}:{number}: promises a result ({match.group()}): a clinic's message may "
        "encourage, never promise (e.g. 「〜しやすくなります」)"
        for number, line in enumerate(lines, 1)
        if (match := CURE_PROMISE.search(line))
    ]


def lint_template(settings: Settings, now: datetime, name: str, text: str) -> list[str]:
    """The problems `text` would have as the template `name` of the messages folder
    (a path relative to it), found as `lint_messages` finds them, before the text is
    saved: its syntax and variables, promises of a cure, and the messages rendered
    with it in the file's place. A shared part (`_footer.j2`) is checked in every
    message the settings use, since each includes it or may."""
    directory = settings.messages_dir
    path = directory / name
    problems = _source_problems(directory, path, text) + cure_promises(path, text)
    renderer = Renderer(directory, edited={name: text})
    if "/" in name:
        rendered = [name] if _channel_of(name) is not None else []
    else:
        rendered = [n for n in _required_templates(settings) if (directory / n).is_file()]
    for each in rendered:
        problems += _render_problems(renderer, each, settings, now)
    return list(dict.fromkeys(problems))


def lint_tip(path: Path, text: str) -> list[str]:
    """The problems `text` would have as the tip file at `path`, before it is saved."""
    return read_tip(path, text)[1] + cure_promises(path, text)


def _channel_of(name: str) -> ChannelName | None:
    """The channel of a message template `<folder>/<channel>.j2`, None for another file."""
    stem = name.rsplit("/", 1)[-1].removesuffix(".j2")
    return next((c for c in ChannelName if c.value == stem), None)


def sample_message_context(settings: Settings, name: str, now: datetime) -> dict[str, Any]:
    """The first made-up message `lint` renders the template `name` with: the sample
    patient, for a preview of a message the desk cannot compose for a patient (the
    digest, the LINE greeting, a campaign's newsletter)."""
    folder = name.split("/")[0]
    if folder == LINE_FOLLOW:
        return line_follow_context(settings.clinic, False)
    reason = Reason(folder) if folder in {r.value for r in Reason} else Reason.NEWSLETTER
    return _sample_contexts(reason, folder, settings, now)[0][0]


def _required_templates(settings: Settings) -> list[str]:
    names = [template_name(r, c) for r in PATIENT_REASONS for c in ChannelName]
    # The LINE webhook's greeting, sent whenever someone adds the account.
    names.append(template_in(LINE_FOLLOW, ChannelName.LINE))
    names += [
        template_in(campaign.template, channel)
        for campaign in settings.campaigns
        if campaign.enabled
        for channel in ChannelName
    ]
    digest = settings.digest
    if digest.enabled:
        names += [template_name(Reason.DAILY_DIGEST, channel) for channel in digest.channels]
    return names


def _source_problems(directory: Path, path: Path, text: str | None = None) -> list[str]:
    """Syntax errors, and names a template uses that no message provides; `text` is
    the file's text being edited (else the file is read)."""
    name = path.relative_to(directory).as_posix()
    try:
        source = path.read_text(encoding="utf-8") if text is None else text
        tree = LimitedEnvironment().parse(source, name, str(path))
    except UnicodeDecodeError:
        return [f"{path}: not UTF-8 text: save the file as UTF-8"]
    except jinja2.TemplateSyntaxError as e:
        return [f"{path}:{e.lineno}: {e.message}"]
    folder = name.split("/")[0]
    if folder == Reason.DAILY_DIGEST.value:
        allowed = _digest_variables()
    elif folder == LINE_FOLLOW:
        allowed = LINE_FOLLOW_VARIABLES
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
    # Only the names matter here, not the day.
    return frozenset(digest_context(sample_digest(date(2000, 1, 1)), Settings()))


# Said of a problem only the awkward name shows.
AWKWARD_NAME_NOTE = " (with a patient name that has quotes, a backslash, emoji or 200 characters)"
FLEX_HINT = ": write each value into a Flex message's JSON as {{ value|tojson }}"


def _render_problems(renderer: Renderer, name: str, settings: Settings, now: datetime) -> list[str]:
    path = settings.messages_dir / name
    folder, channel = name.split("/")[0], ChannelName(name.split("/")[1][:-3])
    reason = Reason(folder) if folder in {r.value for r in Reason} else Reason.NEWSLETTER
    if folder == LINE_FOLLOW:
        # It knows the clinic and whether the LINE is linked, nobody's name.
        contexts = [(line_follow_context(settings.clinic, linked), "") for linked in (False, True)]
    else:
        contexts = _sample_contexts(reason, folder, settings, now)
    problems: list[str] = []
    for context, note in contexts:
        found: list[str] = []
        over_limit = False
        try:
            rendered = renderer.render(name, context)
        except TemplateError as e:
            found.append(str(e))
            over_limit = isinstance(e, TemplateLimitError)
        else:
            if channel is ChannelName.LINE:
                try:
                    check_line_text(rendered.text)
                except DeliveryError as e:
                    flex = rendered.text.startswith("{")
                    found.append(f"{path}: {e.reason}{FLEX_HINT if flex else ''}")
            elif reason is not Reason.DAILY_DIGEST:
                found += _footer_problems(path, rendered.text, reason, settings)
        problems += [p if not note or p in problems else p + note for p in found]
        if over_limit:
            break  # each other patient would take as long to go over it again
    return problems


def _sample_contexts(
    reason: Reason, folder: str, settings: Settings, now: datetime
) -> list[tuple[dict[str, Any], str]]:
    """The made-up messages a template is rendered with, each with what to add to a
    problem only it shows: the sample patient in every phase, then the awkward one."""
    contexts: list[tuple[dict[str, Any], str]] = []
    for patient, note in ((SAMPLE_PATIENT, ""), (AWKWARD_PATIENT, AWKWARD_NAME_NOTE)):
        if reason is Reason.DAILY_DIGEST:
            today = local_date(now, settings.timezone)
            contexts.append((digest_context(sample_digest(today, patient), settings), note))
            continue
        for phase in [*Phase, None]:
            context = sample_context(
                reason, phase, settings.clinic, now, settings.timezone, patient
            )
            if reason is Reason.NEWSLETTER:
                context |= SAMPLE_CAMPAIGN | {"campaign": folder}
            contexts.append((context, note))
    return contexts


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

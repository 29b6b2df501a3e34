"""Rendering the practitioner's message templates (Jinja2, sandboxed, strict).

Every message goes through `Renderer.render`: the worker, the dry run, `tayori
preview` and `tayori lint` all use this one function, so what is checked and
previewed is what is sent.

The practitioner edits these files while the worker runs. An edited file is used
from the next message on; an edit that breaks it leaves the last version that
worked in use (and the problem in the log, `tayori status` and `tayori lint`),
so nobody receives a broken or half-rendered message.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from scheduler.core.domain import ChannelName, Reason

log = logging.getLogger(__name__)

# An email template's blocks: the subject and the plain-text body are required; an
# `html` block, rendered with HTML escaping, is optional (else the HTML part is
# made from the text).
EMAIL_BLOCKS = ("subject", "body")
HTML_BLOCK = "html"
# Jinja's own helpers a template may use besides the message's variables.
TEMPLATE_GLOBALS = ("range", "dict", "namespace")


def template_name(reason: Reason, channel: ChannelName) -> str:
    return template_in(reason.value, channel)


def template_in(folder: str, channel: ChannelName) -> str:
    """The template of one channel in a folder of messages/ (a reason's, or a
    campaign's)."""
    return f"{folder}/{channel.value}.j2"


class TemplateError(Exception):
    """A template could not be loaded or rendered; the message names file and line."""


@dataclass(frozen=True)
class Rendered:
    text: str
    subject: str | None = None
    html: str | None = None


class _LastGoodLoader(jinja2.FileSystemLoader):
    """Loads templates from disk and, when an edited file no longer compiles, keeps
    serving the version that last did (includes such as `_footer.j2` too).

    Jinja asks its loader again whenever a file changed; this is the one place
    that sees both the new source and the old template.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, encoding="utf-8")
        self.last_good: dict[tuple[int, str], jinja2.Template] = {}
        self.problems: dict[str, str] = {}  # template name -> what is wrong now
        self._lock = threading.Lock()

    def load(
        self,
        environment: jinja2.Environment,
        name: str,
        globals: MutableMapping[str, Any] | None = None,
    ) -> jinja2.Template:
        key = (id(environment), name)
        try:
            template = super().load(environment, name, globals)
        except (jinja2.TemplateSyntaxError, jinja2.TemplateNotFound, UnicodeDecodeError) as e:
            with self._lock:
                kept = self.last_good.get(key)
            if kept is None:
                raise
            self.report(name, _load_problem(e, name))
            return kept
        with self._lock:
            self.last_good[key] = template
            self.problems.pop(name, None)
        return template

    def report(self, name: str, problem: str) -> None:
        with self._lock:
            if self.problems.get(name) == problem:
                return
            self.problems[name] = problem
        log.error("template problem, the last good version stays in use: %s", problem)


class Renderer:
    def __init__(self, messages_dir: Path) -> None:
        self.messages_dir = messages_dir
        self._loader = _LastGoodLoader(messages_dir)
        options: dict[str, Any] = {
            "loader": self._loader,
            "undefined": jinja2.StrictUndefined,
            "keep_trailing_newline": False,
            "trim_blocks": True,
            "lstrip_blocks": True,
            "auto_reload": True,  # an edited file is picked up on the next render
        }
        # LINE and plain-text mail are not HTML; an email's `html` block is.
        self._text_env = SandboxedEnvironment(autoescape=False, **options)
        self._html_env = SandboxedEnvironment(autoescape=True, **options)
        for env in (self._text_env, self._html_env):
            # Only plain helpers: nothing a template could walk from into Python.
            env.globals = {name: env.globals[name] for name in TEMPLATE_GLOBALS}
        # The templates each name last rendered with: an edit that compiles but
        # fails when rendered (an unknown variable) falls back to them.
        self._rendered_with: dict[str, _Pair] = {}
        self._lock = threading.Lock()

    @property
    def problems(self) -> dict[str, str]:
        """Templates whose current file is broken, with where and why."""
        return dict(self._loader.problems)

    def render(self, name: str, context: Mapping[str, Any]) -> Rendered:
        try:
            return self._render_or_fall_back(name, context)
        except UnicodeDecodeError:
            raise TemplateError(
                f"{self.messages_dir / name}: not UTF-8 text: save it as UTF-8"
            ) from None

    def _render_or_fall_back(self, name: str, context: Mapping[str, Any]) -> Rendered:
        try:
            current = self._templates(name)
            try:
                rendered = self._render(name, current, context)
            except Exception as e:  # whatever a template raises is the template's problem
                with self._lock:
                    previous = self._rendered_with.get(name)
                if previous is None or previous == current:
                    raise
                try:
                    rendered = self._render(name, previous, context)
                except Exception:
                    raise e from None
                self._loader.report(name, _describe(e, self.messages_dir / name))
                return rendered
            with self._lock:
                self._rendered_with[name] = current
            return rendered
        except TemplateError:
            raise
        except jinja2.TemplateNotFound as e:
            raise TemplateError(f"{self.messages_dir / str(e.name)}: template not found") from None
        except Exception as e:
            # The sandbox's SecurityError is a TemplateError too.
            raise TemplateError(_describe(e, self.messages_dir / name)) from None

    def _templates(self, name: str) -> _Pair:
        text = self._text_env.get_template(name)
        html = None
        if name.endswith("/email.j2") and HTML_BLOCK in text.blocks:
            html = self._html_env.get_template(name)
        return text, html

    def _render(self, name: str, templates: _Pair, context: Mapping[str, Any]) -> Rendered:
        path = self.messages_dir / name
        template, html_template = templates
        if not name.endswith("/email.j2"):
            rendered = Rendered(text=template.render(context).strip())
        else:
            missing = [b for b in EMAIL_BLOCKS if b not in template.blocks]
            if missing:
                raise TemplateError(f"{path}: missing block(s): {', '.join(missing)}")
            values = dict(context)
            subject, text = (_block(template, block, values) for block in EMAIL_BLOCKS)
            html = _block(html_template, HTML_BLOCK, values) if html_template else None
            rendered = Rendered(text=text, subject=" ".join(subject.split()), html=html)
        if not rendered.text or rendered.subject == "":
            raise TemplateError(f"{path}: renders an empty message")
        return rendered


_Pair = tuple[jinja2.Template, jinja2.Template | None]


def _load_problem(error: Exception, name: str) -> str:
    if isinstance(error, jinja2.TemplateSyntaxError):
        return f"{error.filename or name}:{error.lineno}: {error.message}"
    if isinstance(error, UnicodeDecodeError):
        return f"{name}: not UTF-8 text: save the file as UTF-8"
    return f"{name}: the file is missing"


def _describe(error: Exception, path: Path) -> str:
    if isinstance(error, TemplateError):
        return str(error)
    if isinstance(error, jinja2.TemplateSyntaxError):
        return f"{error.filename or path}:{error.lineno}: {error.message}"
    return f"{path}:{_template_line(error)}: {error}"


def _block(template: jinja2.Template, block: str, values: dict[str, Any]) -> str:
    return "".join(template.blocks[block](template.new_context(values))).strip()


def _template_line(error: Exception) -> str:
    """The template line of a render-time error, read from Jinja's rewritten traceback."""
    tb = error.__traceback__
    line = "?"
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(".j2"):
            line = str(tb.tb_lineno)
        tb = tb.tb_next
    return line

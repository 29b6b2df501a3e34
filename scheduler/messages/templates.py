"""Rendering the practitioner's message templates (Jinja2, sandboxed, strict).

Every message goes through `Renderer.render`: the worker, the dry run, `tayori
preview` and `tayori lint` all use this one function, so what is checked and
previewed is what is sent.

The practitioner edits these files while the worker runs. An edited file is used
from the next message on; an edit that breaks it leaves the last version that
worked in use (and the problem in the log, `tayori status` and `tayori lint`),
so nobody receives a broken or half-rendered message.

Whatever goes wrong in a template, of whatever kind (an unknown name, a division by
zero, a loop that never ends, a text too long: scheduler/messages/sandbox.py sets
the limits), comes out of `Renderer.render` as one `TemplateError` that names the
template file and line, and describes the problem without quoting the message's
values: the patient's name must not reach the log or the database by way of an
error. A version of a template that went over the time limit is not tried again
until its file changes, so it costs the worker its seconds once, not per message.
"""

from __future__ import annotations

import builtins
import logging
import re
import threading
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from scheduler.messages.sandbox import (
    TIME_LIMIT_SECONDS,
    DeadlinePassed,
    LimitedEnvironment,
    LimitExceeded,
    RenderBudget,
    streamed,
)

log = logging.getLogger(__name__)

# An email template's blocks: the subject and the plain-text body are required; an
# `html` block, rendered with HTML escaping, is optional (else the HTML part is
# made from the text).
EMAIL_BLOCKS = ("subject", "body")
HTML_BLOCK = "html"
# Jinja's own helpers a template may use besides the message's variables.
TEMPLATE_GLOBALS = ("range", "dict", "namespace")


class TemplateError(Exception):
    """A template could not be loaded or rendered; the message names file and line."""


class TemplateLimitError(TemplateError):
    """A template went over a limit of time, size or nesting (rendering it again
    with other values would most likely do the same)."""


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

    `edited` maps template names to a text that stands in for the file's: the
    desk's editor previews and lints the text being edited, before it is saved,
    through this same loader (and so through the same Renderer as the worker).
    """

    def __init__(self, directory: Path, edited: Mapping[str, str] | None = None) -> None:
        super().__init__(directory, encoding="utf-8")
        self.directory = directory
        self.edited = dict(edited or {})
        self.last_good: dict[tuple[int, str], jinja2.Template] = {}
        self.problems: dict[str, str] = {}  # template name -> what is wrong now
        self._lock = threading.Lock()

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        text = self.edited.get(template)
        if text is None:
            return super().get_source(environment, template)
        # Named as the file it stands for, so that problems name that file and line.
        return text, str(self.directory / template), lambda: True

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
    """Renders the templates of `messages_dir`; `edited` (template name -> text) puts
    a text being edited in the place of its file, for a preview or a lint."""

    def __init__(
        self,
        messages_dir: Path,
        *,
        time_limit: float = TIME_LIMIT_SECONDS,
        edited: Mapping[str, str] | None = None,
    ) -> None:
        self.messages_dir = messages_dir
        self.time_limit = time_limit
        self._loader = _LastGoodLoader(messages_dir, edited)
        # An error's line is quoted from the text that was rendered, edited or not.
        self._sources = {str(messages_dir / name): text for name, text in (edited or {}).items()}
        options: dict[str, Any] = {
            "loader": self._loader,
            "undefined": jinja2.StrictUndefined,
            "keep_trailing_newline": False,
            "trim_blocks": True,
            "lstrip_blocks": True,
            "auto_reload": True,  # an edited file is picked up on the next render
        }
        # LINE and plain-text mail are not HTML; an email's `html` block is.
        self._text_env = LimitedEnvironment(autoescape=False, **options)
        self._html_env = LimitedEnvironment(autoescape=True, **options)
        for env in (self._text_env, self._html_env):
            # Only plain helpers: nothing a template could walk from into Python.
            env.globals = {name: env.globals[name] for name in TEMPLATE_GLOBALS}
            # `tojson` for a LINE Flex message: Japanese stays readable in the JSON.
            env.policies["json.dumps_kwargs"] = {"sort_keys": True, "ensure_ascii": False}
        # The templates each name last rendered with: an edit that compiles but
        # fails when rendered (an unknown variable) falls back to them.
        self._rendered_with: dict[str, _Pair] = {}
        # Versions that went over the time limit, with the error: each render would
        # cost the whole limit again, message after message, until the file changes.
        self._too_slow: dict[_Pair, str] = {}
        self._lock = threading.Lock()

    @property
    def problems(self) -> dict[str, str]:
        """Templates whose current file is broken, with where and why."""
        return dict(self._loader.problems)

    def render(self, name: str, context: Mapping[str, Any]) -> Rendered:
        current = self._templates(name)
        try:
            rendered = self._render(name, current, context)
        except TemplateError as e:
            with self._lock:
                previous = self._rendered_with.get(name)
            if previous is None or previous == current:
                raise
            try:
                rendered = self._render(name, previous, context)
            except TemplateError:
                raise e from None
            self._loader.report(name, str(e))
            return rendered
        with self._lock:
            self._rendered_with[name] = current
        return rendered

    def _templates(self, name: str) -> _Pair:
        try:
            text = self._text_env.get_template(name)
            html = None
            if name.endswith("/email.j2") and HTML_BLOCK in text.blocks:
                html = self._html_env.get_template(name)
        except jinja2.TemplateNotFound:
            raise TemplateError(f"{self.messages_dir / name}: template not found") from None
        except jinja2.TemplateSyntaxError as e:
            where = e.filename or self.messages_dir / name
            raise TemplateError(f"{where}:{e.lineno}: {e.message}") from None
        except UnicodeDecodeError:
            raise TemplateError(
                f"{self.messages_dir / name}: not UTF-8 text: save it as UTF-8"
            ) from None
        except OSError as e:
            path = self.messages_dir / name
            raise TemplateError(f"{path}: cannot be read: {e.strerror}") from None
        return text, html

    def _render(self, name: str, templates: _Pair, context: Mapping[str, Any]) -> Rendered:
        """Every failure of the template, of any kind, comes out as a TemplateError."""
        with self._lock:
            too_slow = self._too_slow.get(templates)
        if too_slow is not None:
            raise TemplateLimitError(too_slow)
        try:
            with RenderBudget(self.time_limit):
                rendered = _render_parts(name, templates, context)
        except TemplateError:
            raise
        except DeadlinePassed as e:
            problem = _describe(e, self.messages_dir / name, self._sources)
            with self._lock:
                self._too_slow[templates] = problem
            raise TemplateLimitError(problem) from None
        except (LimitExceeded, RecursionError) as e:
            # RecursionError: nesting that Python found before the sandbox did.
            problem = _describe(e, self.messages_dir / name, self._sources)
            raise TemplateLimitError(problem) from None
        except Exception as e:
            raise TemplateError(_describe(e, self.messages_dir / name, self._sources)) from None
        if not rendered.text or rendered.subject == "":
            raise TemplateError(f"{self.messages_dir / name}: renders an empty message")
        return rendered


_Pair = tuple[jinja2.Template, jinja2.Template | None]


def _render_parts(name: str, templates: _Pair, context: Mapping[str, Any]) -> Rendered:
    template, html_template = templates
    if not name.endswith("/email.j2"):
        events = template.root_render_func(template.new_context(dict(context)))
        return Rendered(text=streamed(events, "message").strip())
    missing = [b for b in EMAIL_BLOCKS if b not in template.blocks]
    if missing:
        raise TemplateError(f"{template.filename or name}: missing block(s): {', '.join(missing)}")
    values = dict(context)
    subject, text = (_block(template, block, values) for block in EMAIL_BLOCKS)
    html = _block(html_template, HTML_BLOCK, values) if html_template else None
    return Rendered(text=text, subject=" ".join(subject.split()), html=html)


def _block(template: jinja2.Template, block: str, values: dict[str, Any]) -> str:
    events = template.blocks[block](template.new_context(values))
    return streamed(events, f"{block} block").strip()


def _load_problem(error: Exception, name: str) -> str:
    if isinstance(error, jinja2.TemplateSyntaxError):
        return f"{error.filename or name}:{error.lineno}: {error.message}"
    if isinstance(error, UnicodeDecodeError):
        return f"{name}: not UTF-8 text: save the file as UTF-8"
    return f"{name}: the file is missing"


def _describe(error: Exception, path: Path, sources: Mapping[str, str]) -> str:
    """`file:line: problem`, for a failure while rendering the template at `path`;
    `sources` holds the texts that stand in for files (being edited)."""
    if isinstance(error, jinja2.TemplateSyntaxError):  # an include that does not compile
        return f"{error.filename or path}:{error.lineno}: {error.message}"
    position = _template_position(error)
    if position is None:
        return f"{path}: {_problem(error, '')}"
    file, line = position
    return f"{file}:{line}: {_problem(error, _source_line(file, line, sources))}"


def _template_position(error: BaseException) -> tuple[str, int] | None:
    """The file and line of the innermost template code in the error's traceback
    (an include's, when it failed there). Jinja's compiled code keeps its template
    in its globals, which maps the generated code's lines back to the template's."""
    position = None
    tb = error.__traceback__
    while tb is not None:
        template = tb.tb_frame.f_globals.get("__jinja_template__")
        if isinstance(template, jinja2.Template):
            line = template.get_corresponding_lineno(tb.tb_lineno)
            position = (template.filename or template.name or "?", line)
        tb = tb.tb_next
    return position


def _source_line(file: str, line: int, sources: Mapping[str, str]) -> str:
    try:
        text = sources.get(file)
        if text is None:
            text = Path(file).read_text(encoding="utf-8")
        return text.splitlines()[line - 1]
    except (OSError, UnicodeDecodeError, IndexError):
        return ""


# What went wrong, by the kind of error: the kind and where, never the error's own
# text, which may quote a value (`'山田 花子様' is not in list`).
_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (ZeroDivisionError, "division by zero"),
    (OverflowError, "a number too large to compute"),
    (RecursionError, "nested too deep: a template including or calling itself, lists in lists?"),
    (MemoryError, "needs more memory than a message may use"),
    (KeyError, "no item with that key"),
    (IndexError, "no item at that position: the list or text is shorter"),
    (LookupError, "nothing found by that name"),
    (UnicodeDecodeError, "not UTF-8 text (an included file? save it as UTF-8)"),
    (UnicodeError, "text that cannot be encoded or decoded"),
    (TypeError, "a value of the wrong type here (text where a number is needed, or the reverse)"),
    (ValueError, "a value this operation cannot use"),
    (AttributeError, "no attribute of that name"),
    (OSError, "an included file that cannot be read"),
)
# A quoted value in Jinja's own messages: 'dict object' has no attribute '山田 花子様'
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_OBJECT_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]* object")  # Jinja's 'dict object'
_TYPE_NAMES = frozenset(
    [name for name, value in vars(builtins).items() if isinstance(value, type)] + ["None"]
)
_NO_ELEMENT = re.compile(r"(has no element )(.+)$")
_HIDDEN = "…"


def _problem(error: Exception, source: str) -> str:
    if isinstance(error, LimitExceeded):
        return str(error)
    if isinstance(error, jinja2.TemplateNotFound):
        names = [str(n) for n in error.templates]
        if all(n in source for n in names):
            return f"template not found: {', '.join(names)}"
        return "template not found (its name comes from the message's values; not shown)"
    if isinstance(error, jinja2.TemplateError):
        return _without_values(error.message or type(error).__name__, source)
    for kind, description in _KINDS:
        if isinstance(error, kind):
            return f"{description} ({type(error).__name__})"
    return f"an error in the template ({type(error).__name__})"


def _without_values(message: str, source: str) -> str:
    """Jinja's message, with every quoted part that is neither written in the
    template's line nor a type's name replaced: it came from the message's values."""
    hidden = False

    def shown(quoted: str) -> bool:
        inner = quoted[1:-1]
        if inner in _TYPE_NAMES or _OBJECT_TYPE.fullmatch(inner):
            return True
        return bool(inner) and inner in source

    def keep_or_hide(match: re.Match[str]) -> str:
        nonlocal hidden
        if shown(match.group()):
            return match.group()
        hidden = True
        return f"'{_HIDDEN}'"

    message = _QUOTED.sub(keep_or_hide, message)
    element = _NO_ELEMENT.search(message)
    if element and element.group(2) not in source and element.group(2) != f"'{_HIDDEN}'":
        message = message[: element.start(2)] + f"'{_HIDDEN}'"
        hidden = True
    if hidden:
        message += " (a value from the message: not shown)"
    return message

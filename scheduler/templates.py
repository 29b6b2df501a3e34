"""Rendering the practitioner's message templates (Jinja2, sandboxed, strict).

Every message goes through `Renderer.render`: the worker, the dry run and the
preview all use this one function, so what is previewed is what is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from scheduler.domain import ChannelName, Reason

EMAIL_BLOCKS = ("subject", "body")


def template_name(reason: Reason, channel: ChannelName) -> str:
    return f"{reason.value}/{channel.value}.j2"


class TemplateError(Exception):
    """A template could not be loaded or rendered; the message names file and line."""


@dataclass(frozen=True)
class Rendered:
    text: str
    subject: str | None = None


class Renderer:
    def __init__(self, messages_dir: Path) -> None:
        self.messages_dir = messages_dir
        self._env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader(messages_dir, encoding="utf-8"),
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # LINE and plain-text mail; HTML mail escapes on its own
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=True,  # an edited file is picked up on the next render
        )

    def render(self, name: str, context: Mapping[str, Any]) -> Rendered:
        path = self.messages_dir / name
        try:
            template = self._env.get_template(name)
            if name.endswith("/email.j2"):
                missing = [b for b in EMAIL_BLOCKS if b not in template.blocks]
                if missing:
                    raise TemplateError(f"{path}: missing block(s): {', '.join(missing)}")
                jinja_context = template.new_context(dict(context))
                subject, text = (
                    "".join(template.blocks[block](jinja_context)).strip() for block in EMAIL_BLOCKS
                )
                rendered = Rendered(text=text, subject=" ".join(subject.split()))
            else:
                rendered = Rendered(text=template.render(context).strip())
        except jinja2.TemplateNotFound:
            raise TemplateError(f"{path}: template not found") from None
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(f"{e.filename or path}:{e.lineno}: {e.message}") from None
        except jinja2.TemplateError as e:
            raise TemplateError(f"{path}:{_template_line(e)}: {e}") from None
        if not rendered.text or rendered.subject == "":
            raise TemplateError(f"{path}: renders an empty message")
        return rendered


def _template_line(error: Exception) -> str:
    """The template line of a render-time error, read from Jinja's rewritten traceback."""
    tb = error.__traceback__
    line = "?"
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(".j2"):
            line = str(tb.tb_lineno)
        tb = tb.tb_next
    return line

"""Where a message's template lives in the messages folder: `<folder>/<channel>.j2`.

Apart from the rendering (templates.py), so that what only names templates (the
planner, and the planning processes forked from it) does not import Jinja2, which
makes a new process about 9 MB larger.
"""

from __future__ import annotations

from functools import cache

from scheduler.core.domain import ChannelName, Reason


def template_name(reason: Reason, channel: ChannelName) -> str:
    return template_in(reason.value, channel)


@cache
def template_in(folder: str, channel: ChannelName) -> str:
    """The template of one channel in a folder of messages/ (a reason's, or a
    campaign's). One string for each: a clinic's dry run keeps tens of thousands
    of messages that name a dozen templates."""
    return f"{folder}/{channel.value}.j2"

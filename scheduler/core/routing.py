"""Which channel a message goes through (pure)."""

from __future__ import annotations

from scheduler.core.domain import ChannelName, Contacts

NO_USABLE_CONTACT = "no usable contact: no LINE or email address that can receive messages"


def choose_channel(preferred: ChannelName, contacts: Contacts) -> ChannelName | None:
    """The preferred channel if usable, else the other one, else None (skip)."""
    other = ChannelName.EMAIL if preferred is ChannelName.LINE else ChannelName.LINE
    for channel in (preferred, other):
        if contacts.usable(channel):
            return channel
    return None

"""Which channel a message takes."""

from __future__ import annotations

import pytest

from scheduler.core.domain import ChannelName, Contacts
from scheduler.core.routing import choose_channel

LINE, EMAIL = ChannelName.LINE, ChannelName.EMAIL


@pytest.mark.parametrize(
    ("preferred", "line", "email", "chosen"),
    [
        pytest.param(LINE, True, True, LINE, id="line-preferred-and-usable"),
        pytest.param(EMAIL, True, True, EMAIL, id="email-preferred-and-usable"),
        pytest.param(LINE, False, True, EMAIL, id="line-unusable-falls-back-to-email"),
        pytest.param(EMAIL, True, False, LINE, id="email-unusable-falls-back-to-line"),
        pytest.param(LINE, False, False, None, id="nothing-usable-skips"),
    ],
)
def test_preferred_channel_else_the_other_else_none(
    preferred: ChannelName, line: bool, email: bool, chosen: ChannelName | None
) -> None:
    assert choose_channel(preferred, Contacts(line=line, email=email)) == chosen

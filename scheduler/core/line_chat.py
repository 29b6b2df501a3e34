"""What a LINE user's chat asks of Tayori, and what Tayori answers (pure).

Besides a link code (scheduler/core/link_codes.py), a patient may send 「配信停止」
to stop the seasonal newsletter and 「配信再開」 to have it again: the whole message,
spaces aside, in full-width or half-width characters alike. Anything else gets no
automatic answer: the clinic reads its chat itself.
"""

from __future__ import annotations

import unicodedata
from enum import StrEnum

STOP = "配信停止"
RESUME = "配信再開"


def newsletter_request(text: str) -> bool | None:
    """True for 「配信再開」, False for 「配信停止」, None for any other message."""
    normal = "".join(unicodedata.normalize("NFKC", text).split())
    return {STOP: False, RESUME: True}.get(normal)


class Say(StrEnum):
    """What Tayori answers in the chat (scheduler/messages/replies.py has the words)."""

    GREETING = "greeting"  # a follow: messages/line_follow/line.j2
    LINKED = "linked"
    ALREADY_LINKED = "already linked"
    TAKEN = "linked to another patient"
    WRONG_CODE = "no such code"
    EXPIRED_CODE = "expired code"
    USED_CODE = "used code"
    LOCKED = "locked"
    STOPPED = "newsletter stopped"
    RESUMED = "newsletter resumed"
    NOT_LINKED = "not linked"

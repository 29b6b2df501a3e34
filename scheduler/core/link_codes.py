"""Link codes (pure): the one-time code a patient sends from LINE to link their
LINE to their record at the clinic, and finding one in a message.

A code is 8 characters from an alphabet without look-alikes (no 0/O, 1/I/L), so it
survives being read aloud or typed by hand. The QR code at the desk opens the
clinic's chat with 「連携コード ABCD2345」 typed; a message that holds a valid code,
with or without that prefix, in full-width letters or lower case, links.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from datetime import timedelta
from urllib.parse import quote

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
LENGTH = 8
VALID_FOR = timedelta(days=14)
PREFIX = "連携コード"
# Wrong codes from one LINE user within `LOCK_WINDOW` that lock linking for them.
LOCK_AFTER = 5
LOCK_WINDOW = timedelta(hours=1)

_CODE = re.compile(rf"(?<![0-9A-Z])[{ALPHABET}]{{{LENGTH}}}(?![0-9A-Z])")


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def code_in(text: str) -> str | None:
    """The link code a message holds, if it holds one (and only one)."""
    normal = unicodedata.normalize("NFKC", text).upper()
    found = set(_CODE.findall(normal))
    return found.pop() if len(found) == 1 else None


def message_text(code: str) -> str:
    """What the patient's LINE types for them: the prefix and the code."""
    return f"{PREFIX} {code}"


def chat_url(basic_id: str, code: str) -> str:
    """LINE's "send a message to this account" URL, the code typed in the chat."""
    return f"https://line.me/R/oaMessage/{quote(basic_id)}/?{quote(message_text(code))}"

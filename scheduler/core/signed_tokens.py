"""The shape both kinds of signed token share (unsubscribe links, booking links):
`<payload>.<signature>`, each URL-safe base64 without padding. What a payload holds,
and how it is signed, is each kind's own (scheduler/core/unsubscribe.py,
scheduler/core/booking_links.py). Pure."""

from __future__ import annotations

import base64
import binascii
import re

_TOKEN = re.compile(r"^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$")
# A real token is about 100 characters; anything far longer is not worth decoding.
_MAX_TOKEN_LENGTH = 256
SLUG = re.compile(r"^[a-z0-9-]{1,40}$")  # a clinic's, as `tayori clinic add` takes it


class InvalidToken(ValueError):
    """The token was not made with this key: tampered with, truncated or made up."""


def join(payload: bytes, signature: bytes) -> str:
    return f"{encode(payload)}.{encode(signature)}"


def split(token: str, kind: str) -> tuple[bytes, bytes]:
    """The payload and signature of a token of `kind` (named in the error);
    InvalidToken if it is not shaped as one."""
    match = _TOKEN.match(token) if len(token) <= _MAX_TOKEN_LENGTH else None
    if match is None:
        raise InvalidToken(f"not {kind}")
    return _decode(match.group(1), kind), _decode(match.group(2), kind)


def encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str, kind: str) -> bytes:
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise InvalidToken(f"{kind} is not base64") from e
    # One spelling per token: refuse the variants base64 would quietly accept.
    if encode(data) != text:
        raise InvalidToken(f"{kind} is not base64")
    return data

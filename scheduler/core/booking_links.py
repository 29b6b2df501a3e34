"""Booking-link tokens: the booking link in a sent message goes through
`/r/<token>`, which counts the press for that message and redirects to the clinic's
booking page.

A token is `<payload>.<signature>`, both URL-safe base64 without padding: the payload
is `<clinic>:<delivery id>:<target>` (`line` or `web`: which of the clinic's booking
URLs), the signature an HMAC-SHA256 of it under a key derived from the
installation's secret key (TAYORI_SECRET_KEY), so a booking token can never pass for
an unsubscribe token or a desk session, nor the reverse. The token names no URL: the
redirect goes only to the booking URL the clinic's settings hold, never anywhere a
token says (no open redirect). Pure: no database, no clock.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from enum import StrEnum

from scheduler.core.signed_tokens import SLUG, InvalidToken, join, split

_PURPOSE = b"tayori booking links v1"
# As `scheduler.store.models.new_delivery_id` makes them (a UUID), or any id of the
# outbox's 36 characters.
_DELIVERY_ID = re.compile(r"^[0-9A-Za-z-]{1,36}$")


class BookingTarget(StrEnum):
    """Which of the clinic's booking URLs a link stands for."""

    LINE = "line"  # [clinic] booking_url_line
    WEB = "web"  # [clinic] booking_url_web


def is_delivery_id(text: str) -> bool:
    return bool(_DELIVERY_ID.match(text))


def booking_token(secret_key: str, clinic: str, delivery_id: str, target: BookingTarget) -> str:
    if not SLUG.match(clinic):
        raise ValueError(f"clinic must be a clinic's slug, got {clinic!r}")
    if not is_delivery_id(delivery_id):
        raise ValueError(f"not a delivery id: {delivery_id!r}")
    payload = f"{clinic}:{delivery_id}:{BookingTarget(target).value}".encode("ascii")
    return join(payload, _signature(secret_key, payload))


def read_booking_token(secret_key: str, token: str) -> tuple[str, str, BookingTarget]:
    """The (clinic, delivery id, target) a token was made for; InvalidToken if it
    was not made with `secret_key` or is malformed."""
    payload, signature = split(token, "a booking-link token")
    # Compare before looking inside: an unsigned payload is never parsed.
    if not hmac.compare_digest(signature, _signature(secret_key, payload)):
        raise InvalidToken("booking-link token does not match its signature")
    clinic, _, rest = payload.decode("ascii", "replace").partition(":")
    delivery_id, _, target = rest.partition(":")
    if (
        not SLUG.match(clinic)
        or not _DELIVERY_ID.match(delivery_id)
        or target not in {t.value for t in BookingTarget}
    ):
        raise InvalidToken("booking-link token holds no clinic, delivery and target")
    return clinic, delivery_id, BookingTarget(target)


def booking_link(
    public_url: str, secret_key: str, clinic: str, delivery_id: str, target: BookingTarget
) -> str:
    token = booking_token(secret_key, clinic, delivery_id, target)
    return f"{public_url.rstrip('/')}/r/{token}"


def _signature(secret_key: str, payload: bytes) -> bytes:
    if not secret_key:
        raise ValueError("booking-link tokens need TAYORI_SECRET_KEY")
    key = hmac.new(secret_key.encode("utf-8"), _PURPOSE, hashlib.sha256).digest()
    return hmac.new(key, payload, hashlib.sha256).digest()

"""One-click unsubscribe tokens: which patient stops receiving which kind of message.

A token is `<payload>.<signature>`, both URL-safe base64 without padding: the payload
is `<patient id>:<kind>`, the signature an HMAC-SHA256 of it under the installation's
secret key (TAYORI_SECRET_KEY). Without the key nobody can make a token for another
patient or another kind, and any change to a token makes it invalid. Pure: no
database, no clock; the HTTP endpoint that acts on a token lives elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

# Keeps tokens made for unsubscribing from matching any other signature made with
# the same key; a new token format gets a new label.
_PURPOSE = b"tayori unsubscribe v1\n"
_KIND = re.compile(r"^[a-z][a-z0-9_]*$")
_TOKEN = re.compile(r"^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$")


class InvalidToken(ValueError):
    """The token was not made with this key: tampered with, truncated or made up."""


def unsubscribe_token(secret_key: str, patient_id: int, kind: str) -> str:
    if isinstance(patient_id, bool) or not isinstance(patient_id, int) or patient_id < 1:
        raise ValueError(f"patient id must be a positive integer, got {patient_id!r}")
    if not _KIND.match(kind):
        raise ValueError(f"kind must be lower-case letters, digits and _, got {kind!r}")
    payload = f"{patient_id}:{kind}".encode("ascii")
    return f"{_encode(payload)}.{_encode(_signature(secret_key, payload))}"


def read_unsubscribe_token(secret_key: str, token: str) -> tuple[int, str]:
    """The (patient id, kind) a token was made for; InvalidToken if it was not made
    with `secret_key` or is malformed."""
    match = _TOKEN.match(token)
    if match is None:
        raise InvalidToken("not an unsubscribe token")
    payload = _decode(match.group(1))
    signature = _decode(match.group(2))
    # Compare before looking inside: an unsigned payload is never parsed.
    if not hmac.compare_digest(signature, _signature(secret_key, payload)):
        raise InvalidToken("unsubscribe token does not match its signature")
    patient, _, kind = payload.decode("ascii", "replace").partition(":")
    if not patient.isdecimal() or not _KIND.match(kind):
        raise InvalidToken("unsubscribe token holds no patient and kind")
    return int(patient), kind


def unsubscribe_url(public_url: str, secret_key: str, patient_id: int, kind: str) -> str:
    if not public_url:
        raise ValueError("an unsubscribe link needs TAYORI_PUBLIC_URL")
    token = unsubscribe_token(secret_key, patient_id, kind)
    return f"{public_url.rstrip('/')}/unsubscribe/{token}"


def _signature(secret_key: str, payload: bytes) -> bytes:
    if not secret_key:
        # Without a key anyone could sign: refuse rather than make forgeable links.
        raise ValueError("unsubscribe tokens need TAYORI_SECRET_KEY")
    return hmac.new(secret_key.encode("utf-8"), _PURPOSE + payload, hashlib.sha256).digest()


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise InvalidToken("unsubscribe token is not base64") from e
    # One spelling per token: refuse the variants base64 would quietly accept.
    if _encode(data) != text:
        raise InvalidToken("unsubscribe token is not base64")
    return data

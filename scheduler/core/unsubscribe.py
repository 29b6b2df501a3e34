"""One-click unsubscribe tokens: which patient stops receiving which kind of message.

A token is `<payload>.<signature>`, both URL-safe base64 without padding: the payload
is `<clinic>:<public id>:<kind>`, the signature an HMAC-SHA256 of it under the
installation's secret key (TAYORI_SECRET_KEY). The clinic (its slug) is inside the
signature: a token made for one clinic's patient acts in that clinic only. Tokens
from before an installation served several clinics (v2, without one) stand for the
installation's own clinic, the only one there was. The public id is the patient's random one
(`Patient.public_id`), never the internal id: a token tells whoever holds it nothing
about the clinic's records (not an id, not how many patients there are), only the kind
of message its mail already showed. Without the key nobody can make a token for another
patient or another kind, and any change to a token makes it invalid. Pure: no
database, no clock; the web page that acts on a token is `scheduler.web.unsubscribe`.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from scheduler.core.domain import ConsentKind
from scheduler.core.signed_tokens import SLUG, InvalidToken, join, split

__all__ = ["InvalidToken", "read_unsubscribe_token", "unsubscribe_token", "unsubscribe_url"]

# Keeps tokens made for unsubscribing from matching any other signature made with
# the same key; a new token format gets a new label (v1 carried the internal id, v2
# no clinic).
_PURPOSE = b"tayori unsubscribe v3\n"
_PURPOSE_V2 = b"tayori unsubscribe v2\n"
# As `scheduler.store.models.new_public_id` makes them: 16 random bytes in hex.
_PUBLIC_ID = re.compile(r"^[0-9a-f]{32}$")


def unsubscribe_token(secret_key: str, clinic: str, public_id: str, kind: ConsentKind) -> str:
    if not isinstance(clinic, str) or not SLUG.match(clinic):
        raise ValueError(f"clinic must be a clinic's slug, got {clinic!r}")
    if not isinstance(public_id, str) or not _PUBLIC_ID.match(public_id):
        raise ValueError(f"public id must be 32 lower-case hex digits, got {public_id!r}")
    kind = ConsentKind(kind)  # a bare string of a kind is accepted; anything else refused
    payload = f"{clinic}:{public_id}:{kind.value}".encode("ascii")
    return join(payload, _signature(secret_key, payload))


def read_unsubscribe_token(
    secret_key: str, token: str, first_clinic: str
) -> tuple[str, str, ConsentKind]:
    """The (clinic, public id, kind) a token was made for, `first_clinic` for a token
    made before there were clinics; InvalidToken if it was not made with
    `secret_key` or is malformed."""
    payload, signature = split(token, "an unsubscribe token")
    # Compare before looking inside: an unsigned payload is never parsed.
    if hmac.compare_digest(signature, _signature(secret_key, payload)):
        clinic, _, rest = payload.decode("ascii", "replace").partition(":")
    elif hmac.compare_digest(signature, _signature(secret_key, payload, _PURPOSE_V2)):
        clinic, rest = first_clinic, payload.decode("ascii", "replace")
    else:
        raise InvalidToken("unsubscribe token does not match its signature")
    public_id, _, kind = rest.partition(":")
    if (
        not SLUG.match(clinic)
        or not _PUBLIC_ID.match(public_id)
        or kind not in {k.value for k in ConsentKind}
    ):
        raise InvalidToken("unsubscribe token holds no clinic, patient and kind")
    return clinic, public_id, ConsentKind(kind)


def unsubscribe_url(
    public_url: str, secret_key: str, clinic: str, public_id: str, kind: ConsentKind
) -> str:
    if not public_url:
        raise ValueError("an unsubscribe link needs TAYORI_PUBLIC_URL")
    token = unsubscribe_token(secret_key, clinic, public_id, kind)
    return f"{public_url.rstrip('/')}/unsubscribe/{token}"


def _signature(secret_key: str, payload: bytes, purpose: bytes = _PURPOSE) -> bytes:
    if not secret_key:
        # Without a key anyone could sign: refuse rather than make forgeable links.
        raise ValueError("unsubscribe tokens need TAYORI_SECRET_KEY")
    return hmac.new(secret_key.encode("utf-8"), purpose + payload, hashlib.sha256).digest()

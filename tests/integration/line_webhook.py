"""LINE's webhook requests, built the way LINE builds them: events shaped by LINE's
description of webhook bodies (tests/contracts/line-webhook.yml), each body checked
against it before it is sent, and signed with the channel secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

from tests.servers.line_api import WEBHOOK_CONTRACT, request_validator

CHANNEL_SECRET = "test-channel-secret"
BOT_USER_ID = "U" + "b0" * 16  # `destination`: the official account's own user id
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # ULID's alphabet


def new_user_id() -> str:
    return "U" + uuid.uuid4().hex


def new_event_id() -> str:
    """A webhookEventId: a ULID (48 bits of milliseconds, 80 random)."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    return "".join(CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def _event(kind: str, user: str, redelivery: bool, event_id: str | None) -> dict[str, Any]:
    return {
        "type": kind,
        "mode": "active",
        "timestamp": int(time.time() * 1000),
        "source": {"type": "user", "userId": user},
        "webhookEventId": event_id or new_event_id(),
        "deliveryContext": {"isRedelivery": redelivery},
    }


def follow(
    user: str,
    reply_token: str,
    *,
    unblocked: bool = False,
    redelivery: bool = False,
    event_id: str | None = None,
) -> dict[str, Any]:
    return {
        **_event("follow", user, redelivery, event_id),
        "replyToken": reply_token,
        "follow": {"isUnblocked": unblocked},
    }


def unfollow(user: str, *, redelivery: bool = False, event_id: str | None = None) -> dict[str, Any]:
    return _event("unfollow", user, redelivery, event_id)


def text_message(
    user: str,
    text: str,
    reply_token: str,
    *,
    redelivery: bool = False,
    event_id: str | None = None,
) -> dict[str, Any]:
    return {
        **_event("message", user, redelivery, event_id),
        "replyToken": reply_token,
        "message": {
            "type": "text",
            "id": str(secrets.randbelow(10**18)),
            "quoteToken": secrets.token_urlsafe(24),
            "text": text,
        },
    }


def sticker_message(user: str, reply_token: str) -> dict[str, Any]:
    return {
        **_event("message", user, False, None),
        "replyToken": reply_token,
        "message": {
            "type": "sticker",
            "id": str(secrets.randbelow(10**18)),
            "quoteToken": secrets.token_urlsafe(24),
            "packageId": "446",
            "stickerId": "1988",
            "stickerResourceType": "STATIC",
        },
    }


def webhook_body(*events: dict[str, Any]) -> bytes:
    """The request body LINE sends for these events, checked against LINE's
    description of it first (a test must not pass on a body LINE would never send)."""
    body = {"destination": BOT_USER_ID, "events": list(events)}
    problems = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in request_validator("CallbackRequest", WEBHOOK_CONTRACT).iter_errors(body)
    ]
    assert not problems, f"not a body LINE would send: {problems}"
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def signature(body: bytes, secret: str = CHANNEL_SECRET) -> str:
    """`X-Line-Signature`: base64 of the body's HMAC-SHA256 with the channel secret."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


@dataclass(frozen=True)
class Answer:
    status: int
    text: str


def post(base_url: str, body: bytes, signature: str | None, *, chunked: bool = False) -> Answer:
    """POST a body to the webhook as LINE does (or `chunked`, without a length)."""
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "LineBotWebhook/2.0",
    }
    if signature is not None:
        headers["X-Line-Signature"] = signature
    host, port = urllib.parse.urlsplit(base_url).netloc.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        try:
            if chunked:
                pieces = (body[i : i + 65536] for i in range(0, len(body), 65536))
                connection.request("POST", "/line/webhook", pieces, headers, encode_chunked=True)
            else:
                connection.request("POST", "/line/webhook", body, headers)
        except (BrokenPipeError, ConnectionResetError):
            # The server refuses a body too large as soon as it knows its size and
            # closes while the rest is still on its way: its answer is there to read.
            pass
        response = connection.getresponse()
        return Answer(response.status, response.read().decode(errors="replace"))
    finally:
        connection.close()


def send(base_url: str, *events: dict[str, Any]) -> Answer:
    """Events in one signed body, as LINE delivers them."""
    body = webhook_body(*events)
    return post(base_url, body, signature(body))

"""The preview channel: every message becomes a file under `var/outbox/`, named after
its delivery id, shaped like what the real channel would send. Used when no LINE or
SMTP credentials are configured, so a newcomer can see what Tayori would do.

A reply to a LINE webhook event becomes `reply-<hash of its token>.json`: the body
the LINE channel would post to the reply endpoint."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from scheduler.channels import OutgoingMessage, Receipt
from scheduler.channels.email import build_email
from scheduler.channels.line import push_request, reply_request
from scheduler.core.domain import ChannelName


class PreviewTransport:
    def __init__(self, outbox_dir: Path, sender: str) -> None:
        self.outbox_dir = outbox_dir
        self.sender = sender

    def send(self, message: OutgoingMessage) -> Receipt:
        self.outbox_dir.mkdir(parents=True, exist_ok=True)
        if message.channel is ChannelName.LINE:
            path = self.outbox_dir / f"{message.delivery_id}.json"
            content = json.dumps(_line_push(message), ensure_ascii=False, indent=2) + "\n"
            data = content.encode("utf-8")
        else:
            path = self.outbox_dir / f"{message.delivery_id}.eml"
            # The mail SMTP would send, in 8bit rather than base64 so that it reads
            # as text in an editor.
            data = build_email(message, self.sender, transfer_encoding="8bit", linesep="\n")
        _write(path, data)
        return Receipt(provider_message_id=f"preview:{path.name}")

    def reply(self, reply_token: str, text: str) -> None:
        """The reply LINE would receive, as a file (named after its token's hash: a
        token answers once, so a repeat replaces the file)."""
        self.outbox_dir.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(reply_token.encode()).hexdigest()[:16]
        body = {"body": reply_request(reply_token, text).to_dict()}
        content = json.dumps(body, ensure_ascii=False, indent=2) + "\n"
        _write(self.outbox_dir / f"reply-{name}.json", content.encode("utf-8"))

    def close(self) -> None:
        pass


def _line_push(message: OutgoingMessage) -> dict[str, object]:
    """LINE's push request, with the header that makes retries safe: the body the
    LINE channel would send, checked the same way (length, Flex)."""
    body: dict[str, object] = push_request(message).to_dict()
    return {"headers": {"X-Line-Retry-Key": message.delivery_id}, "body": body}


def _write(path: Path, data: bytes) -> None:
    # Write then rename, so a crash never leaves half a message behind and a resend
    # of the same delivery replaces the file instead of adding one.
    partial = path.with_suffix(path.suffix + ".part")
    partial.write_bytes(data)
    os.replace(partial, path)

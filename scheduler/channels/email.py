"""The email channel: SMTP with the standard library.

`build_email` turns an outgoing message into the mail itself (plain text and the
same text as HTML, UTF-8, a Message-ID from the delivery id, one-click unsubscribe
headers); the preview channel writes the same mail to disk. `SmtpTransport` sends it,
keeping one connection per dispatching thread for the length of a dispatch cycle,
and reads every SMTP answer in one place (`_failure`) to say what the dispatcher
should do next.

Neither the recipient's address nor the SMTP password ever goes into a log line or
an error: servers echo addresses in their replies, so those are masked too.
"""

from __future__ import annotations

import html
import logging
import re
import smtplib
import socket
import ssl
import threading
from dataclasses import dataclass
from datetime import UTC
from email.charset import Charset
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, formataddr, parseaddr
from enum import Enum
from typing import Literal

from scheduler.channels import DeliveryError, Failure, OutgoingMessage, Receipt
from scheduler.settings import Smtp

log = logging.getLogger(__name__)

# What a reason quotes of a server's reply: enough to recognise it, never a whole essay.
REPLY_QUOTE_MAX = 200


class _Verbatim:
    """A header value the generator writes out as it is, folded (or not) by us."""

    def __init__(self, value: str) -> None:
        self.value = value

    def encode(self, linesep: str = "\n", maxlinelen: int | None = None) -> str:
        return self.value  # how compat32 asks a header object for its text

    def __str__(self) -> str:
        return self.value


def build_email(
    message: OutgoingMessage,
    sender: str,
    *,
    transfer_encoding: Literal["base64", "8bit"] = "base64",
    linesep: str = "\r\n",
) -> bytes:
    """The mail for `message` from `sender` (an address, optionally with a display
    name), as it goes on the wire: multipart/alternative, text and HTML, UTF-8.

    base64 passes every SMTP server unchanged; the preview asks for 8bit and "\n"
    so that the file on disk reads as text."""
    # The email package's compat32 API: several times cheaper per mail than the
    # EmailMessage API, which parses every header it is given again.
    # A boundary of our own, unique to the delivery: the generator would otherwise
    # draw one and compile a pattern to check the body against it, for every mail.
    mail = MIMEMultipart("alternative", boundary=f"=_tayori_{message.delivery_id}")
    name, address = parseaddr(sender)
    mail["From"] = _verbatim(
        formataddr((name, address))
        if name.isascii()
        else f"{_encoded_words(name, 'From', linesep)} <{address}>"
    )
    mail["To"] = message.to
    subject = message.subject or ""
    mail["Subject"] = _verbatim(
        subject if subject.isascii() else _encoded_words(subject, "Subject", linesep)
    )
    mail["Date"] = format_datetime(message.date.astimezone(UTC))
    # Derived from the delivery id alone, so every retry carries the same Message-ID
    # and a resend after a crash is recognisable as the same mail.
    mail["Message-ID"] = message_id(message.delivery_id, sender)
    url = message.unsubscribe_url
    if url:
        # Never folded: a URL split over two lines may not work in every mail
        # client. A line may have 998 characters (RFC 5322 2.1.1).
        mail["List-Unsubscribe"] = _verbatim(f"<{url}>")
        if url.startswith("https://"):
            # RFC 8058: the mail client may POST to the https URL to unsubscribe in
            # one click; a mailto: link gets no such promise.
            mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    mail.attach(_text_part(message.text, "plain", transfer_encoding))
    mail.attach(_text_part(email_html(message), "html", transfer_encoding))
    return mail.as_bytes(policy=compat32.clone(linesep=linesep))


def _encoded_words(text: str, name: str, linesep: str) -> str:
    """`text` for header `name` in RFC 2047 encoded words of at most 75 characters,
    folded between them."""
    return Header(text, "utf-8", header_name=name).encode(linesep=linesep, maxlinelen=76)


def _verbatim(value: str) -> str:
    # compat32 takes any object with encode() as a header (typeshed says str).
    return _Verbatim(value)  # type: ignore[return-value]


def _text_part(text: str, subtype: str, transfer_encoding: str) -> MIMEText:
    charset = Charset("utf-8")
    if transfer_encoding == "8bit":
        charset.body_encoding = None  # type: ignore[assignment]  # as it is (typeshed: int)
    part = MIMEText(text, subtype, charset)  # type: ignore[arg-type]  # a Charset is fine
    del part["MIME-Version"]  # it belongs on the whole mail only
    return part


def email_html(message: OutgoingMessage) -> str:
    """The HTML part: the template's `html` block, or the text made into HTML."""
    return message.html or text_to_html(message.text)


def message_id(delivery_id: str, sender: str) -> str:
    domain = parseaddr(sender)[1].rpartition("@")[2] or "tayori.invalid"
    return f"<{delivery_id}@{domain}>"


# Only the characters a URL may hold, so a link stops where Japanese text resumes.
_URL = re.compile(r"https?://[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
# One or more blank lines end a paragraph; a full-width space opening the next one
# (字下げ) stays.
_BLANK_LINES = re.compile(r"\n(?:[ \t\u3000]*\n)+")


def text_to_html(text: str) -> str:
    """The same text as a small HTML document: escaped, paragraphs and line breaks
    kept, http(s) URLs as links."""
    paragraphs = _BLANK_LINES.split(text.replace("\r\n", "\n").strip("\n"))
    body = "\n".join(
        "<p>" + "<br>\n".join(_linkify(line) for line in paragraph.split("\n")) + "</p>"
        for paragraph in paragraphs
        if paragraph.strip()
    )
    return (
        '<!DOCTYPE html>\n<html lang="ja">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width">\n</head>\n'
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def _linkify(line: str) -> str:
    parts: list[str] = []
    position = 0
    for match in _URL.finditer(line):
        url = _without_trailing_punctuation(match.group())
        end = match.start() + len(url)
        parts.append(html.escape(line[position : match.start()], quote=False))
        parts.append(f'<a href="{html.escape(url)}">{html.escape(url, quote=False)}</a>')
        position = end
    parts.append(html.escape(line[position:], quote=False))
    return "".join(parts)


def _without_trailing_punctuation(url: str) -> str:
    """A sentence's full stop or closing bracket after a URL is not part of it."""
    while url[-1] in ".,;:!?'\")]":
        closing = url[-1]
        opening = {")": "(", "]": "["}.get(closing)
        if opening and url.count(opening) >= url.count(closing):
            break
        url = url[:-1]
    return url


class _Stage(Enum):
    """How far one mail got; what a failure means depends on it."""

    CONNECT = "connecting"
    TLS = "STARTTLS"
    LOGIN = "login"
    SENDER = "MAIL FROM"
    RECIPIENT = "RCPT TO"
    DATA = "DATA"
    # The whole message and its final dot are out: only the server's answer is
    # missing, so it may have been accepted.
    ANSWER = "the answer to the message"


# What a deferral at each stage was about.
_SUBJECT = {
    _Stage.CONNECT: "connection",
    _Stage.TLS: "STARTTLS",
    _Stage.LOGIN: "login",
    _Stage.SENDER: "sender",
    _Stage.RECIPIENT: "address",
    _Stage.DATA: "message",
    _Stage.ANSWER: "message",
}


@dataclass
class _Progress:
    stage: _Stage = _Stage.CONNECT


class _Refused(Exception):
    """The server answered a step with something other than success."""

    def __init__(self, code: int, text: bytes | str) -> None:
        super().__init__(code, text)
        self.code = code
        self.text = text


class SmtpTransport:
    """Sends each message as one SMTP transaction.

    The dispatcher calls `send` from several threads at once: each thread keeps its
    own connection (opened on its first message, reused for the next ones) until
    `close`, which ends every connection with QUIT at the end of a dispatch cycle.
    The transport stays usable after `close`; the next message connects again."""

    def __init__(
        self,
        smtp: Smtp,
        *,
        timeout_seconds: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.smtp = smtp
        self.timeout_seconds = timeout_seconds
        # smtplib's own default context checks no certificate: always pass one that
        # does (the system's trust store unless a test brings its own).
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._envelope_from = parseaddr(smtp.mail_from)[1]
        self._local_hostname: str | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[smtplib.SMTP] = set()

    def __repr__(self) -> str:
        return f"SmtpTransport({self.smtp!r})"  # Smtp's repr leaves out the password

    def send(self, message: OutgoingMessage) -> Receipt:
        if not message.to.isascii():
            # Would need SMTPUTF8 end to end; the patient's other channel is the way.
            raise DeliveryError(
                "address refused: it has non-ASCII characters, which Tayori cannot send to",
                Failure.CONTACT_UNUSABLE,
            )
        payload = build_email(message, self.smtp.mail_from)
        sent_as = message_id(message.delivery_id, self.smtp.mail_from)
        for attempt in (1, 2):
            progress = _Progress()
            connection: smtplib.SMTP | None = None
            reused = False
            try:
                connection, reused = self._connection(progress)
                self._transact(connection, progress, message.to, payload)
                return Receipt(provider_message_id=sent_as)
            except _Refused as refused:
                if connection is not None:
                    self._reset(connection)
                raise self._failure(refused, progress.stage, message.to) from None
            except (smtplib.SMTPException, OSError) as error:
                if connection is not None:
                    self._discard(connection)
                # A connection kept from an earlier message may have been closed by
                # the server meanwhile: nothing of this mail was accepted, so one
                # fresh connection is worth a try.
                if (
                    attempt == 1
                    and reused
                    and isinstance(error, smtplib.SMTPServerDisconnected)
                    and progress.stage is not _Stage.ANSWER
                ):
                    log.debug("SMTP connection was closed by the server; reconnecting")
                    continue
                raise self._failure(error, progress.stage, message.to) from error
        raise AssertionError("unreachable: the second attempt returns or raises")

    def check(self) -> None:
        """Connect, secure and log in as for a message, then QUIT, sending nothing
        (`tayori doctor`). Raises DeliveryError as `send` does."""
        progress = _Progress()
        try:
            connection = self._connect(progress)
        except (smtplib.SMTPException, OSError) as error:
            raise self._failure(error, progress.stage, to=None) from error
        try:
            connection.quit()
        except (smtplib.SMTPException, OSError):
            connection.close()

    def close(self) -> None:
        with self._lock:
            connections, self._open = self._open, set()
        for connection in connections:
            try:
                connection.quit()
            except (smtplib.SMTPException, OSError):
                connection.close()

    # -- connections -------------------------------------------------------------

    def _connection(self, progress: _Progress) -> tuple[smtplib.SMTP, bool]:
        """This thread's open connection, or a new one; and whether it was reused."""
        connection: smtplib.SMTP | None = getattr(self._local, "connection", None)
        if connection is not None:
            with self._lock:
                if connection in self._open:
                    return connection, True
        connection = self._connect(progress)
        with self._lock:
            self._open.add(connection)
        self._local.connection = connection
        return connection, False

    def _connect(self, progress: _Progress) -> smtplib.SMTP:
        smtp = self.smtp
        if self._local_hostname is None:
            # smtplib would look this up (DNS) for every connection.
            self._local_hostname = socket.getfqdn()
        connection: smtplib.SMTP
        if smtp.security == "ssl":
            connection = smtplib.SMTP_SSL(
                smtp.host,
                smtp.port,
                local_hostname=self._local_hostname,
                timeout=self.timeout_seconds,
                context=self._ssl_context,
            )
        else:
            connection = smtplib.SMTP(
                smtp.host,
                smtp.port,
                local_hostname=self._local_hostname,
                timeout=self.timeout_seconds,
            )
        try:
            connection.ehlo_or_helo_if_needed()
            if smtp.security == "starttls":
                progress.stage = _Stage.TLS
                connection.starttls(context=self._ssl_context)
                connection.ehlo_or_helo_if_needed()  # again, over TLS (RFC 3207)
            if smtp.username:
                progress.stage = _Stage.LOGIN
                connection.login(smtp.username, smtp.password)
        except BaseException:
            connection.close()
            raise
        return connection

    def _transact(
        self, connection: smtplib.SMTP, progress: _Progress, to: str, payload: bytes
    ) -> None:
        progress.stage = _Stage.SENDER
        code, text = connection.mail(self._envelope_from)
        if code != 250:
            raise _Refused(code, text)
        progress.stage = _Stage.RECIPIENT
        code, text = connection.rcpt(to)
        if code not in (250, 251):
            raise _Refused(code, text)
        # smtplib's data() hides whether a lost connection happened before or after
        # the message went out; the two halves here keep that apart.
        progress.stage = _Stage.DATA
        code, text = connection.docmd("DATA")
        if code != 354:
            raise _Refused(code, text)
        # Until this returns, the final dot has not gone out: the server cannot have
        # accepted the message.
        connection.send(_dot_stuffed(payload))
        progress.stage = _Stage.ANSWER
        code, text = connection.getreply()
        if code != 250:
            raise _Refused(code, text)

    def _reset(self, connection: smtplib.SMTP) -> None:
        """After a refusal, RSET so the next message can use the connection."""
        try:
            code, _ = connection.rset()
        except (smtplib.SMTPException, OSError):
            code = -1
        if code != 250:
            self._discard(connection)

    def _discard(self, connection: smtplib.SMTP) -> None:
        with self._lock:
            self._open.discard(connection)
        connection.close()

    # -- what a failure means ----------------------------------------------------

    def _failure(self, error: Exception, stage: _Stage, to: str | None) -> DeliveryError:
        """The one place that reads SMTP failures and decides what happens next."""
        smtp = self.smtp
        server = f"{smtp.host}:{smtp.port}"
        credentials = "check SMTP_USERNAME and SMTP_PASSWORD"
        if isinstance(error, smtplib.SMTPResponseException):  # connect, EHLO, login
            error = _Refused(error.smtp_code, error.smtp_error)
        if isinstance(error, _Refused):
            code = error.code
            said = f"{code} {self._quote(error.text, to)}"
            if 400 <= code < 500:
                return DeliveryError(f"{_SUBJECT[stage]} deferred by the SMTP server: {said}")
            if code == 530:  # "authentication required", at whatever step
                return DeliveryError(
                    f"the SMTP server requires a login: {said} — {credentials}",
                    Failure.CHANNEL_UNAVAILABLE,
                )
            if not 500 <= code < 600:
                failure = Failure.UNCERTAIN if stage is _Stage.ANSWER else Failure.TRANSIENT
                return DeliveryError(f"unexpected answer from the SMTP server: {said}", failure)
            if stage is _Stage.LOGIN:
                return DeliveryError(
                    f"SMTP login refused: {said} — {credentials}", Failure.CHANNEL_UNAVAILABLE
                )
            if stage in (_Stage.CONNECT, _Stage.TLS):
                return DeliveryError(
                    f"the SMTP server {server} refused the connection: {said} — "
                    "check SMTP_HOST, SMTP_PORT and SMTP_SECURITY",
                    Failure.CHANNEL_UNAVAILABLE,
                )
            if stage is _Stage.SENDER:
                return DeliveryError(
                    f"sender refused: {said} — check MAIL_FROM", Failure.CHANNEL_UNAVAILABLE
                )
            if stage is _Stage.RECIPIENT:
                if "relay" in said.lower():
                    # "Relay access denied" is about Tayori, not the address: marking
                    # every patient's address unusable would be wrong.
                    return DeliveryError(
                        f"the SMTP server will not relay for Tayori: {said} — {credentials}",
                        Failure.CHANNEL_UNAVAILABLE,
                    )
                return DeliveryError(f"address refused: {said}", Failure.CONTACT_UNUSABLE)
            return DeliveryError(f"message refused: {said}", Failure.PERMANENT)
        if isinstance(error, smtplib.SMTPNotSupportedError):
            setting = "SMTP_SECURITY" if stage is _Stage.TLS else "SMTP_USERNAME"
            return DeliveryError(
                f"the SMTP server {server} cannot do what the settings ask: {error} — "
                f"check {setting}",
                Failure.CHANNEL_UNAVAILABLE,
            )
        if stage is _Stage.ANSWER:
            return DeliveryError(
                "connection to the SMTP server lost after the message was sent, before "
                f"the server answered: {self._quote(str(error), to)}",
                Failure.UNCERTAIN,
            )
        if isinstance(error, ssl.SSLCertVerificationError):
            return DeliveryError(
                f"the certificate of the SMTP server {server} was not accepted: "
                f"{error.verify_message} — check SMTP_HOST (the name the certificate is for)",
                Failure.UNREACHABLE,
            )
        if isinstance(error, ssl.SSLError):
            return DeliveryError(
                f"TLS with the SMTP server {server} failed: {error} — "
                "check SMTP_SECURITY and SMTP_PORT",
                Failure.UNREACHABLE,
            )
        if (
            stage is _Stage.LOGIN
            and isinstance(error, smtplib.SMTPException)
            and not isinstance(error, smtplib.SMTPServerDisconnected)
        ):
            # "No suitable authentication method found."
            return DeliveryError(
                f"SMTP login failed: {error} — {credentials}", Failure.CHANNEL_UNAVAILABLE
            )
        if stage is _Stage.CONNECT:
            # No connection: nothing can go by email until the server answers again.
            return DeliveryError(
                f"cannot reach the SMTP server {server}: {error} — "
                "check SMTP_HOST and SMTP_PORT, and that the server is running",
                Failure.UNREACHABLE,
            )
        return DeliveryError(
            f"connection to the SMTP server lost at {stage.value}: {self._quote(str(error), to)}"
        )

    def _quote(self, text: bytes | str, to: str | None) -> str:
        """A server's words, fit for a log line: one line, short, and without the
        recipient's address (servers echo it) or the password."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        text = " ".join(text.split())
        text = _ADDRESS.sub("<address>", text)
        if to:
            text = text.replace(to, "<address>")
        if self.smtp.password:
            text = text.replace(self.smtp.password, "***")
        if len(text) > REPLY_QUOTE_MAX:
            text = text[: REPLY_QUOTE_MAX - 1] + "…"
        return text


_ADDRESS = re.compile(r"<?[^\s<>@]+@[^\s<>]+>?")


def _dot_stuffed(payload: bytes) -> bytes:
    """The DATA section as it goes on the wire (RFC 5321 4.5.2): a line that starts
    with a dot gets a second one, and a lone dot ends the message."""
    if not payload.endswith(b"\r\n"):
        payload += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", payload) + b".\r\n"

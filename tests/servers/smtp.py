"""A loopback SMTP server for tests (aiosmtpd): records what it receives, counts
connections, and answers with scripted faults.

Faults, each what a real server does:
- `refuse_recipient(address, 550)` answers every RCPT TO for that address with the
  code (450: try later; 550: no such mailbox). The text echoes the address the way
  Postfix does, so tests can check that it never reaches a log or an error.
- `refuse_sender(553)` answers every MAIL FROM with the code.
- `fail_next(554)` answers the next DATA with the code and keeps nothing.
- `hang_next(seconds)` holds the answer to the next DATA, then accepts it; a client
  with a shorter timeout gives up although the message arrived.
- `drop_next()` keeps the next message, then closes the connection without
  answering: the client cannot know the message arrived.
- `drop_connections()` closes every open connection from the server's side, as an
  idle timeout or a restart does.
- `SmtpServer(login=(user, password))` requires AUTH (PLAIN or LOGIN) before MAIL
  FROM: "530 5.7.0 Authentication required" without it, 535 for a wrong password.
- `SmtpServer(tls="starttls" | "ssl", certificate=make_certificate(tmp_path))` speaks
  TLS; `certificate.client_context()` is a client context that trusts it.

The server runs its own event loop in a daemon thread; everything a test reads or
changes goes through one lock, so it keeps up with a dispatcher's threads (hundreds
of messages a second).

    with SmtpServer() as server:
        transport = SmtpTransport(server.settings())
        ...
        [mail] = server.received
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from scheduler.settings import Smtp

HOST = "127.0.0.1"
SERVER_NAME = "smtp.tayori.test"  # also spares aiosmtpd a DNS lookup per connection

# What the server says, worded like Postfix; "{address}" is the recipient.
DEFAULT_TEXTS = {
    421: "4.4.2 Service shutting down, closing transmission channel",
    450: "4.2.1 <{address}>: Recipient address rejected: Mailbox busy, try again later",
    451: "4.3.0 Error: queue file write error",
    452: "4.3.1 Insufficient system storage",
    550: "5.1.1 <{address}>: Recipient address rejected: User unknown in virtual mailbox table",
    552: "5.3.4 Message size exceeds fixed limit",
    553: "5.7.1 <{address}>: Sender address rejected: not owned by user",
    554: "5.7.1 Message rejected as spam",
}


@dataclass(frozen=True)
class Received:
    """One message as the server took it in."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # as received, dot-unstuffed, CRLF line ends
    connection: int  # which connection carried it: 1 for the first since start()

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass(frozen=True)
class _Script:
    kind: str  # "fail", "hang" or "drop"
    reply: str = ""
    seconds: float = 0.0


def reply(code: int, text: str | None = None, address: str = "") -> str:
    """An SMTP reply line: `code` and `text`, or the usual text for that code."""
    return f"{code} {(text or DEFAULT_TEXTS.get(code, 'Error')).format(address=address)}"


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1, and the contexts that use it."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this certificate (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.cert))


def make_certificate(directory: Path) -> Certificate:
    """A fresh certificate made with the openssl command; skips the test without it."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("TLS tests need the openssl command to make a certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=IP:{HOST}",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return Certificate(cert=cert, key=key)


class SmtpServer:
    """An SMTP server on 127.0.0.1 at a port the OS picks, in a daemon thread."""

    def __init__(
        self,
        *,
        login: tuple[str, str] | None = None,
        tls: Literal["starttls", "ssl"] | None = None,
        certificate: Certificate | None = None,
        latency_seconds: float = 0.0,
    ) -> None:
        self.login = login  # (user, password) that AUTH must present; None: no AUTH
        # "starttls": STARTTLS offered and required before anything else (AUTH only
        # after it); "ssl": TLS from the first byte. Both need `certificate`.
        self.tls = tls
        self.latency_seconds = latency_seconds  # before every answer to DATA
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._received: list[Received] = []
        self._scripts: deque[_Script] = deque()
        self._refused_recipients: dict[str, tuple[int, str | None]] = {}
        self._refused_sender: tuple[int, str | None] | None = None
        self._connections = 0
        self._open: set[_Connection] = set()
        kwargs: dict[str, Any] = {}
        if tls is not None:
            assert certificate is not None, "a TLS server needs a certificate"
            if tls == "starttls":
                kwargs.update(tls_context=certificate.server_context(), require_starttls=True)
            else:
                kwargs.update(ssl_context=certificate.server_context())
        if login is not None:
            # Without TLS, aiosmtpd offers AUTH only when told it may. (Its own
            # auth_required would warn on every connection; handle_MAIL insists on
            # the login instead.)
            kwargs.update(authenticator=self._authenticate, auth_require_tls=tls == "starttls")
        self._controller = _Controller(self, _Handler(self), **kwargs)

    # Lifecycle ---------------------------------------------------------------

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return self._controller.port

    def settings(self, **changes: Any) -> Smtp:
        """Settings that point Tayori at this server, with `changes`."""
        user, password = self.login or ("", "")
        smtp = Smtp(
            host=HOST,
            port=self.port,
            security=self.tls or "none",
            mail_from="たより整体院 <info@clinic.example>",
            username=user,
            password=password,
        )
        return replace(smtp, **changes)

    def start(self) -> SmtpServer:
        self._controller.start()
        with self._lock:
            self._connections = 0  # start() itself connects once to see the server is up
        return self

    def stop(self) -> None:
        """Stop listening (again: a no-op); open connections end with it."""
        if self._controller._thread is not None:
            self._controller.stop()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # What a test sets up -----------------------------------------------------

    def refuse_recipient(self, address: str, code: int = 550, text: str | None = None) -> None:
        """Answer every RCPT TO for `address` with `code` (4xx or 5xx)."""
        with self._lock:
            self._refused_recipients[address.lower()] = (code, text)

    def refuse_sender(self, code: int = 553, text: str | None = None) -> None:
        """Answer every MAIL FROM with `code`."""
        with self._lock:
            self._refused_sender = (code, text)

    def fail_next(self, code: int, text: str | None = None, *, times: int = 1) -> None:
        """Answer the next `times` DATA with `code`; keep nothing."""
        self._script(_Script("fail", reply=reply(code, text)), times)

    def hang_next(self, seconds: float, times: int = 1) -> None:
        """Hold the answer to the next `times` DATA for `seconds`, then accept."""
        self._script(_Script("hang", seconds=seconds), times)

    def drop_next(self, times: int = 1) -> None:
        """Keep the next `times` messages, then close their connection unanswered."""
        self._script(_Script("drop"), times)

    def drop_connections(self) -> None:
        """Close every open connection from the server's side."""

        async def drop() -> None:
            for connection in list(self._open):
                if connection.transport is not None:
                    connection.transport.close()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(drop(), self._controller.loop).result(timeout=5)

    def _script(self, script: _Script, times: int) -> None:
        with self._lock:
            self._scripts.extend([script] * times)

    # What a test reads -------------------------------------------------------

    @property
    def received(self) -> list[Received]:
        """The messages kept so far, in order of arrival (a copy)."""
        with self._lock:
            return list(self._received)

    @property
    def connections(self) -> int:
        """Connections opened since start()."""
        with self._lock:
            return self._connections

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Wait until `count` messages have arrived (for senders in other threads or
        processes); all of them, or AssertionError after `timeout` seconds."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._received) >= count, timeout):
                raise AssertionError(
                    f"expected {count} messages within {timeout}s, got {len(self._received)}"
                )
            return list(self._received)

    # Inside the server's thread ----------------------------------------------

    def _opened(self, connection: _Connection) -> int:
        with self._lock:
            self._connections += 1
            self._open.add(connection)
            return self._connections

    def _closed(self, connection: _Connection) -> None:
        with self._lock:
            self._open.discard(connection)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self.login is not None
        user, password = self.login
        ok = isinstance(data, LoginPassword) and data == LoginPassword(
            user.encode(), password.encode()
        )
        # handled=False: aiosmtpd answers "535 5.7.8 Authentication credentials invalid".
        return AuthResult(success=ok, handled=False)

    def _keep(self, envelope: Envelope, connection: int) -> None:
        content = envelope.original_content or b""
        with self._arrived:
            self._received.append(
                Received(
                    mail_from=envelope.mail_from or "",
                    rcpt_tos=tuple(envelope.rcpt_tos),
                    data=content if isinstance(content, bytes) else content.encode(),
                    connection=connection,
                )
            )
            self._arrived.notify_all()


class _Handler:
    """aiosmtpd's hooks; each answers from the server's scripted state."""

    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_MAIL(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.server.login is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        with self.server._lock:
            refusal = self.server._refused_sender
        if refusal is not None:
            return reply(*refusal, address=address)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        with self.server._lock:
            refusal = self.server._refused_recipients.get(address.lower())
        if refusal is not None:
            return reply(*refusal, address=address)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        server = self.server
        with server._lock:
            script = server._scripts.popleft() if server._scripts else None
        if server.latency_seconds:
            await asyncio.sleep(server.latency_seconds)
        if script is not None and script.kind == "fail":
            return script.reply
        assert isinstance(smtp, _Connection)
        server._keep(envelope, smtp.number)
        if script is not None and script.kind == "hang":
            await asyncio.sleep(script.seconds)
        if script is not None and script.kind == "drop":
            assert smtp.transport is not None
            smtp.transport.abort()
            # Closing the transport cancels this session's task: nothing is answered.
            await asyncio.sleep(3600)
        return "250 2.0.0 Ok: queued"


class _Connection(SMTP):
    """One client connection; numbered so tests can tell connections apart."""

    def __init__(self, server: SmtpServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tayori_server = server
        self.number = server._opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.tayori_server._closed(self)
        super().connection_lost(error)


class _Controller(Controller):
    def __init__(self, server: SmtpServer, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, hostname=HOST, port=0, server_hostname=SERVER_NAME, **kwargs)
        self.tayori_server = server

    def factory(self) -> SMTP:
        return _Connection(self.tayori_server, self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        # Port 0 asks the OS for a free port; learn which before connecting to it.
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def smtp_server_fixture(**options: Any) -> Callable[[], Iterator[SmtpServer]]:
    """A pytest fixture that runs an SmtpServer for one test:
    `smtp_server = smtp_server_fixture(login=("user", "pw"))` in a test module."""

    @pytest.fixture
    def fixture() -> Iterator[SmtpServer]:
        with SmtpServer(**options) as server:
            yield server

    return fixture

"""The email channel against a real SMTP server (aiosmtpd on loopback): what arrives,
how connections are reused, and what each kind of refusal tells the dispatcher."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from scheduler.channels import DeliveryError, Failure, OutgoingMessage
from scheduler.channels.email import SmtpTransport, build_email
from scheduler.channels.preview import PreviewTransport
from scheduler.core.domain import ChannelName, Reason
from tests.servers.smtp import Certificate, SmtpServer, make_certificate, smtp_server_fixture

PATIENT = "hanako.yamada@example.jp"
SUBJECT = "【たより整体院】そろそろメンテナンスの時期です"
TEXT = "山田 花子様\n\n前回のご来院から12日が経ちました。\nご予約はこちら: https://clinic.example/booking?from=mail&id=7\n"
UNSUBSCRIBE = "https://tayori.example.jp/unsubscribe/NDI6cmVtaW5kZXJz.c2lnbmF0dXJl"
LOGIN = ("tayori@clinic.example", "correct-horse-battery")
WRITTEN_AT = datetime(2026, 11, 25, 10, 0, tzinfo=ZoneInfo("Asia/Tokyo"))

smtp_server = smtp_server_fixture()
smtp_server_with_login = smtp_server_fixture(login=LOGIN)


@pytest.fixture
def transport(smtp_server: SmtpServer) -> Iterator[SmtpTransport]:
    opened = SmtpTransport(smtp_server.settings(), timeout_seconds=5)
    yield opened
    opened.close()


def outgoing(
    delivery_id: str = "0190f3a2-7c4e-7d1a-9b1e-3f5c2a8d6e01",
    *,
    to: str = PATIENT,
    text: str = TEXT,
    subject: str | None = SUBJECT,
    unsubscribe_url: str | None = UNSUBSCRIBE,
) -> OutgoingMessage:
    return OutgoingMessage(
        delivery_id=delivery_id,
        channel=ChannelName.EMAIL,
        reason=Reason.CADENCE_NUDGE,
        to=to,
        text=text,
        subject=subject,
        unsubscribe_url=unsubscribe_url,
        date=WRITTEN_AT,
    )


def built(message: OutgoingMessage) -> EmailMessage:
    """The mail build_email makes, read back as a mail client would."""
    mail = message_from_bytes(build_email(message, "info@clinic.example"), policy=policy.default)
    assert isinstance(mail, EmailMessage)
    return mail


def parts(mail: EmailMessage) -> dict[str, str]:
    """The decoded text of each part, by content type."""
    return {
        part.get_content_type(): part.get_content()
        for part in mail.iter_parts()
        if isinstance(part, EmailMessage)
    }


def refused(transport: SmtpTransport, message: OutgoingMessage) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        transport.send(message)
    return caught.value


# What arrives ----------------------------------------------------------------


def test_the_mail_arrives_as_utf8_text_and_html_with_the_japanese_subject(
    smtp_server: SmtpServer, transport: SmtpTransport
) -> None:
    transport.send(outgoing())
    [received] = smtp_server.received
    mail = received.message
    assert received.rcpt_tos == (PATIENT,)
    assert received.mail_from == "info@clinic.example"
    assert received.data.isascii()  # passes any SMTP server, 8BITMIME or not
    assert mail.get_content_type() == "multipart/alternative"
    assert [p.get_content_charset() for p in mail.iter_parts()] == ["utf-8", "utf-8"]
    assert mail["Subject"] == SUBJECT
    assert mail["From"] == "たより整体院 <info@clinic.example>"
    assert mail["To"] == PATIENT
    assert mail["Date"].datetime.tzinfo is not None
    assert parts(mail)["text/plain"] == TEXT
    assert "前回のご来院から12日が経ちました。<br>" in parts(mail)["text/html"]


def test_the_message_id_comes_from_the_delivery_id_and_is_the_same_on_a_resend(
    smtp_server: SmtpServer, transport: SmtpTransport
) -> None:
    first = transport.send(outgoing("0190f3a2-0000-7000-8000-000000000001"))
    again = transport.send(outgoing("0190f3a2-0000-7000-8000-000000000001"))
    ids = [r.message["Message-ID"] for r in smtp_server.received]
    assert ids == ["<0190f3a2-0000-7000-8000-000000000001@clinic.example>"] * 2
    assert first.provider_message_id == again.provider_message_id == ids[0]


def test_an_https_unsubscribe_link_offers_one_click_unsubscribe(
    smtp_server: SmtpServer, transport: SmtpTransport
) -> None:
    transport.send(outgoing(unsubscribe_url=UNSUBSCRIBE))
    mail = smtp_server.received[0].message
    assert mail["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_a_long_unsubscribe_link_arrives_intact(
    smtp_server: SmtpServer, transport: SmtpTransport
) -> None:
    # The email package would fold a long header into encoded words.
    url = "https://tayori.example.jp/unsubscribe/" + "x" * 150
    transport.send(outgoing(unsubscribe_url=url))
    assert smtp_server.received[0].message["List-Unsubscribe"] == f"<{url}>"
    assert f"\r\nList-Unsubscribe: <{url}>\r\n".encode() in smtp_server.received[0].data


def test_a_long_subject_goes_as_encoded_words_no_longer_than_rfc_2047_allows(
    smtp_server: SmtpServer, transport: SmtpTransport
) -> None:
    subject = "【たより整体院】" + "そろそろメンテナンスの時期です。" * 3
    transport.send(outgoing(subject=subject))
    [received] = smtp_server.received
    assert received.message["Subject"] == subject
    words = re.findall(rb"=\?utf-8\?b\?[^?]*\?=", received.data)
    assert len(words) > 1
    assert all(len(word) <= 75 for word in words)


def test_without_an_unsubscribe_link_there_are_no_unsubscribe_headers(
    smtp_server: SmtpServer, transport: SmtpTransport
) -> None:
    transport.send(outgoing(unsubscribe_url=None))
    mail = smtp_server.received[0].message
    assert "List-Unsubscribe" not in mail
    assert "List-Unsubscribe-Post" not in mail


def test_a_mailto_unsubscribe_link_promises_no_one_click_post() -> None:
    mail = built(outgoing(unsubscribe_url="mailto:stop@clinic.example"))
    assert mail["List-Unsubscribe"] == "<mailto:stop@clinic.example>"
    assert "List-Unsubscribe-Post" not in mail


def test_the_html_part_escapes_markup_and_links_urls(
    smtp_server: SmtpServer, transport: SmtpTransport
) -> None:
    text = '<script>alert("x")</script> & more\n詳しくは https://clinic.example/a?b=1&c=2。\n'
    transport.send(outgoing(text=text))
    html = parts(smtp_server.received[0].message)["text/html"]
    assert "<script>" not in html
    assert '&lt;script&gt;alert("x")&lt;/script&gt; &amp; more<br>' in html
    # The link stops at the Japanese full stop.
    assert (
        '詳しくは <a href="https://clinic.example/a?b=1&amp;c=2">'
        "https://clinic.example/a?b=1&amp;c=2</a>。"
    ) in html


def test_the_html_part_keeps_paragraphs_and_line_breaks() -> None:
    text = "山田 花子様\n\n\n\u3000前回から12日です。\nお待ちしています。\n"
    html = parts(built(outgoing(text=text)))["text/html"]
    assert "<p>山田 花子様</p>\n<p>\u3000前回から12日です。<br>\nお待ちしています。</p>" in html


def test_the_preview_file_is_the_mail_smtp_sends(
    smtp_server: SmtpServer, transport: SmtpTransport, tmp_path: Path
) -> None:
    message = outgoing()
    transport.send(message)
    PreviewTransport(tmp_path, smtp_server.settings().mail_from).send(message)
    sent = smtp_server.received[0].message
    preview = message_from_bytes(
        (tmp_path / f"{message.delivery_id}.eml").read_bytes(), policy=policy.default
    )
    assert isinstance(preview, EmailMessage)
    headers = ["From", "To", "Subject", "Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post"]
    assert [preview[h] for h in headers] == [sent[h] for h in headers]
    assert parts(preview) == parts(sent)


# Connections -------------------------------------------------------------------


def test_the_messages_of_one_cycle_share_one_connection_and_after_close_it_reconnects(
    smtp_server: SmtpServer, transport: SmtpTransport
) -> None:
    for n in range(3):
        transport.send(outgoing(f"cycle-one-{n}"))
    assert smtp_server.connections == 1
    transport.close()
    transport.send(outgoing("cycle-two-0"))
    assert smtp_server.connections == 2
    assert [r.connection for r in smtp_server.received] == [1, 1, 1, 2]


def test_a_connection_the_server_closed_meanwhile_is_replaced(
    smtp_server: SmtpServer, transport: SmtpTransport
) -> None:
    transport.send(outgoing("before"))
    smtp_server.drop_connections()  # an idle timeout on the server's side
    transport.send(outgoing("after"))
    assert [r.connection for r in smtp_server.received] == [1, 2]


def test_a_refused_recipient_leaves_the_connection_usable(
    smtp_server: SmtpServer, transport: SmtpTransport
) -> None:
    smtp_server.refuse_recipient("gone@example.jp", 550)
    refused(transport, outgoing("refused", to="gone@example.jp"))
    transport.send(outgoing("next"))
    assert smtp_server.connections == 1
    assert [r.rcpt_tos for r in smtp_server.received] == [(PATIENT,)]


def test_several_threads_send_at_once(smtp_server: SmtpServer, transport: SmtpTransport) -> None:
    threads, each = 8, 5
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def lane(number: int) -> None:
        start.wait()
        try:
            for n in range(each):
                transport.send(outgoing(f"lane-{number}-{n}", to=f"patient{number}@example.jp"))
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    workers = [threading.Thread(target=lane, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    received = smtp_server.received
    assert len({r.message["Message-ID"] for r in received}) == threads * each
    # One connection per thread, each carrying that thread's messages.
    assert smtp_server.connections == threads
    for number in range(threads):
        carried = {r.connection for r in received if r.rcpt_tos == (f"patient{number}@example.jp",)}
        assert len(carried) == 1


# What a failure tells the dispatcher ------------------------------------------


@pytest.mark.parametrize(
    ("fault", "failure", "reason_starts"),
    [
        pytest.param(
            lambda s: s.refuse_recipient(PATIENT, 450),
            Failure.TRANSIENT,
            "address deferred by the SMTP server: 450 4.2.1",
            id="450-on-rcpt-is-transient",
        ),
        pytest.param(
            lambda s: s.refuse_recipient(PATIENT, 550),
            Failure.CONTACT_UNUSABLE,
            "address refused: 550 5.1.1 <address>: Recipient address rejected",
            id="550-on-rcpt-is-an-unusable-contact",
        ),
        pytest.param(
            lambda s: s.refuse_recipient(PATIENT, 554, "5.7.1 <{address}>: Relay access denied"),
            Failure.CHANNEL_UNAVAILABLE,
            "the SMTP server will not relay for Tayori: 554",
            id="relay-denied-is-the-channel-not-the-contact",
        ),
        pytest.param(
            lambda s: s.refuse_sender(553),
            Failure.CHANNEL_UNAVAILABLE,
            "sender refused: 553",
            id="553-on-mail-from-is-the-channel",
        ),
        pytest.param(
            lambda s: s.fail_next(451),
            Failure.TRANSIENT,
            "message deferred by the SMTP server: 451",
            id="451-on-data-is-transient",
        ),
        pytest.param(
            lambda s: s.fail_next(554),
            Failure.PERMANENT,
            "message refused: 554 5.7.1 Message rejected as spam",
            id="554-on-data-is-permanent",
        ),
        pytest.param(
            lambda s: s.drop_next(),
            Failure.UNCERTAIN,
            "connection to the SMTP server lost after the message was sent",
            id="connection-lost-before-the-answer-is-uncertain",
        ),
    ],
)
def test_what_a_refusal_means(
    smtp_server: SmtpServer,
    transport: SmtpTransport,
    fault: Callable[[SmtpServer], None],
    failure: Failure,
    reason_starts: str,
) -> None:
    fault(smtp_server)
    error = refused(transport, outgoing())
    assert (error.failure, error.reason[: len(reason_starts)]) == (failure, reason_starts)
    assert PATIENT not in error.reason


def test_the_reason_for_a_refused_address_names_no_address(
    smtp_server: SmtpServer, transport: SmtpTransport
) -> None:
    smtp_server.refuse_recipient(PATIENT, 550, "5.1.1 {address} ... <{address}> unknown")
    error = refused(transport, outgoing())
    assert error.failure is Failure.CONTACT_UNUSABLE
    assert error.reason == "address refused: 550 5.1.1 <address> ... <address> unknown"


def test_a_refused_sender_says_to_check_mail_from(
    smtp_server: SmtpServer, transport: SmtpTransport
) -> None:
    smtp_server.refuse_sender(553)
    assert "check MAIL_FROM" in refused(transport, outgoing()).reason


def test_no_answer_after_the_message_went_out_is_uncertain(smtp_server: SmtpServer) -> None:
    smtp_server.hang_next(2.0)
    transport = SmtpTransport(smtp_server.settings(), timeout_seconds=0.3)
    error = refused(transport, outgoing())
    transport.close()
    assert error.failure is Failure.UNCERTAIN
    assert len(smtp_server.wait_for(1)) == 1  # it did arrive: a resend carries the same id


def test_a_refused_login_makes_the_channel_unavailable_without_the_password(
    smtp_server_with_login: SmtpServer,
) -> None:
    transport = SmtpTransport(smtp_server_with_login.settings(password="wrong-password-123"))
    error = refused(transport, outgoing())
    assert error.failure is Failure.CHANNEL_UNAVAILABLE
    assert error.reason.startswith("SMTP login refused: 535")
    assert "SMTP_USERNAME and SMTP_PASSWORD" in error.reason
    assert "wrong-password-123" not in error.reason
    assert "wrong-password-123" not in repr(transport)
    assert smtp_server_with_login.received == []


def test_a_server_that_requires_a_login_it_did_not_get_makes_the_channel_unavailable(
    smtp_server_with_login: SmtpServer,
) -> None:
    transport = SmtpTransport(smtp_server_with_login.settings(username="", password=""))
    error = refused(transport, outgoing())
    assert error.failure is Failure.CHANNEL_UNAVAILABLE
    assert "530" in error.reason
    assert "SMTP_USERNAME" in error.reason


def test_with_the_right_login_the_mail_goes(smtp_server_with_login: SmtpServer) -> None:
    transport = SmtpTransport(smtp_server_with_login.settings())
    transport.send(outgoing())
    transport.close()
    assert len(smtp_server_with_login.received) == 1


def test_nothing_listening_makes_the_channel_unreachable(smtp_server: SmtpServer) -> None:
    settings = smtp_server.settings()
    smtp_server.stop()
    error = refused(SmtpTransport(settings, timeout_seconds=2), outgoing())
    assert error.failure is Failure.UNREACHABLE
    assert error.reason.startswith(f"cannot reach the SMTP server 127.0.0.1:{settings.port}")


def test_an_address_with_non_ascii_characters_is_unusable(
    smtp_server: SmtpServer, transport: SmtpTransport
) -> None:
    error = refused(transport, outgoing(to="はなこ@example.jp"))
    assert error.failure is Failure.CONTACT_UNUSABLE
    assert "はなこ" not in error.reason
    assert smtp_server.connections == 0


# TLS -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("tls"))


def test_starttls_comes_before_the_login_and_the_mail(certificate: Certificate) -> None:
    with SmtpServer(tls="starttls", certificate=certificate, login=LOGIN) as server:
        transport = SmtpTransport(server.settings(), ssl_context=certificate.client_context())
        transport.send(outgoing())
        transport.close()
        assert len(server.received) == 1


def test_implicit_tls_sends_the_mail(certificate: Certificate) -> None:
    with SmtpServer(tls="ssl", certificate=certificate, login=LOGIN) as server:
        transport = SmtpTransport(server.settings(), ssl_context=certificate.client_context())
        transport.send(outgoing())
        transport.close()
        assert len(server.received) == 1


def test_a_certificate_that_is_not_trusted_is_refused(certificate: Certificate) -> None:
    with SmtpServer(tls="starttls", certificate=certificate) as server:
        # The system's trust store, as in production: a self-signed certificate fails.
        error = refused(SmtpTransport(server.settings(), timeout_seconds=5), outgoing())
        assert error.reason.startswith("the certificate of the SMTP server")
        assert "self-signed certificate" in error.reason
        assert server.received == []


def test_starttls_asked_of_a_server_without_it_makes_the_channel_unavailable(
    smtp_server: SmtpServer,
) -> None:
    transport = SmtpTransport(smtp_server.settings(security="starttls"), timeout_seconds=5)
    error = refused(transport, outgoing())
    assert error.failure is Failure.CHANNEL_UNAVAILABLE
    assert "check SMTP_SECURITY" in error.reason

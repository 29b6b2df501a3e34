"""The LINE channel against a loopback LINE Messaging API that holds every request to
LINE's OpenAPI description: what arrives, and what each of LINE's answers means for
the delivery."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from scheduler.channels import DeliveryError, Failure, OutgoingMessage, Receipt
from scheduler.channels.line import (
    TEXT_LIMIT,
    LineQuota,
    LineTransport,
    classify,
    network_failure,
    text_units,
)
from scheduler.core.domain import ChannelName, Reason
from scheduler.settings import LineApi
from tests.servers.line_api import LineApiServer

TOKEN = "test-token-that-must-never-be-printed"
WRITTEN_AT = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
PATIENT = "U" + "4" * 32
TIMEOUT = 0.3  # seconds; every wait in these tests is bounded by it

BOOKING_FLEX: dict[str, Any] = {
    "type": "flex",
    "altText": "ご予約はこちらから",
    "contents": {
        "type": "bubble",
        "body": {
            "type": "box",
            "layout": "vertical",
            "contents": [
                {"type": "text", "text": "そろそろお体の調子はいかがですか", "wrap": True}
            ],
        },
        "footer": {
            "type": "box",
            "layout": "vertical",
            "contents": [
                {
                    "type": "button",
                    "style": "primary",
                    "action": {
                        "type": "uri",
                        "label": "予約する",
                        "uri": "https://clinic.example/book",
                    },
                }
            ],
        },
    },
}


HOLOGRAM_BOX = {"type": "box", "layout": "vertical", "contents": [{"type": "hologram"}]}


@pytest.fixture
def line() -> Iterator[LineApiServer]:
    with LineApiServer(access_token=TOKEN) as server:
        yield server
        # Whatever a test did, nothing we sent may break LINE's contract.
        assert server.schema_errors == []


def transport(server: LineApiServer, token: str = TOKEN, **options: Any) -> LineTransport:
    options.setdefault("timeout_seconds", TIMEOUT)
    return LineTransport(LineApi(access_token=token, base_url=server.base_url), **options)


def message(text: str = "次回のご予約はお済みですか?", to: str = PATIENT) -> OutgoingMessage:
    return OutgoingMessage(
        delivery_id=str(uuid.uuid4()),
        channel=ChannelName.LINE,
        reason=Reason.CADENCE_NUDGE,
        to=to,
        text=text,
        date=WRITTEN_AT,
    )


def failure_of(line: LineTransport, outgoing: OutgoingMessage) -> DeliveryError:
    with pytest.raises(DeliveryError) as raised:
        line.send(outgoing)
    return raised.value


# What arrives ------------------------------------------------------------------


def test_a_text_push_arrives_with_the_delivery_id_as_retry_key(line: LineApiServer) -> None:
    outgoing = message("こんにちは 🌸")

    receipt = transport(line).send(outgoing)

    assert line.accepted == {
        outgoing.delivery_id: {
            "to": PATIENT,
            "messages": [{"type": "text", "text": "こんにちは 🌸"}],
            "notificationDisabled": False,
        }
    }
    assert receipt.provider_message_id  # LINE's x-line-request-id


def test_a_flex_message_with_a_booking_button_is_sent_as_flex(line: LineApiServer) -> None:
    outgoing = message(json.dumps(BOOKING_FLEX, ensure_ascii=False, indent=2))

    transport(line).send(outgoing)

    assert line.accepted[outgoing.delivery_id]["messages"] == [BOOKING_FLEX]


def test_json_that_is_not_a_flex_message_is_sent_as_text(line: LineApiServer) -> None:
    outgoing = message('{"note": "not a message object"}')

    transport(line).send(outgoing)

    assert line.accepted[outgoing.delivery_id]["messages"][0]["type"] == "text"


@pytest.mark.parametrize(
    ("flex", "problem"),
    [
        ({**BOOKING_FLEX, "altText": ""}, "'altText' is missing or empty"),
        ({"type": "flex", "contents": BOOKING_FLEX["contents"]}, "'altText'"),
        ({**BOOKING_FLEX, "contents": {"type": "poster"}}, "bubble or a carousel"),
        ({"type": "flex", "altText": "x"}, "'contents'"),
        (
            {**BOOKING_FLEX, "contents": {"type": "bubble", "body": HOLOGRAM_BOX}},
            "'type'",
        ),
    ],
    ids=["empty alt text", "no alt text", "unknown container", "no contents", "unknown component"],
)
def test_an_invalid_flex_message_is_refused_before_any_request(
    line: LineApiServer, flex: dict[str, Any], problem: str
) -> None:
    refused = failure_of(transport(line), message(json.dumps(flex)))

    assert refused.failure is Failure.PERMANENT
    assert "LINE Flex message is invalid" in refused.reason
    assert problem in refused.reason
    assert line.requests == 0


def test_a_flex_message_that_is_not_valid_json_is_refused(line: LineApiServer) -> None:
    refused = failure_of(transport(line), message('{"type": "flex", "altText": "x",}'))

    assert refused.failure is Failure.PERMANENT
    assert "not valid JSON" in refused.reason
    assert line.requests == 0


def test_text_over_5000_utf16_units_is_refused_before_any_request(line: LineApiServer) -> None:
    text = "🌸" * 2501  # 2,501 characters, but each is a surrogate pair: 5,002 units
    assert len(text) < TEXT_LIMIT < text_units(text)

    refused = failure_of(transport(line), message(text))

    assert refused.failure is Failure.PERMANENT
    assert refused.reason == "LINE text is 5,002 UTF-16 units; LINE allows 5,000"
    assert line.requests == 0


def test_text_of_exactly_5000_utf16_units_is_sent(line: LineApiServer) -> None:
    outgoing = message("🌸" * 2499 + "です")  # 4,998 + 2 units

    transport(line).send(outgoing)

    assert outgoing.delivery_id in line.accepted


# Sending twice -----------------------------------------------------------------


def test_a_resend_of_the_same_delivery_is_a_409_treated_as_sent(line: LineApiServer) -> None:
    outgoing = message()
    channel = transport(line)

    first = channel.send(outgoing)
    again = channel.send(outgoing)

    assert again == first  # x-line-accepted-request-id names the first request
    assert list(line.accepted) == [outgoing.delivery_id]
    assert line.usage == 1


def test_a_message_accepted_then_dropped_is_uncertain_and_its_retry_is_sent(
    line: LineApiServer,
) -> None:
    outgoing = message()
    channel = transport(line)
    line.drop_next()

    lost = failure_of(channel, outgoing)
    retried = channel.send(outgoing)

    assert lost.failure is Failure.UNCERTAIN
    assert "connection to LINE lost" in lost.reason
    assert isinstance(retried, Receipt) and retried.provider_message_id
    assert list(line.accepted) == [outgoing.delivery_id]
    assert line.usage == 1


def test_a_timeout_is_uncertain_and_the_retry_finds_it_accepted(line: LineApiServer) -> None:
    outgoing = message()
    channel = transport(line, timeout_seconds=0.2)
    line.hang_next(0.4)  # LINE accepts it, but only after the client gave up

    late = failure_of(channel, outgoing)
    _wait_until(lambda: outgoing.delivery_id in line.accepted)
    retried = channel.send(outgoing)

    assert late.failure is Failure.UNCERTAIN
    assert "did not answer within 0.2 s" in late.reason
    assert retried.provider_message_id
    assert list(line.accepted) == [outgoing.delivery_id]


def _wait_until(condition: Callable[[], bool], seconds: float = 2.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# What each of LINE's answers means -----------------------------------------------


@pytest.mark.parametrize(
    ("status", "options", "failure", "said"),
    [
        (500, {}, Failure.UNCERTAIN, "LINE 500"),
        (503, {}, Failure.UNCERTAIN, "LINE 503"),
        (429, {}, Failure.TRANSIENT, "rate limit"),
        (429, {"monthly_limit": True}, Failure.QUOTA_EXHAUSTED, "monthly limit"),
        (400, {}, Failure.PERMANENT, "LINE 400"),
        (401, {}, Failure.CHANNEL_UNAVAILABLE, "LINE_CHANNEL_ACCESS_TOKEN"),
        (403, {}, Failure.CHANNEL_UNAVAILABLE, "LINE_CHANNEL_ACCESS_TOKEN"),
        (413, {"message": "Payload Too Large"}, Failure.PERMANENT, "Payload Too Large"),
    ],
    ids=lambda value: str(value.value) if isinstance(value, Failure) else None,
)
def test_each_error_answer_is_classified(
    line: LineApiServer, status: int, options: dict[str, Any], failure: Failure, said: str
) -> None:
    line.fail_next(status, **options)

    error = failure_of(transport(line), message())

    assert error.failure is failure
    assert said in error.reason
    assert line.accepted == {}


def test_a_user_id_line_does_not_know_is_contact_unusable(line: LineApiServer) -> None:
    line.mark_unknown(PATIENT)

    error = failure_of(transport(line), message())

    assert error.failure is Failure.CONTACT_UNUSABLE
    assert error.reason.startswith("LINE 400: Failed to send messages")
    assert PATIENT not in error.reason


def test_a_malformed_user_id_is_contact_unusable(line: LineApiServer) -> None:
    error = failure_of(transport(line), message(to="taro.yamada"))

    assert error.failure is Failure.CONTACT_UNUSABLE
    assert "'to'" in error.reason


def test_a_user_who_blocked_the_account_is_answered_like_anyone_else(
    line: LineApiServer,
) -> None:
    # LINE's FAQ: a push to a user who blocked the account answers 200 and is not
    # counted; Tayori learns of the block from the webhook's unfollow event.
    line.mark_blocked(PATIENT)

    transport(line).send(message())

    assert len(line.accepted) == 1
    assert line.usage == 0


def test_a_refused_token_stops_the_channel_without_revealing_it() -> None:
    with LineApiServer(access_token="the-real-token") as server:
        error = failure_of(transport(server, token=TOKEN), message())

    assert error.failure is Failure.CHANNEL_UNAVAILABLE
    assert error.reason.startswith("LINE 401: Authentication failed")
    assert "LINE_CHANNEL_ACCESS_TOKEN" in error.reason
    assert TOKEN not in error.reason and TOKEN not in str(error)


def test_the_monthly_limit_holds_the_channel_once_reached() -> None:
    with LineApiServer(
        access_token=TOKEN, monthly_limit=200, usage_offset=199, enforce_monthly_limit=True
    ) as server:
        channel = transport(server)
        channel.send(message())
        error = failure_of(channel, message())

    assert error.failure is Failure.QUOTA_EXHAUSTED
    assert len(server.accepted) == 1


def test_a_refused_connection_makes_the_channel_unreachable() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    channel = LineTransport(
        LineApi(access_token=TOKEN, base_url=f"http://127.0.0.1:{port}"), timeout_seconds=TIMEOUT
    )

    error = failure_of(channel, message())

    assert error.failure is Failure.UNREACHABLE
    assert "nothing was sent" in error.reason


def test_a_wrong_base_url_holds_the_channel_rather_than_failing_each_message(
    line: LineApiServer,
) -> None:
    channel = LineTransport(
        LineApi(access_token=TOKEN, base_url=line.base_url + "/not-line"), timeout_seconds=TIMEOUT
    )

    error = failure_of(channel, message())

    assert error.failure is Failure.CHANNEL_UNAVAILABLE
    assert "LINE_API_BASE_URL" in error.reason


# The classification table, without a server ---------------------------------------

MONTHLY = json.dumps({"message": "You have reached your monthly limit."})
RATE = json.dumps({"message": "The API rate limit has been exceeded. Try again later."})
UNKNOWN_USER = json.dumps({"message": "Failed to send messages"})
BAD_TO = json.dumps({"message": "The request body has 1 error(s)", "details": [
    {"message": "must be specified", "property": "to"}
]})  # fmt: skip
BAD_TEXT = json.dumps({"message": "The request body has 1 error(s)", "details": [
    {"message": "Length must be between 0 and 5000", "property": "messages[0].text"}
]})  # fmt: skip


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, '{"sentMessages": [{"id": "1"}]}', None),
        (409, '{"message": "The retry key is already accepted"}', None),
        (429, MONTHLY, Failure.QUOTA_EXHAUSTED),
        (429, RATE, Failure.TRANSIENT),
        (429, "", Failure.TRANSIENT),
        (500, "<html>Internal Server Error</html>", Failure.UNCERTAIN),
        (502, None, Failure.UNCERTAIN),
        (400, UNKNOWN_USER, Failure.CONTACT_UNUSABLE),
        (400, BAD_TO, Failure.CONTACT_UNUSABLE),
        (400, BAD_TEXT, Failure.PERMANENT),
        (401, '{"message": "Authentication failed"}', Failure.CHANNEL_UNAVAILABLE),
        (403, '{"message": "Access to this API is not available"}', Failure.CHANNEL_UNAVAILABLE),
        (404, '{"message": "Not found"}', Failure.CHANNEL_UNAVAILABLE),
        (410, "", Failure.PERMANENT),
        (415, "", Failure.PERMANENT),
    ],
)
def test_classify(status: int, body: str | None, expected: Failure | None) -> None:
    assert classify(status, body) is expected


def test_network_failures_are_uncertain_unless_no_connection_was_made() -> None:
    from urllib3.exceptions import (
        ConnectTimeoutError,
        NameResolutionError,
        NewConnectionError,
        ProtocolError,
        ReadTimeoutError,
    )

    assert network_failure(NewConnectionError(None, "refused")) is Failure.UNREACHABLE
    assert network_failure(NameResolutionError("h", None, OSError())) is Failure.UNREACHABLE
    assert network_failure(ConnectTimeoutError("slow to connect")) is Failure.UNREACHABLE
    assert network_failure(ReadTimeoutError(None, "/", "slow")) is Failure.UNCERTAIN
    assert network_failure(ProtocolError("Connection aborted.")) is Failure.UNCERTAIN


# Quota -----------------------------------------------------------------------------


def test_quota_reads_the_limit_and_this_months_usage() -> None:
    with LineApiServer(access_token=TOKEN, monthly_limit=5000, usage_offset=41) as server:
        channel = transport(server)
        channel.send(message())

        assert channel.quota() == LineQuota(limit=5000, used=42)


def test_quota_without_a_monthly_limit_has_no_limit() -> None:
    with LineApiServer(access_token=TOKEN, monthly_limit=None) as server:
        assert transport(server).quota() == LineQuota(limit=None, used=0)


def test_a_quota_read_with_a_refused_token_is_classified_like_a_send() -> None:
    with (
        LineApiServer(access_token="the-real-token") as server,
        pytest.raises(DeliveryError) as raised,
    ):
        transport(server).quota()

    assert raised.value.failure is Failure.CHANNEL_UNAVAILABLE
    assert TOKEN not in raised.value.reason


# Sharing one transport -----------------------------------------------------------------


def test_the_transport_sends_from_several_threads_at_once(line: LineApiServer) -> None:
    line.latency_seconds = 0.1  # long enough for the threads' requests to overlap
    channel = transport(line, max_connections=8)
    outgoing = [message(f"お知らせ {i}") for i in range(16)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        receipts = list(pool.map(channel.send, outgoing))

    assert set(line.accepted) == {m.delivery_id for m in outgoing}
    assert len({r.provider_message_id for r in receipts}) == 16
    assert line.most_at_once > 1  # the pool did not serialise them


def test_the_transport_is_usable_after_close(line: LineApiServer) -> None:
    channel = transport(line)
    channel.send(message())

    channel.close()
    channel.send(message())

    assert len(line.accepted) == 2


# The loopback server itself holds requests to LINE's contract --------------------------


def _post(server: LineApiServer, body: object, retry_key: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        server.base_url + "/v2/bot/message/push",
        data=json.dumps(body).encode(),
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Content-Type": "application/json",
            "X-Line-Retry-Key": retry_key,
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


@pytest.mark.parametrize(
    "body",
    [
        {"to": PATIENT, "messages": [{"type": "bubble", "text": "x"}]},
        {"to": PATIENT, "messages": [{"type": "text"}]},
        {"to": PATIENT, "messages": []},
        {"messages": [{"type": "text", "text": "x"}]},
        {"to": PATIENT, "messages": [{**BOOKING_FLEX, "contents": {"type": "bubble", "body": {}}}]},
    ],
    ids=["unknown type", "text without text", "no messages", "no recipient", "box without layout"],
)
def test_the_loopback_server_refuses_what_breaks_the_contract(body: dict[str, Any]) -> None:
    with LineApiServer(access_token=TOKEN) as server:
        status, answer = _post(server, body, str(uuid.uuid4()))

    assert status == 400
    assert answer["message"].startswith("The request body has")
    assert server.schema_errors
    assert server.accepted == {}


def test_the_loopback_server_refuses_a_retry_key_that_is_not_a_uuid() -> None:
    with LineApiServer(access_token=TOKEN) as server:
        status, _ = _post(server, {"to": PATIENT, "messages": [{"type": "text", "text": "x"}]}, "1")

    assert status == 400
    assert server.accepted == {}


def test_the_loopback_server_accepts_one_of_two_concurrent_requests_with_one_key() -> None:
    body = {"to": PATIENT, "messages": [{"type": "text", "text": "x"}]}
    key = str(uuid.uuid4())
    with LineApiServer(access_token=TOKEN, latency_seconds=0.05) as server:
        results: list[int] = []
        threads = [
            threading.Thread(target=lambda: results.append(_post(server, body, key)[0]))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert sorted(results) == [200, 409, 409, 409]
    assert server.usage == 1

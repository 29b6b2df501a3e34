"""The LINE channel: one push through the Messaging API (line-bot-sdk v3) per message.

Every push carries the delivery id as `X-Line-Retry-Key`, so a resend after a timeout
or a crash is recognised by LINE (409) instead of reaching the patient twice.

LINE's answers are read in one place: `classify()` turns (HTTP status, body) into
nothing (sent) or a `Failure`, and `network_failure()` does the same for a request
that got no answer. Both are pure, so their tables are tested without a server.

`reply()` answers a webhook event through its reply token: free of the monthly quota,
once per token, and without a retry key (LINE takes none for replies; a token used
once is refused the second time, which makes a repeat harmless).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from scheduler.channels import DeliveryError, Failure, OutgoingMessage, Receipt
from scheduler.settings import LineApi

# LINE's limits (Messaging API reference), checked before a request is made so that a
# message LINE would refuse fails with a reason a practitioner can act on.
TEXT_LIMIT = 5000  # characters of one text message, counted in UTF-16 code units
MESSAGES_PER_PUSH = 5  # message objects in one push request
# The only 429 that is not a rate limit ("You have reached your monthly limit."),
# recognised by its words; LINE sends no Retry-After with it.
MONTHLY_LIMIT_WORDS = "monthly limit"
# LINE's answer for a user id it does not know (its FAQ: also an id issued by another
# provider). A user who *blocked* the account gets a 200: LINE tells us only through
# the webhook's unfollow event.
UNKNOWN_USER = "Failed to send messages"
_INVALID_TO = re.compile(r"^The property, 'to', in the request body is invalid")


def _sdk() -> Any:
    """line-bot-sdk's Messaging API module, imported when first needed: its models
    take a second and some 45 MB to import, which a process that composes nothing
    for LINE never needs (`tayori tick` with nothing due, the web process)."""
    import linebot.v3.messaging  # type: ignore[import-untyped]

    return linebot.v3.messaging


@dataclass(frozen=True)
class LineQuota:
    limit: int | None  # None when LINE reports type "none" (no monthly limit)
    used: int  # totalUsage: messages counted this month


@dataclass(frozen=True)
class LineErrorBody:
    """LINE's error body: a message and, for invalid requests, (property, message)s."""

    message: str
    details: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, body: str | bytes | None) -> LineErrorBody:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body or ""
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            # Not LINE speaking (a proxy's HTML page, an empty body): keep a glimpse.
            return cls(" ".join(text.split())[:120] or "no error message")
        details = tuple(
            (str(d.get("property", "")), str(d.get("message", "")))
            for d in data.get("details") or []
            if isinstance(d, dict)
        )
        return cls(str(data.get("message", "no error message")), details)


def classify(status: int, body: str | bytes | None) -> Failure | None:
    """What LINE's answer means for the delivery; None means the message was sent."""
    error = LineErrorBody.parse(body)
    if 200 <= status < 300:
        return None
    if status == 409:
        return None  # the retry key was accepted before: sent, and not sent again
    if status == 429:
        # Only the monthly limit is worth holding the channel for; any other 429 is a
        # rate limit, and nothing was accepted.
        monthly = MONTHLY_LIMIT_WORDS in error.message.lower()
        return Failure.QUOTA_EXHAUSTED if monthly else Failure.TRANSIENT
    if status >= 500:
        return Failure.UNCERTAIN  # LINE may have accepted it before failing
    if status == 400:
        return Failure.CONTACT_UNUSABLE if _contact_refused(error) else Failure.PERMANENT
    if status in (401, 403):
        return Failure.CHANNEL_UNAVAILABLE
    if status == 404 or 300 <= status < 400:
        # The push endpoint always exists at LINE: this is a wrong LINE_API_BASE_URL,
        # which would fail every message alike. Hold the channel, lose none of them.
        return Failure.CHANNEL_UNAVAILABLE
    if 400 <= status < 500:
        return Failure.PERMANENT
    return Failure.UNCERTAIN  # an answer HTTP does not define: assume the worst


def _contact_refused(error: LineErrorBody) -> bool:
    """A 400 about the recipient rather than the message."""
    if error.message == UNKNOWN_USER or _INVALID_TO.match(error.message):
        return True
    return any(prop == "to" for prop, _ in error.details)


def describe(
    status: int, body: str | bytes | None, failure: Failure, *, retry_key: bool = True
) -> str:
    """A short English reason: LINE's status and message, and what to check.
    `retry_key`: whether the request carried one (a push), so a retry is safe."""
    error = LineErrorBody.parse(body)
    said = error.message
    if error.details:
        said += ": " + "; ".join(f"{prop}: {message}" for prop, message in error.details[:3])
    hint = {
        Failure.QUOTA_EXHAUSTED: "this month's LINE messages are used up",
        Failure.TRANSIENT: "rate limited; nothing was sent",
        Failure.UNCERTAIN: "LINE may have accepted it"
        + ("; retried with the same retry key" if retry_key else ""),
        Failure.CONTACT_UNUSABLE: "this LINE user id cannot be reached from this channel",
    }.get(failure, "")
    if status == 401:
        hint = "check LINE_CHANNEL_ACCESS_TOKEN: expired, revoked or mistyped"
    elif status == 403:
        hint = "check that LINE_CHANNEL_ACCESS_TOKEN's channel may use this API"
    elif failure is Failure.CHANNEL_UNAVAILABLE:
        hint = "check LINE_API_BASE_URL; LINE's is https://api.line.me"
    return f"LINE {status}: {said}" + (f" ({hint})" if hint else "")


def network_failure(error: BaseException) -> Failure:
    """A request that got no answer: did it possibly reach LINE?"""
    if isinstance(error, MaxRetryError) and error.reason is not None:
        error = error.reason
    if isinstance(error, ReadTimeoutError | ProtocolError):
        return Failure.UNCERTAIN  # sent, then no (complete) answer
    if isinstance(error, NewConnectionError | ConnectTimeoutError):
        # Refused, unreachable, DNS (NameResolutionError is a NewConnectionError):
        # no connection, so no request, and none for any other message either.
        return Failure.UNREACHABLE
    return Failure.UNCERTAIN


def text_units(text: str) -> int:
    """LINE's length of a text: UTF-16 code units (an emoji outside the BMP is 2)."""
    return len(text.encode("utf-16-le")) // 2


def line_message(text: str) -> Any:
    """The SDK message object for a rendered LINE template: a Flex message when the
    template rendered one as JSON, plain text otherwise."""
    flex = _flex_json(text)
    if flex is None:
        _check_length(text)
        return _sdk().TextMessage(text=text)
    return _flex_message(flex)


def check_line_text(text: str) -> None:
    """Raise DeliveryError if LINE would refuse this rendered text (too long, or a
    Flex message that is not valid), without building the message for plain text."""
    if text.lstrip().startswith("{"):
        line_message(text)
    else:
        _check_length(text)


def _check_length(text: str) -> None:
    units = text_units(text)
    if units > TEXT_LIMIT:
        raise DeliveryError(
            f"LINE text is {units:,} UTF-16 units; LINE allows {TEXT_LIMIT:,}", Failure.PERMANENT
        )


def push_request(message: OutgoingMessage) -> Any:
    """The body of the push for one delivery (checked before anything is sent)."""
    # One message object per push (LINE allows MESSAGES_PER_PUSH).
    return _sdk().PushMessageRequest(to=message.to, messages=[line_message(message.text)])


def reply_request(reply_token: str, text: str) -> Any:
    """The body of a reply: one text message (checked like a push's)."""
    return _sdk().ReplyMessageRequest(reply_token=reply_token, messages=[line_message(text)])


def _flex_json(text: str) -> dict[str, Any] | None:
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    try:
        data = json.loads(stripped)
    except ValueError as e:
        # A message that starts like a Flex object but does not parse would reach
        # the patient as raw JSON; refuse it instead.
        if '"flex"' in stripped:
            raise DeliveryError(
                f"LINE Flex message is not valid JSON: {getattr(e, 'msg', 'parse error')} "
                f"(line {getattr(e, 'lineno', '?')}, column {getattr(e, 'colno', '?')})",
                Failure.PERMANENT,
            ) from None
        return None
    if isinstance(data, dict) and data.get("type") == "flex":
        return data
    return None


def _flex_message(data: dict[str, Any]) -> Any:
    def invalid(problem: str) -> DeliveryError:
        return DeliveryError(f"LINE Flex message is invalid: {problem}", Failure.PERMANENT)

    alt_text = data.get("altText")
    if not isinstance(alt_text, str) or not alt_text.strip():
        # Shown in notifications and on devices without Flex support: required.
        raise invalid("'altText' is missing or empty")
    contents = data.get("contents")
    if not isinstance(contents, dict) or contents.get("type") not in ("bubble", "carousel"):
        raise invalid("'contents' must be a bubble or a carousel")
    try:
        return _sdk().FlexMessage.from_dict(data)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise invalid(_model_problem(e)) from None


def _model_problem(error: Exception) -> str:
    """Where the SDK's model refused the Flex JSON, without echoing its content
    (which may hold the patient's name)."""
    errors = getattr(error, "errors", None)  # pydantic's ValidationError
    if callable(errors):
        found = errors()
        if isinstance(found, list) and found:
            first = found[0]
            where = ".".join(str(part) for part in first.get("loc", ()))
            said = str(first.get("msg", "invalid"))
            # pydantic v1's way of saying a required field is absent
            return f"'{where}' is missing" if said.startswith("none is not") else f"{where}: {said}"
    return "a component or action has a missing or unknown 'type'"


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    data: Any


class LineTransport:
    """Sends through the LINE Messaging API. Safe to share between threads: the SDK
    client is stateless per call and urllib3's pool hands each thread a connection."""

    def __init__(
        self, api: LineApi, *, timeout_seconds: float = 10.0, max_connections: int = 8
    ) -> None:
        self._token = api.access_token
        self._timeout_seconds = timeout_seconds
        sdk = _sdk()
        configuration = sdk.Configuration(host=api.base_url, access_token=api.access_token)
        # One connection per dispatcher thread, kept alive between pushes.
        configuration.connection_pool_maxsize = max_connections
        # urllib3 must never resend on its own: retries are the dispatcher's, with
        # the delivery's state recorded first; and its errors then arrive unwrapped.
        configuration.retries = False
        self._client = sdk.ApiClient(configuration)
        self._api = sdk.MessagingApi(self._client)

    def send(self, message: OutgoingMessage) -> Receipt:
        request = push_request(message)
        answer = self._call(
            lambda: self._api.push_message_with_http_info(
                request,
                x_line_retry_key=message.delivery_id,
                _request_timeout=self._timeouts(),
            )
        )
        if answer.status == 409:
            # Accepted by an earlier attempt (a timeout, a crash): that one is the send.
            return Receipt(provider_message_id=answer.headers.get("x-line-accepted-request-id"))
        return Receipt(provider_message_id=_request_id(answer))

    def reply(self, reply_token: str, text: str) -> None:
        """Answer a webhook event with one text message, through its reply token."""
        request = reply_request(reply_token, text)
        self._call(
            lambda: self._api.reply_message_with_http_info(
                request, _request_timeout=self._timeouts()
            ),
            retry_key=False,
        )

    def quota(self) -> LineQuota:
        """This month's limit and usage, as LINE counts them."""
        limit = self._call(
            lambda: self._api.get_message_quota_with_http_info(_request_timeout=self._timeouts())
        ).data
        usage = self._call(
            lambda: self._api.get_message_quota_consumption_with_http_info(
                _request_timeout=self._timeouts()
            )
        ).data
        if limit is None or usage is None:  # a 2xx without a body: not LINE's way
            raise DeliveryError("LINE's quota answer had no body", Failure.TRANSIENT)
        limited = str(getattr(limit.type, "value", limit.type)) == "limited"
        value = limit.value if limited else None
        return LineQuota(
            limit=int(value) if value is not None else None, used=int(usage.total_usage)
        )

    def close(self) -> None:
        # Drop idle keep-alive connections between dispatch cycles; the pool
        # reconnects on the next send, so the transport stays usable.
        self._client.rest_client.pool_manager.clear()

    def _timeouts(self) -> tuple[float, float]:
        # Separate connect and read timeouts: a connect timeout proves nothing was
        # sent (TRANSIENT), a read timeout does not (UNCERTAIN).
        return (self._timeout_seconds, self._timeout_seconds)

    def _call(self, request: Callable[[], Any], *, retry_key: bool = True) -> _Answer:
        """One request; LINE's refusal or no answer raises DeliveryError. `retry_key`:
        whether the request carries one, which the reasons then mention."""
        try:
            response = request()
        except _sdk().ApiException as e:
            status = int(e.status or 0)
            if status == 0:
                # The SDK's wrapping of a TLS failure, which happens in the handshake,
                # before any request byte.
                raise DeliveryError(
                    self._redact(f"LINE TLS failure: {_short(e.reason)}"), Failure.UNREACHABLE
                ) from None
            failure = classify(status, e.body)
            if failure is None:
                return _Answer(status, e.headers or {}, None)
            reason = describe(status, e.body, failure, retry_key=retry_key)
            raise DeliveryError(self._redact(reason), failure, status=status) from None
        except urllib3.exceptions.HTTPError as e:
            failure = network_failure(e)
            reason = self._no_answer(e, failure, retry_key)
            raise DeliveryError(self._redact(reason), failure) from e
        except Exception as e:
            # Anything else after the request left (an answer the SDK could not read):
            # LINE may have accepted it, and the retry key makes a retry safe.
            raise DeliveryError(
                f"LINE's answer could not be read ({type(e).__name__})", Failure.UNCERTAIN
            ) from e
        return _Answer(int(response.status_code), response.headers or {}, response.data)

    def _no_answer(self, error: BaseException, failure: Failure, retry_key: bool) -> str:
        maybe = "it may have accepted the message" + (
            "; retried with the same retry key" if retry_key else ""
        )
        if isinstance(error, ReadTimeoutError):
            return f"LINE did not answer within {self._timeout_seconds:g} s ({maybe})"
        if failure is Failure.UNCERTAIN:
            return f"connection to LINE lost before its answer: {_short(error)} ({maybe})"
        return (
            f"could not connect to LINE: {_short(error)} (nothing was sent; "
            "check LINE_API_BASE_URL and the network)"
        )

    def _redact(self, reason: str) -> str:
        # The token never belongs in a reason (they are stored and logged), even if
        # some layer echoed it back.
        return reason.replace(self._token, "[LINE_CHANNEL_ACCESS_TOKEN]") if self._token else reason


def _request_id(answer: _Answer) -> str | None:
    request_id = answer.headers.get("x-line-request-id")
    if request_id:
        return str(request_id)
    sent = getattr(answer.data, "sent_messages", None) or []
    return str(sent[0].id) if sent else None


def _short(error: object) -> str:
    return " ".join(str(error).split())[:200]

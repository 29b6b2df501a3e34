"""A loopback LINE Messaging API server for tests: the endpoints Tayori calls, held to
LINE's official OpenAPI description, with faults that can be scripted.

What it answers, and why (LINE's documentation, see tests/contracts/README.md):
- `POST /v2/bot/message/push` checks the bearer token, the content type, the
  `X-Line-Retry-Key` (a UUID) and validates the body against the contract's
  `PushMessageRequest`. A retry key it already accepted answers 409 with
  `x-line-accepted-request-id` and sends nothing again.
- A user id LINE does not know answers 400 "Failed to send messages". A user who
  *blocked* the account is answered 200 like anyone else: LINE's FAQ says so, the
  message is simply not delivered and not counted. Blocks are learned from the
  webhook's unfollow event, never from a push.
- Text longer than 5,000 UTF-16 code units answers 400, as LINE does.
- `GET /v2/bot/message/quota` and `/quota/consumption` report the limit and usage.
- `POST /v2/bot/message/reply` validates the body against `ReplyMessageRequest` and
  accepts a reply token the server issued (`issue_reply_token()`, which a test puts
  in the webhook events it sends) once: an unknown or used token answers 400
  "Invalid reply token", as LINE does. Replies cost no quota; `replies` has them.

Everything a test changes or reads goes through one lock, so the server can take
concurrent requests from a dispatcher's threads (ThreadingHTTPServer: one thread
per connection; latency sleeps never serialise requests).

    with LineApiServer(access_token="token") as line:
        LineTransport(LineApi(access_token="token", base_url=line.base_url))
        line.fail_next(500)
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "tests" / "contracts" / "line-messaging-api.yml"
WEBHOOK_CONTRACT = ROOT / "tests" / "contracts" / "line-webhook.yml"

TEXT_LIMIT = 5000  # UTF-16 code units, LINE's limit for one text message
USER_ID = re.compile(r"^[UCR][0-9a-f]{32}$")  # user, group and room ids

# LINE's own wording for the errors we reproduce.
MONTHLY_LIMIT = "You have reached your monthly limit."
RATE_LIMIT = "The API rate limit has been exceeded. Try again later."
RETRY_KEY_ACCEPTED = "The retry key is already accepted"
UNKNOWN_USER = "Failed to send messages"
INVALID_REPLY_TOKEN = "Invalid reply token"
INVALID_TO = "The property, 'to', in the request body is invalid (line: -, column: -)"
BAD_TOKEN = (
    "Authentication failed due to the following reason: invalid token. "
    "Confirm that the access token in the authorization header is valid."
)
DEFAULT_MESSAGES = {
    400: "The request body has 1 error(s)",
    401: BAD_TOKEN,
    403: "Access to this API is not available for your account",
    404: "Not found",
    429: RATE_LIMIT,
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
}


@dataclass(frozen=True)
class Answer:
    """One response: status, JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()


def error(status: int, message: str, details: list[dict[str, str]] | None = None) -> Answer:
    body: dict[str, Any] = {"message": message}
    if details:
        body["details"] = details
    return Answer(status, body)


@dataclass(frozen=True)
class Reply:
    """A reply LINE accepted: its token and the text of each message."""

    token: str
    texts: tuple[str, ...]
    body: dict[str, Any]


@dataclass(frozen=True)
class _Script:
    """What to do with the next push request instead of (or around) the usual."""

    kind: str  # "answer": reply with `answer`; "hang": wait, then as usual; "drop"
    answer: Answer | None = None
    seconds: float = 0.0


class LineApiServer:
    """A LINE Messaging API on 127.0.0.1 (a free port), running in a daemon thread."""

    def __init__(
        self,
        access_token: str = "test-channel-access-token",
        *,
        monthly_limit: int | None = 200,
        usage_offset: int = 0,
        enforce_monthly_limit: bool = False,
        latency_seconds: float = 0.0,
    ) -> None:
        self.access_token = access_token
        self.monthly_limit = monthly_limit  # None: LINE's "type": "none" (no limit)
        self.usage_offset = usage_offset  # messages counted this month before the test
        # When true, pushes answer 429 "monthly limit" once usage reaches the limit.
        self.enforce_monthly_limit = enforce_monthly_limit
        self.latency_seconds = latency_seconds  # added to every request, concurrently
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._scripts: deque[_Script] = deque()
        self._accepted: dict[str, dict[str, Any]] = {}
        self._request_ids: dict[str, str] = {}  # retry key -> x-line-request-id
        self._unknown: set[str] = set()
        self._blocked: set[str] = set()
        self._delivered = 0
        self._requests = 0
        self._pushes = 0
        self._at_once = 0
        self._most_at_once = 0
        self._schema_errors: list[str] = []
        self._ids = count(470_000_000_000_000_001)
        self._validate = push_request_validator()
        self._validate_reply = request_validator("ReplyMessageRequest")
        self._reply_tokens: set[str] = set()  # issued and not used yet
        self._replies: list[Reply] = []
        self._http = _Server(("127.0.0.1", 0), _Handler)
        self._http.api = self
        # A short poll interval: stop() waits for the serving loop to notice.
        self._thread = threading.Thread(
            target=self._http.serve_forever, args=(0.02,), name="line-api", daemon=True
        )

    # Lifecycle ---------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> LineApiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in a latency or a hang
        if self._thread.is_alive():
            self._http.shutdown()
        self._http.server_close()

    def __enter__(self) -> LineApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # What a test sets up -----------------------------------------------------

    def fail_next(
        self,
        status: int,
        *,
        monthly_limit: bool = False,
        message: str | None = None,
        details: list[dict[str, str]] | None = None,
        times: int = 1,
    ) -> None:
        """The next `times` push requests answer `status` with LINE's error body and
        accept nothing. `monthly_limit=True` makes a 429 the monthly quota one."""
        text = MONTHLY_LIMIT if monthly_limit else message or DEFAULT_MESSAGES.get(status, "Error")
        self._script(_Script("answer", error(status, text, details)), times)

    def hang_next(self, seconds: float, times: int = 1) -> None:
        """Hold the next push requests for `seconds` (longer than the client's timeout),
        then handle them as usual: the message is accepted after the client gave up."""
        self._script(_Script("hang", seconds=seconds), times)

    def drop_next(self, times: int = 1) -> None:
        """Accept the next push requests, then close the connection without answering:
        the client cannot know the message went out; a retry gets 409."""
        self._script(_Script("drop"), times)

    def mark_unknown(self, user_id: str) -> None:
        """LINE answers 400 "Failed to send messages" for this id (no such user)."""
        with self._lock:
            self._unknown.add(user_id)

    def mark_blocked(self, user_id: str) -> None:
        """This user blocked the account: LINE still answers 200, delivers nothing."""
        with self._lock:
            self._blocked.add(user_id)

    def issue_reply_token(self) -> str:
        """A reply token, as LINE puts in a webhook event, that one reply may use."""
        token = uuid.uuid4().hex
        with self._lock:
            self._reply_tokens.add(token)
        return token

    def _script(self, script: _Script, times: int) -> None:
        with self._lock:
            self._scripts.extend([script] * times)

    # What a test reads -------------------------------------------------------

    @property
    def accepted(self) -> dict[str, dict[str, Any]]:
        """Accepted push bodies by retry key (a copy)."""
        with self._lock:
            return dict(self._accepted)

    @property
    def replies(self) -> list[Reply]:
        """Accepted replies, in order (a copy)."""
        with self._lock:
            return list(self._replies)

    def replies_to(self, token: str) -> list[Reply]:
        return [reply for reply in self.replies if reply.token == token]

    @property
    def requests(self) -> int:
        """Every request that reached the server, any endpoint, any outcome."""
        with self._lock:
            return self._requests

    @property
    def most_at_once(self) -> int:
        """The most requests the server was handling at the same time."""
        with self._lock:
            return self._most_at_once

    @property
    def pushes(self) -> int:
        """Push requests that reached the server, repeats and refusals included."""
        with self._lock:
            return self._pushes

    @property
    def usage(self) -> int:
        """Messages counted this month: delivered pushes plus `usage_offset`."""
        with self._lock:
            return self._delivered + self.usage_offset

    @property
    def schema_errors(self) -> list[str]:
        """Every way a request broke LINE's contract (schema, length, headers)."""
        with self._lock:
            return list(self._schema_errors)

    # Request handling (called from the handler's thread) ----------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer | None:
        """The answer to one request; None means: close the connection unanswered."""
        with self._lock:
            self._requests += 1
            self._pushes += path == PUSH
            script = self._scripts.popleft() if path == PUSH and self._scripts else None
            self._at_once += 1
            self._most_at_once = max(self._most_at_once, self._at_once)
        try:
            return self._answer(method, path, headers, body, script)
        finally:
            with self._lock:
                self._at_once -= 1

    def _answer(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        script: _Script | None,
    ) -> Answer | None:
        self._sleep(self.latency_seconds)
        if headers.get("authorization") != f"Bearer {self.access_token}":
            # LINE's wording differs when the header is missing altogether.
            if "authorization" not in headers:
                return error(
                    401,
                    "Authorization header required. Must follow the scheme, "
                    "'Authorization: Bearer <ACCESS TOKEN>'",
                )
            return error(401, BAD_TOKEN)
        if script is not None and script.kind == "answer":
            assert script.answer is not None
            return script.answer
        if script is not None and script.kind == "hang":
            self._sleep(script.seconds)
        route = (method, path)
        if route == ("POST", PUSH):
            answer = self._push(headers, body)
            return None if script is not None and script.kind == "drop" else answer
        if route == ("POST", REPLY):
            return self._reply(headers, body)
        if route == ("GET", "/v2/bot/message/quota"):
            if self.monthly_limit is None:
                return Answer(200, {"type": "none"})
            return Answer(200, {"type": "limited", "value": self.monthly_limit})
        if route == ("GET", "/v2/bot/message/quota/consumption"):
            return Answer(200, {"totalUsage": self.usage})
        return error(404, "Not found")

    def _push(self, headers: dict[str, str], raw: bytes) -> Answer:
        refused = self._content_type_problem(headers)
        if refused is not None:
            return refused
        retry_key = headers.get("x-line-retry-key")
        if retry_key is not None and not _is_uuid(retry_key):
            return self._contract_error(
                400, "The value for the 'X-Line-Retry-Key' header is invalid"
            )
        body, refused = self._json(raw)
        if refused is not None:
            return refused
        with self._lock:
            if retry_key is not None and retry_key in self._accepted:
                return self._already_accepted(retry_key)
        problems = self._body_problems(body)
        if problems:
            return self._contract_error(
                400,
                f"The request body has {len(problems)} error(s)",
                [{"message": message, "property": where} for where, message in problems],
            )
        to = body["to"]
        if not USER_ID.match(to):
            return error(400, INVALID_TO)
        return self._accept(retry_key, to, body)

    def _reply(self, headers: dict[str, str], raw: bytes) -> Answer:
        refused = self._content_type_problem(headers)
        if refused is not None:
            return refused
        body, refused = self._json(raw)
        if refused is not None:
            return refused
        problems = self._body_problems(body, self._validate_reply)
        if problems:
            return self._contract_error(
                400,
                f"The request body has {len(problems)} error(s)",
                [{"message": message, "property": where} for where, message in problems],
            )
        token = body["replyToken"]
        with self._lock:
            if token not in self._reply_tokens:  # never issued, or used already
                return error(400, INVALID_REPLY_TOKEN)
            self._reply_tokens.discard(token)
            texts = tuple(str(m.get("text", m.get("altText", ""))) for m in body["messages"])
            self._replies.append(Reply(token, texts, body))
            sent = [
                {"id": str(next(self._ids)), "quoteToken": uuid.uuid4().hex}
                for _ in body["messages"]
            ]
        return Answer(200, {"sentMessages": sent})

    def _content_type_problem(self, headers: dict[str, str]) -> Answer | None:
        content_type = headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            return self._contract_error(
                415, f"The content type, '{content_type}', is not supported"
            )
        return None

    def _json(self, raw: bytes) -> tuple[Any, Answer | None]:
        try:
            return json.loads(raw), None
        except ValueError as e:
            line, column = getattr(e, "lineno", "-"), getattr(e, "colno", "-")
            return None, self._contract_error(
                400,
                f"The request body could not be parsed as JSON (line: {line}, column: {column})",
            )

    def _accept(self, retry_key: str | None, to: str, body: dict[str, Any]) -> Answer:
        with self._lock:
            # Checked again under the lock: two concurrent requests with one key
            # must not both be accepted.
            if retry_key is not None and retry_key in self._accepted:
                return self._already_accepted(retry_key)
            if to in self._unknown:
                return error(400, UNKNOWN_USER)
            limited = self.enforce_monthly_limit and self.monthly_limit is not None
            if limited and self._delivered + self.usage_offset >= (self.monthly_limit or 0):
                return error(429, MONTHLY_LIMIT)
            request_id = str(uuid.uuid4())
            key = retry_key if retry_key is not None else f"no-retry-key-{request_id}"
            self._accepted[key] = body
            self._request_ids[key] = request_id
            if to not in self._blocked:
                self._delivered += 1  # LINE counts only messages a user can receive
            sent = [
                {"id": str(next(self._ids)), "quoteToken": uuid.uuid4().hex}
                for _ in body["messages"]
            ]
        return Answer(200, {"sentMessages": sent}, (("x-line-request-id", request_id),))

    def _already_accepted(self, retry_key: str) -> Answer:
        # Called with the lock held.
        accepted_id = self._request_ids[retry_key]
        return Answer(
            409,
            {"message": RETRY_KEY_ACCEPTED},
            (("x-line-accepted-request-id", accepted_id),),
        )

    def _body_problems(
        self, body: Any, validator: Draft7Validator | None = None
    ) -> list[tuple[str, str]]:
        """(property, message) for each way `body` breaks the contract."""
        validator = validator or self._validate
        problems = [(_json_path(e.absolute_path), e.message) for e in validator.iter_errors(body)]
        if problems or not isinstance(body, dict):
            return problems
        for i, message in enumerate(body["messages"]):
            text = message.get("text") if message.get("type") == "text" else None
            if isinstance(text, str) and len(text.encode("utf-16-le")) // 2 > TEXT_LIMIT:
                where, limit = f"messages[{i}].text", f"Length must be between 0 and {TEXT_LIMIT}"
                problems.append((where, limit))
        return problems

    def _contract_error(
        self, status: int, message: str, details: list[dict[str, str]] | None = None
    ) -> Answer:
        with self._lock:
            self._schema_errors.append(message)
            self._schema_errors.extend(f"{d['property']}: {d['message']}" for d in details or [])
        return error(status, message, details)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)


PUSH = "/v2/bot/message/push"
REPLY = "/v2/bot/message/reply"


def line_api_fixture(**options: Any) -> Callable[[], Iterator[LineApiServer]]:
    """A pytest fixture that runs a LineApiServer for one test:
    `line_api = line_api_fixture(access_token=TOKEN)` in a test module."""

    @pytest.fixture
    def fixture() -> Iterator[LineApiServer]:
        with LineApiServer(**options) as server:
            yield server

    return fixture


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 resets connections when a dispatcher's
    # lanes connect at once; LINE's servers do not.
    request_queue_size = 128
    block_on_close = False  # a handler still hanging must not hold up stop()
    api: LineApiServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like LINE, so clients reuse connections
    # An answer's headers and body go out in two writes: with Nagle's algorithm the
    # body would wait for the client's delayed ACK, about 40 ms that LINE never adds.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._answer(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if len(body) < length:
            # The client went away mid-request (a worker killed while pushing): LINE
            # never sees such a request, so it is neither answered nor a contract error.
            self.close_connection = True
            return
        self._answer(body)

    def _answer(self, body: bytes) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        path = self.path.split("?")[0]
        answer = self.server.api.handle(self.command, path, headers, body)
        if answer is None:
            self.close_connection = True  # the socket closes with nothing written
            return
        data = json.dumps(answer.body).encode()
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if not any(name == "x-line-request-id" for name, _ in answer.headers):
                self.send_header("x-line-request-id", str(uuid.uuid4()))
            for name, value in answer.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its timeout); LINE does not care either.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a test's output is for the test, not for every request


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _json_path(path: Any) -> str:
    """LINE's way of naming a property: messages[0].contents.body."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.lstrip(".") or "(body)"


# The contract ------------------------------------------------------------------


def push_request_validator() -> Draft7Validator:
    """A validator for `PushMessageRequest` (see `request_validator`)."""
    return request_validator("PushMessageRequest")


@cache
def request_validator(schema: str, contract: Path = CONTRACT) -> Draft7Validator:
    """A validator for one of an OpenAPI description's schemas (`PushMessageRequest`
    in the Messaging API's, `CallbackRequest` in the webhook's).

    OpenAPI's `discriminator` has no JSON Schema meaning: plain validation against
    `Message` would accept any object with a `type`. So every reference to a
    discriminated base (Message, FlexComponent, Action, ...) is pointed at a
    synthetic `<Base>__by_type` schema that requires a known `type` and validates
    the object against the concrete schema its `type` names. References inside a
    concrete schema's `allOf` (its inheritance from the base) stay as they are,
    or a schema would dispatch to itself.
    """
    if not contract.exists():
        raise FileNotFoundError(
            f"{contract}: LINE's OpenAPI description is missing (see tests/contracts/README.md)"
        )
    spec = yaml.load(contract.read_text(encoding="utf-8"), Loader=_yaml_loader())
    schemas: dict[str, Any] = spec["components"]["schemas"]
    bases = {name: s["discriminator"] for name, s in schemas.items() if "discriminator" in s}
    for definition in schemas.values():
        _redirect(definition, bases)
    for name, discriminator in bases.items():
        schemas[f"{name}__by_type"] = _by_type(name, discriminator)
    root = {
        "$ref": f"#/components/schemas/{schema}",
        "components": {"schemas": schemas},
    }
    Draft7Validator.check_schema(root)
    return Draft7Validator(root)


def _redirect(node: Any, bases: dict[str, Any]) -> None:
    if isinstance(node, list):
        for item in node:
            _redirect(item, bases)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key == "allOf":
            for part in value:
                if not _base_ref(part, bases):  # inheritance stays, the rest dispatches
                    _redirect(part, bases)
        elif key == "$ref" and _base_ref(node, bases):
            node["$ref"] = f"{value}__by_type"
        else:
            _redirect(value, bases)


def _base_ref(node: Any, bases: dict[str, Any]) -> bool:
    ref = node.get("$ref") if isinstance(node, dict) else None
    return isinstance(ref, str) and ref.rpartition("/")[2] in bases


def _by_type(base: str, discriminator: dict[str, Any]) -> dict[str, Any]:
    prop = discriminator["propertyName"]
    mapping: dict[str, str] = discriminator["mapping"]
    return {
        "allOf": [
            {"$ref": f"#/components/schemas/{base}"},
            {"required": [prop], "properties": {prop: {"enum": sorted(mapping)}}},
            *(
                {
                    "if": {"required": [prop], "properties": {prop: {"const": value}}},
                    "then": {"$ref": target},
                }
                for value, target in mapping.items()
            ),
        ]
    }


def _yaml_loader() -> type[yaml.SafeLoader]:
    # The C loader reads the 180 kB description in milliseconds; the pure one in ~1 s.
    loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return loader

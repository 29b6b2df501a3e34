"""`POST /line/webhook/{clinic}`: each clinic's LINE webhook (`POST /line/webhook`
is the installation's own clinic's, as it was before there were several).

Nothing in a request is used before its signature is checked:
0. A clinic this installation does not serve: 404, nothing read.
1. Without the clinic's channel secret (LINE_CHANNEL_SECRET in its settings) the
   endpoint answers 503 and does nothing: no request could be told from a forged
   one. Another clinic's secret never stands in.
2. The body is read as bytes, at most the app's MAX_CONTENT_LENGTH (1 MB: a larger
   one, by its Content-Length or as a chunked body is read, is answered 413 before
   any of it is looked at), and its `X-Line-Signature` is checked over those exact
   bytes (HMAC-SHA256 with the channel secret, by line-bot-sdk's
   SignatureValidator). Missing or wrong: 400, nothing done.
3. Only then is it parsed: not JSON, or not LINE's shape: 400, nothing stored.
4. Each event goes into the inbox once, by its `webhookEventId`, and is committed;
   then LINE gets its 200.
5. The events are processed from the table (scheduler/web/events.py) after the
   answer has gone.

Why after the answer, in the request's own thread, rather than in a thread pool:
Werkzeug's `call_on_close` runs once the server has written the whole response, so
LINE has its 200 without waiting for the database work or the reply, and nothing
waits in memory where a stopping process would lose it or a burst could pile it up:
gunicorn's threads bound how many run at once. What is not processed here (the
process stopped, an error) stays in the inbox, and the worker's cycle processes it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from flask import Blueprint, Response, current_app, request
from linebot.v3.webhook import SignatureValidator  # type: ignore[import-untyped]
from werkzeug.exceptions import RequestEntityTooLarge

from scheduler.clock import SystemClock
from scheduler.runtime import Runtime
from scheduler.store import inbox
from scheduler.store.db import transaction
from scheduler.web.app import clinics_of, log_facts, runtime_of
from scheduler.web.events import EventProcessor

log = logging.getLogger(__name__)

blueprint = Blueprint("line_webhook", __name__)
SIGNATURE_HEADER = "X-Line-Signature"
_clock = SystemClock()  # the web process runs on the real clock


@blueprint.post("/line/webhook")
def own_clinics_webhook() -> Response:
    return _webhook(runtime_of(current_app))


@blueprint.post("/line/webhook/<clinic>")
def line_webhook(clinic: str) -> Response:
    runtime = clinics_of(current_app).find(clinic)
    if runtime is None:
        return _plain("no such clinic", 404)
    return _webhook(runtime)


def _webhook(runtime: Runtime) -> Response:
    secret = runtime.settings.line_channel_secret
    facts = log_facts(runtime)
    if not secret:
        log.warning("LINE webhook refused: LINE_CHANNEL_SECRET is not set", extra=facts)
        return _plain("LINE_CHANNEL_SECRET is not set", 503)
    signature = request.headers.get(SIGNATURE_HEADER, "")
    raw = _body()
    if not _signed(secret, raw, signature):
        said = "no signature" if not signature else "the signature does not match"
        log.warning("LINE webhook refused: %s", said, extra=facts)
        return _plain("invalid signature", 400)
    try:
        events = inbox.events_in(json.loads(raw))
    except ValueError as e:  # not JSON, or not LINE's shape
        log.warning("LINE webhook refused: not LINE's JSON (%s)", _parse_problem(e), extra=facts)
        return _plain("malformed body", 400)
    with transaction(runtime.sessions) as session:
        ids = inbox.store(session, events, _clock.now())
    response = _plain("OK", 200)
    if ids:
        response.call_on_close(_processing(runtime.events, ids))
    return response


def _body() -> bytes:
    """The request's body; 413 if it is larger than MAX_CONTENT_LENGTH."""
    raw = request.get_data(cache=False)  # 413 at once when its Content-Length is larger
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and len(raw) >= limit:
        # A chunked body (no Content-Length): Werkzeug stops reading at the limit
        # without saying whether more was coming. LINE's bodies are far smaller.
        raise RequestEntityTooLarge()
    return raw


def _signed(secret: str, raw: bytes, signature: str) -> bool:
    if not signature:
        return False
    try:
        text = raw.decode("utf-8")  # the SDK signs text; LINE sends UTF-8 JSON
    except UnicodeDecodeError:
        return False
    valid: bool = SignatureValidator(secret).validate(text, signature)
    return valid


def _processing(processor: EventProcessor, ids: list[str]) -> Callable[[], None]:
    def process() -> None:
        try:
            now = _clock.now()
            for event_id in ids:
                processor.process(event_id, now)
        except Exception as e:  # the worker's cycle will process what is left
            log.error("LINE events not processed after the answer (%s)", type(e).__name__)

    return process


def _parse_problem(error: ValueError) -> str:
    if isinstance(error, inbox.MalformedBody):
        return str(error)
    if isinstance(error, json.JSONDecodeError):
        return f"line {error.lineno}, column {error.colno}: {error.msg}"
    return type(error).__name__


def _plain(text: str, status: int) -> Response:
    return Response(text, status, mimetype="text/plain")

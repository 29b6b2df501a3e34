"""The web application: one Flask app, its routes in blueprints, served by gunicorn
(`tayori serve`). Every response carries headers that keep browsers strict, and no
request is logged with what it carries (gunicorn's access log is off)."""

from __future__ import annotations

import logging
import os

from flask import Flask, Response, jsonify
from jinja2 import BytecodeCache
from jinja2.bccache import Bucket
from sqlalchemy.exc import SQLAlchemyError

from scheduler.clock import Clock, SystemClock
from scheduler.runtime import Clinics, Runtime, open_runtime
from scheduler.settings import Settings
from scheduler.store.db import reading
from scheduler.store.heartbeats import last_cycle, worker_problem

log = logging.getLogger(__name__)

# LINE's webhook bodies are a few kilobytes; nothing this process accepts is larger.
MAX_BODY_BYTES = 1024 * 1024
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    # Pages are server-rendered with their styles inline (a <style> element, no files,
    # no scripts) and post only to themselves.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


class _CompiledPages(BytecodeCache):
    """The pages' templates, compiled once per process rather than once per app: a
    test suite makes an app per test, and compiling the desk's templates costs
    each new app about a tenth of a second. A template whose source changed is
    compiled again (Jinja compares a checksum of the source)."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: Bucket) -> None:
        self._code[bucket.key] = bucket.bytecode_to_string()


_COMPILED_PAGES = _CompiledPages()


def create_app(
    settings: Settings, runtime: Runtime | None = None, clock: Clock | None = None
) -> Flask:
    app = Flask("scheduler.web")
    app.jinja_env.bytecode_cache = _COMPILED_PAGES
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["tayori"] = runtime or open_runtime(settings)
    app.extensions["tayori.clinics"] = Clinics(app.extensions["tayori"], os.environ)
    app.extensions["tayori.clock"] = clock or SystemClock()

    @app.after_request
    def strict_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if settings.public_url.startswith("https://"):
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        """200 while the database answers and a worker has completed a cycle in the
        last 5 minutes; 503 otherwise, saying which. A new installation whose worker
        has not run yet is unavailable too: nothing is being sent."""
        try:
            with reading(runtime_of(app).sessions) as session:
                last = last_cycle(session)
        except SQLAlchemyError as e:
            log.warning("health check: the database does not answer (%s)", type(e).__name__)
            return jsonify(status="unavailable", database="unreachable"), 503
        problem = worker_problem(last, clock_of(app).now())
        if problem is not None:
            return jsonify(status="unavailable", database="ok", worker=problem), 503
        return jsonify(status="ok", database="ok", worker="ok"), 200

    # Imported here: the blueprints reach the runtime through `runtime_of`, below.
    from scheduler.web import booking_link, desk, metrics, unsubscribe
    from scheduler.web.webhook import blueprint as line_webhook

    app.register_blueprint(line_webhook)
    app.register_blueprint(unsubscribe.blueprint)
    app.register_blueprint(booking_link.blueprint)
    app.register_blueprint(metrics.blueprint)
    desk.install(app, settings)
    if not settings.secret_key:
        log.info("unsubscribe links are off (TAYORI_PUBLIC_URL, TAYORI_SECRET_KEY unset)")
    return app


def runtime_of(app: Flask) -> Runtime:
    """The runtime of the installation's own clinic."""
    runtime: Runtime = app.extensions["tayori"]
    return runtime


def clinics_of(app: Flask) -> Clinics:
    """Every clinic's runtime, by slug."""
    clinics: Clinics = app.extensions["tayori.clinics"]
    return clinics


def log_facts(runtime: Runtime) -> dict[str, str]:
    """A log line's `extra=` (scheduler.logs): the clinic it is for."""
    return {"clinic": runtime.settings.clinic_slug}


def clock_of(app: Flask) -> Clock:
    clock: Clock = app.extensions["tayori.clock"]
    return clock

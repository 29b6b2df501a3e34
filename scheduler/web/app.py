"""The web application: one Flask app, its routes in blueprints, served by gunicorn
(`tayori serve`). Every response carries headers that keep browsers strict, and no
request is logged with what it carries (gunicorn's access log is off)."""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from scheduler.runtime import Runtime, open_runtime
from scheduler.settings import Settings

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


def create_app(settings: Settings, runtime: Runtime | None = None) -> Flask:
    app = Flask("scheduler.web")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["tayori"] = runtime or open_runtime(settings)

    @app.after_request
    def strict_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if settings.public_url.startswith("https://"):
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        """200 while the database answers, 503 when it does not."""
        try:
            with runtime_of(app).engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as e:
            log.warning("health check: the database does not answer (%s)", type(e).__name__)
            return jsonify(status="unavailable", database="unreachable"), 503
        return jsonify(status="ok", database="ok"), 200

    # Imported here: the blueprints reach the runtime through `runtime_of`, below.
    from scheduler.web import unsubscribe
    from scheduler.web.webhook import blueprint as line_webhook

    app.register_blueprint(line_webhook)
    app.register_blueprint(unsubscribe.blueprint)
    if not settings.secret_key:
        log.info("unsubscribe links are off (TAYORI_PUBLIC_URL, TAYORI_SECRET_KEY unset)")
    return app


def runtime_of(app: Flask) -> Runtime:
    runtime: Runtime = app.extensions["tayori"]
    return runtime


def log_facts() -> dict[str, str]:
    """A log line's `extra=` in a request (scheduler.logs): the clinic it is for."""
    return {"clinic": runtime_of(current_app).settings.clinic_slug}

"""The practitioner's desk: a Japanese web application behind a sign-in, served by
the web process, for the clinic's staff on a phone or the reception PC.

Where each clinic's desk lives: the installation's own clinic (the first, the one
`tayori serve` is configured for) at the root — the Today page at `/`, the sign-in
form at `/login` — and every other clinic under `/desk/<slug>/` (`/desk/<slug>/login`).
An account belongs to one clinic (emails are unique per clinic only), so the address
says which clinic a sign-in is for, and a session signed in for one clinic opens no
other clinic's desk.

The rules every page follows (this module, `before_request`):
- No desk without TAYORI_SECRET_KEY: the sessions are signed with a key derived from
  it. Without one every desk page says so (503), and the start-up log too.
- Sessions live in a signed cookie (Flask's), `HttpOnly`, `SameSite=Lax`, `Secure`
  when the installation's public URL is https, for 12 hours after the sign-in.
- Every POST carries the session's CSRF token (`csrf_token` in the form); one without
  it, or with another, is refused (400) before its view runs.
- Every page but the sign-in form needs a signed-in, enabled account of the clinic,
  whose password has not changed since the session's sign-in; otherwise it redirects
  to the clinic's `/login`.
- An account is an owner or staff (`Desk.is_owner`): the Accounts page is for owners
  (accounts.py answers staff with 403); every other page is for both.
- Pages are server-rendered, with their styles inline and no scripts (the web app's
  Content-Security-Policy allows none). The message editor alone loads a script, its
  own, for a live preview (messages.py sets its page's policy); it works without.
- Logs carry account ids, never emails, passwords, tokens or patients' details.
- A page that is not there (404), a method a page does not take (405) and a fault
  (500) answer with the desk's own Japanese page, with the navigation when signed in;
  a fault's page names nothing of it (the log has it).
- Staff read Japanese: the outbox's and the lint's English, the channels, states and
  dates are named through labels.py, and a named patient links to their page.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import (
    Blueprint,
    Flask,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
)
from flask.sessions import SessionMixin
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from scheduler.runtime import Runtime
from scheduler.settings import Settings
from scheduler.store.db import reading
from scheduler.store.desk import Role, active_user, session_stamp
from scheduler.web.app import clinics_of, log_facts, runtime_of

log = logging.getLogger(__name__)

blueprint = Blueprint("desk", __name__)

SESSION_LIFETIME = timedelta(hours=12)  # a working day at the reception PC
COOKIE = "tayori_desk"
CSRF_FIELD = "csrf_token"
# Views anyone may reach: the sign-in form itself.
PUBLIC = {"desk.login"}


def install(app: Flask, settings: Settings) -> None:
    """The desk's blueprint and session settings, on the web app."""
    if settings.secret_key:
        # A key of its own, derived: a desk session and an unsubscribe token (signed
        # with TAYORI_SECRET_KEY itself) can never pass for one another.
        app.secret_key = hmac.new(
            settings.secret_key.encode(), b"tayori desk sessions", hashlib.sha256
        ).hexdigest()
    else:
        log.warning("the desk is off: TAYORI_SECRET_KEY is not set (it signs the desk's sessions)")
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.public_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        # Not renewed at every request: a session ends 12 hours after its sign-in, and
        # no other page (the unsubscribe page, /healthz) ever sets the cookie.
        SESSION_REFRESH_EACH_REQUEST=False,
    )
    app.jinja_env.globals["csrf_field"] = CSRF_FIELD
    # Imported for their routes, which they add to the blueprint.
    from scheduler.web.desk import (  # noqa: F401
        accounts,
        auth,
        campaigns,
        messages,
        patients,
        results,
        today,
        upcoming,
    )

    app.register_blueprint(blueprint)
    # An address no route matches belongs to no blueprint: the app's handlers say so
    # in the desk's words when the address is the desk's (see `_unrouted`).
    app.register_error_handler(NotFound, _unrouted)
    app.register_error_handler(MethodNotAllowed, _unrouted)


def desk_route(rule: str, methods: tuple[str, ...] = ("GET",)) -> Callable[[Any], Any]:
    """A desk page at `rule` for the installation's own clinic and at
    `/desk/<clinic>rule` for any clinic; its view takes `clinic` (None: the own)."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        blueprint.add_url_rule(
            rule, view_func=view, methods=list(methods), defaults={"clinic": None}
        )
        blueprint.add_url_rule(f"/desk/<clinic>{rule}", view_func=view, methods=list(methods))
        return view

    return decorate


@dataclass(frozen=True)
class Desk:
    """The clinic a request is for, where its desk lives, and who is signed in."""

    runtime: Runtime
    base: str  # "" or "/desk/<slug>": prefix of every link and form of the desk
    user_id: int | None = None
    user_email: str | None = None
    user_role: str | None = None  # store.desk.Role

    @property
    def is_owner(self) -> bool:
        return self.user_role == Role.OWNER

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


def desk() -> Desk:
    """This request's desk (set by `guard`)."""
    found: Desk = g.desk
    return found


@blueprint.before_request
def guard() -> ResponseReturnValue | None:
    slug = (request.view_args or {}).get("clinic")
    runtime = runtime_of(current_app) if slug is None else clinics_of(current_app).find(slug)
    if runtime is None:
        return render_template("desk/not_found.html"), 404
    g.desk = Desk(runtime, "" if slug is None else f"/desk/{slug}")
    if not current_app.secret_key:
        return render_template("desk/off.html", clinic=runtime.settings.clinic), 503
    if request.method == "POST" and not _csrf_ok():
        log.warning("desk: a form without its CSRF token was refused", extra=log_facts(runtime))
        return render_template("desk/refused.html", desk=desk()), 400
    user = _signed_in(runtime)
    if user is not None:
        g.desk = Desk(runtime, g.desk.base, *user)
    elif request.endpoint not in PUBLIC:
        return redirect(g.desk.url("/login"))
    return None


def open_session(cookie: SessionMixin, clinic_id: int, user_id: int, stamp: str) -> None:
    """What a sign-in leaves in the session, which `_signed_in` reads back: a new
    session (one planted before the sign-in is worth nothing after), kept when the
    browser closes, for this clinic and account, with the account's password stamp."""
    cookie.clear()
    cookie.permanent = True
    cookie.update(clinic=clinic_id, user=user_id, stamp=stamp)


def _signed_in(runtime: Runtime) -> tuple[int, str, str] | None:
    """The account this request's session is signed in as, for this clinic."""
    user_id = session.get("user")
    if not isinstance(user_id, int) or session.get("clinic") != runtime.settings.clinic_id:
        return None
    with reading(runtime.sessions) as db:
        user = active_user(db, user_id)
        # A session from before the account's password changed is over.
        if user is None or session.get("stamp") != session_stamp(user):
            return None
        return user.id, user.email, user.role


def csrf_token() -> str:
    """The session's CSRF token, made on first use (the sign-in form needs one before
    anyone is signed in)."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def _csrf_ok() -> bool:
    expected = session.get("csrf")
    sent = request.form.get(CSRF_FIELD, "")
    return isinstance(expected, str) and hmac.compare_digest(sent.encode(), expected.encode())


# -- error pages: Japanese, in the desk's layout, naming no internals ----------------

ERROR_PAGES = {
    404: ("ページが見つかりません", "アドレスをお確かめください。消された記録かもしれません。"),
    405: ("この操作はできません", "このページは、画面のボタンやリンクからお使いください。"),
    500: (
        "うまく表示できませんでした",
        "しばらくしてから、もう一度お試しください。続くときは管理者にお知らせください。",
    ),
}


@blueprint.errorhandler(NotFound)
@blueprint.errorhandler(MethodNotAllowed)
def _desk_error(error: HTTPException) -> ResponseReturnValue:
    return _error_page(error.code or 404)


@blueprint.errorhandler(500)
def _desk_failure(error: HTTPException) -> ResponseReturnValue:
    # What went wrong is in the log (Flask logs the exception); the page says nothing of it.
    return _error_page(500)


def _error_page(code: int) -> ResponseReturnValue:
    here: Desk | None = g.get("desk")
    if here is None:
        return render_template("desk/not_found.html"), code
    title, text = ERROR_PAGES[code]
    # `csrf_token` given here: an address no route takes is outside the blueprint,
    # whose context processor gives it to the desk's other pages.
    page = render_template(
        "desk/error.html", desk=here, title=title, text=text, csrf_token=csrf_token
    )
    return page, code


def _unrouted(error: HTTPException) -> ResponseReturnValue:
    """A 404 or 405 of an address no route of the app takes: a desk page when the
    address is the desk's (its own clinic's is the root, so any unknown address
    outside another blueprint's), for the clinic it names and whoever is signed in
    there; any other blueprint's own 404 (an abort in its view) is left as it is."""
    if request.blueprint is not None and request.blueprint != blueprint.name:
        return error
    if isinstance(error, MethodNotAllowed) and not _desk_address(error):
        return error
    parts = request.path.split("/")
    slug = parts[2] if len(parts) > 2 and parts[1] == "desk" else None
    runtime = runtime_of(current_app) if slug is None else clinics_of(current_app).find(slug)
    if runtime is None:
        return render_template("desk/not_found.html"), 404
    here = Desk(runtime, "" if slug is None else f"/desk/{slug}")
    user = _signed_in(runtime) if current_app.secret_key else None
    g.desk = here if user is None else Desk(runtime, here.base, *user)
    return _error_page(error.code or 404)


def _desk_address(error: MethodNotAllowed) -> bool:
    """Whether the address a 405 refused is a desk page's."""
    adapter = current_app.url_map.bind_to_environ(request.environ)
    try:
        endpoint, _ = adapter.match(method=next(iter(error.valid_methods or ["GET"])))
    except HTTPException:
        return False
    return isinstance(endpoint, str) and endpoint.startswith(f"{blueprint.name}.")


@blueprint.context_processor
def _template_helpers() -> dict[str, Any]:
    return {"csrf_token": csrf_token}

"""Signing in to the desk and out of it."""

from __future__ import annotations

import logging

from flask import current_app, flash, redirect, render_template, request, session
from flask.typing import ResponseReturnValue

from scheduler.store.db import transaction
from scheduler.store.desk import FAILURE_WINDOW, SignIn, audit, sign_in
from scheduler.web.app import clock_of, log_facts
from scheduler.web.desk import csrf_token, desk, desk_route, open_session

log = logging.getLogger(__name__)

WRONG = "メールアドレスまたはパスワードが正しくありません。"
LOCKED = (
    "ログインの失敗が続いたため、しばらくログインできません。"
    f"{FAILURE_WINDOW.seconds // 60}分ほどたってから、もう一度お試しください。"
)


@desk_route("/login", methods=("GET", "POST"))
def login(clinic: str | None) -> ResponseReturnValue:
    here = desk()
    if request.method == "GET":
        if here.user_id is not None:
            return redirect(here.url("/"))
        csrf_token()  # the form's token, in the session before anyone signs in
        return render_template("desk/login.html", desk=here, email="", problem=None)
    email = request.form.get("email", "")
    password = request.form.get("password", "")
    now = clock_of(current_app).now()
    with transaction(here.runtime.sessions) as db:
        outcome = sign_in(db, email, password, request.remote_addr or "", now)
        if outcome.result is SignIn.OK and outcome.user_id is not None:
            audit(db, outcome.user_id, "sign_in", "signed in", now)
    facts = log_facts(here.runtime)
    if outcome.result is SignIn.LOCKED:
        log.warning("desk sign-in refused: too many failures for one account lately", extra=facts)
        page = render_template("desk/login.html", desk=here, email=email, problem=LOCKED)
        return page, 429, {"Retry-After": str(int(FAILURE_WINDOW.total_seconds()))}
    if outcome.result is SignIn.WRONG:
        log.info("desk sign-in refused: wrong email or password", extra=facts)
        return render_template("desk/login.html", desk=here, email=email, problem=WRONG), 200
    log.info("desk: account %s signed in", outcome.user_id, extra=facts)
    assert outcome.user_id is not None and outcome.stamp is not None  # SignIn.OK has both
    open_session(session, here.settings.clinic_id, outcome.user_id, outcome.stamp)
    csrf_token()  # and a new CSRF token with the new session
    return redirect(here.url("/"))


@desk_route("/logout", methods=("POST",))
def logout(clinic: str | None) -> ResponseReturnValue:
    here = desk()
    log.info("desk: account %s signed out", here.user_id, extra=log_facts(here.runtime))
    session.clear()
    flash("ログアウトしました。", "done")
    return redirect(here.url("/login"))

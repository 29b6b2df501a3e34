"""The Accounts page (owners only): the clinic's desk accounts, adding one (with a
password the owner types or one generated and shown once), disabling or enabling
one, making one an owner or staff; and the password page, where every account
changes its own password. Every change is recorded in the desk's audit log.

The rules that keep a clinic manageable live in store.desk (`set_enabled`,
`set_role`): an owner cannot disable themself, and the clinic's last enabled owner
is never disabled nor made staff.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import current_app, flash, redirect, render_template, request, session
from flask.typing import ResponseReturnValue

from scheduler.messages.context import japanese_datetime
from scheduler.store.db import reading, transaction
from scheduler.store.desk import (
    FAILURE_WINDOW,
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    AccountError,
    Change,
    PasswordChange,
    Role,
    accounts,
    active_user,
    add_user,
    audit,
    change_password,
    check_email,
    find_user,
    generated_password,
    session_stamp,
    set_enabled,
    set_role,
)
from scheduler.web.app import clock_of, log_facts
from scheduler.web.desk import Desk, desk, desk_route

log = logging.getLogger(__name__)

ROLES = {Role.OWNER: "管理者", Role.STAFF: "スタッフ"}
TOO_SHORT = f"パスワードは{MIN_PASSWORD_LENGTH}文字以上にしてください。"
TOO_LONG = f"パスワードは{MAX_PASSWORD_LENGTH}文字以内にしてください。"
LOCKED = (
    "パスワードの入力の失敗が続いたため、しばらく変更できません。"
    f"{FAILURE_WINDOW.seconds // 60}分ほどたってから、もう一度お試しください。"
)
REFUSED = {
    Change.NOT_FOUND: "このアカウントは見つかりませんでした。",
    Change.NOT_OWNER: "アカウントの管理は、管理者だけができます。",
    Change.YOURSELF: "自分のアカウントは無効にできません。",
    Change.LAST_OWNER: (
        "有効な管理者がいなくなるため、変更できません。先に別のアカウントを管理者にしてください。"
    ),
}


@dataclass(frozen=True)
class AccountRow:
    id: int
    email: str
    role: str  # "owner" or "staff"
    role_label: str
    enabled: bool
    created: str
    disabled: str | None
    last_sign_in: str | None
    yourself: bool


@desk_route("/accounts")
def account_list(clinic: str | None) -> ResponseReturnValue:
    here = desk()
    if not here.is_owner:
        return _owners_only(here)
    return _page(here)


@desk_route("/accounts", methods=("POST",))
def add_account(clinic: str | None) -> ResponseReturnValue:
    """A new account. With 「自動で作成」 the password is generated and shown on the
    answer itself, once: it is in no redirect, flash or log."""
    here = desk()
    assert here.user_id is not None  # guard: every page but the sign-in needs one
    if not here.is_owner:
        return _owners_only(here)
    email = request.form.get("email", "")
    role = Role.OWNER if request.form.get("role") == Role.OWNER else Role.STAFF
    generate = request.form.get("password_choice") == "generate"
    password = generated_password() if generate else request.form.get("password", "")
    form = {"email": email, "role": role, "generate": generate}
    try:
        address = check_email(email)
    except AccountError:
        return _page(here, form, problem="メールアドレスの形が正しくありません。"), 400
    if len(password) < MIN_PASSWORD_LENGTH:
        return _page(here, form, problem=TOO_SHORT), 400
    if len(password) > MAX_PASSWORD_LENGTH:
        return _page(here, form, problem=TOO_LONG), 400
    now = clock_of(current_app).now()
    with transaction(here.runtime.sessions) as db:
        if find_user(db, address) is not None:
            added = None
        else:
            added = add_user(db, address, password, now, role)
            audit(db, here.user_id, "account_add", f"account {added.id} added as {role}", now)
    if added is None:
        problem = "このメールアドレスのアカウントはすでにあります。"
        return _page(here, form, problem=problem), 400
    log.info(
        "desk: account %s added account %s (%s)",
        here.user_id,
        added.id,
        role,
        extra=log_facts(here.runtime),
    )
    done = f"{address} を{ROLES[role]}として追加しました。"
    if not generate:
        flash(done, "done")
        return redirect(here.url("/accounts"))
    # Shown once, on this answer: neither the browser nor a proxy may keep a copy.
    page = _page(here, done=done, shown_once=(address, password))
    return page, 200, {"Cache-Control": "no-store"}


@desk_route("/accounts/<account_id>/disable", methods=("POST",))
def disable_account(clinic: str | None, account_id: str) -> ResponseReturnValue:
    return _enable(account_id, False)


@desk_route("/accounts/<account_id>/enable", methods=("POST",))
def enable_account(clinic: str | None, account_id: str) -> ResponseReturnValue:
    return _enable(account_id, True)


def _enable(account_id: str, enabled: bool) -> ResponseReturnValue:
    here = desk()
    assert here.user_id is not None
    if not here.is_owner:
        return _owners_only(here)
    target = _id(account_id)
    now = clock_of(current_app).now()
    with transaction(here.runtime.sessions) as db:
        outcome = (
            Change.NOT_FOUND
            if target is None
            else set_enabled(db, here.user_id, target, enabled, now)
        )
        if outcome is Change.DONE:
            action = "account_enable" if enabled else "account_disable"
            verb = "enabled" if enabled else "disabled"
            audit(db, here.user_id, action, f"account {target} {verb}", now)
    if outcome is Change.DONE:
        log.info(
            "desk: account %s %s account %s",
            here.user_id,
            "enabled" if enabled else "disabled",
            target,
            extra=log_facts(here.runtime),
        )
        flash("アカウントを有効にしました。" if enabled else "アカウントを無効にしました。", "done")
    elif outcome is Change.UNCHANGED:
        flash("このアカウントはすでにその状態です。", "done")
    else:
        flash(REFUSED[outcome], "problem")
    return redirect(here.url("/accounts"))


@desk_route("/accounts/<account_id>/role", methods=("POST",))
def change_role(clinic: str | None, account_id: str) -> ResponseReturnValue:
    here = desk()
    assert here.user_id is not None
    if not here.is_owner:
        return _owners_only(here)
    target = _id(account_id)
    wanted = request.form.get("role", "")
    if target is None or wanted not in (Role.OWNER, Role.STAFF):
        flash(REFUSED[Change.NOT_FOUND], "problem")
        return redirect(here.url("/accounts"))
    role = Role(wanted)
    now = clock_of(current_app).now()
    with transaction(here.runtime.sessions) as db:
        outcome = set_role(db, here.user_id, target, role)
        if outcome is Change.DONE:
            audit(db, here.user_id, "account_role", f"account {target} is now {role}", now)
    if outcome is Change.DONE:
        log.info(
            "desk: account %s made account %s %s",
            here.user_id,
            target,
            role,
            extra=log_facts(here.runtime),
        )
        flash(f"{ROLES[role]}に変更しました。", "done")
        if target == here.user_id:
            # An owner who made themself staff may no longer open this page.
            return redirect(here.url("/"))
    elif outcome is Change.UNCHANGED:
        flash(f"このアカウントはすでに{ROLES[role]}です。", "done")
    else:
        flash(REFUSED[outcome], "problem")
    return redirect(here.url("/accounts"))


@desk_route("/password", methods=("GET", "POST"))
def password(clinic: str | None) -> ResponseReturnValue:
    """The signed-in account's own password: the current one, and the new one twice."""
    here = desk()
    assert here.user_id is not None
    if request.method == "GET":
        return _password_page(here, None)
    current = request.form.get("current", "")
    new = request.form.get("new", "")
    problem = None
    if len(new) < MIN_PASSWORD_LENGTH:
        problem = TOO_SHORT
    elif len(new) > MAX_PASSWORD_LENGTH:
        problem = TOO_LONG
    elif new != request.form.get("again", ""):
        problem = "新しいパスワードが、確認のために入力したものと違います。"
    elif new == current:
        problem = "新しいパスワードが、いまのパスワードと同じです。"
    if problem is not None:
        return _password_page(here, problem), 400
    now = clock_of(current_app).now()
    with transaction(here.runtime.sessions) as db:
        outcome = change_password(db, here.user_id, current, new, request.remote_addr or "", now)
        if outcome is PasswordChange.DONE:
            detail = f"account {here.user_id} changed its own password"
            audit(db, here.user_id, "password_change", detail, now)
            changed = active_user(db, here.user_id)
            assert changed is not None
            # This session goes on; the account's others end at their next request.
            session["stamp"] = session_stamp(changed)
    if outcome is PasswordChange.LOCKED:
        log.warning(
            "desk: account %s refused a password change: too many wrong passwords lately",
            here.user_id,
            extra=log_facts(here.runtime),
        )
        retry = {"Retry-After": str(int(FAILURE_WINDOW.total_seconds()))}
        return _password_page(here, LOCKED), 429, retry
    if outcome is PasswordChange.WRONG:
        return _password_page(here, "いまのパスワードが正しくありません。"), 400
    log.info("desk: account %s changed its password", here.user_id, extra=log_facts(here.runtime))
    flash("パスワードを変更しました。次のログインから、新しいパスワードを使ってください。", "done")
    return redirect(here.url("/"))


def _password_page(here: Desk, problem: str | None) -> str:
    return render_template(
        "desk/accounts_password.html",
        desk=here,
        problem=problem,
        min_length=MIN_PASSWORD_LENGTH,
    )


def _page(
    here: Desk,
    form: dict[str, object] | None = None,
    *,
    problem: str | None = None,
    done: str | None = None,
    shown_once: tuple[str, str] | None = None,
) -> str:
    tz = here.settings.timezone
    with reading(here.runtime.sessions) as db:
        rows = [
            AccountRow(
                id=a.id,
                email=a.email,
                role=a.role,
                role_label=ROLES[a.role],
                enabled=a.disabled_at is None,
                created=japanese_datetime(a.created_at, tz),
                disabled=japanese_datetime(a.disabled_at, tz) if a.disabled_at else None,
                last_sign_in=japanese_datetime(a.last_sign_in, tz) if a.last_sign_in else None,
                yourself=a.id == here.user_id,
            )
            for a in accounts(db)
        ]
    return render_template(
        "desk/accounts.html",
        desk=here,
        accounts=rows,
        form=form or {"email": "", "role": Role.STAFF, "generate": False},
        problem=problem,
        done=done,
        shown_once=shown_once,
        min_length=MIN_PASSWORD_LENGTH,
    )


def _owners_only(here: Desk) -> ResponseReturnValue:
    log.info(
        "desk: account %s (staff) was refused the accounts page",
        here.user_id,
        extra=log_facts(here.runtime),
    )
    return render_template("desk/accounts_owners_only.html", desk=here), 403


def _id(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) < 19 else None

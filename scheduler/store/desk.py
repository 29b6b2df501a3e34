"""The desk's accounts, its audit log and its sign-in rate limit.

A clinic's staff sign in to the desk (the web application) with an email and a
password. Only an Argon2id hash of the password is kept (argon2-cffi's defaults, the
low-memory profile of RFC 9106); a hash made with weaker parameters than today's is
replaced at the next sign-in. Failed sign-ins are counted per email and address in
the database, so every web process sees the same count.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from scheduler.store.clinics import clinic_of
from scheduler.store.models import DeskAudit, DeskSignInFailure, DeskUser

MIN_PASSWORD_LENGTH = 12
# Hashing is the costly part of a sign-in: a password of megabytes would make each
# attempt cost more than it should. No real passphrase is longer.
MAX_PASSWORD_LENGTH = 1024
# At most this many failed sign-ins per email and address within the window; the
# next attempts are refused, even with the right password, until the oldest of them
# leaves the window.
FAILURES_ALLOWED = 5
FAILURE_WINDOW = timedelta(minutes=15)

_hasher = PasswordHasher()


class AccountError(ValueError):
    """A new account or password the desk cannot accept; the message says why."""


class Role(StrEnum):
    """What an account may do: an owner manages the clinic's accounts as well."""

    OWNER = "owner"
    STAFF = "staff"


def normalized_email(email: str) -> str:
    """The sign-in name as stored and compared: trimmed, lowercased (people type
    their address with a capital now and then)."""
    return email.strip().lower()


def check_email(email: str) -> str:
    normalized = normalized_email(email)
    local, at, domain = normalized.partition("@")
    if (
        not at
        or not local
        or "." not in domain
        or len(normalized) > 320
        or any(c.isspace() or not c.isprintable() for c in normalized)
    ):
        raise AccountError(f"{email!r} is not an email address")
    return normalized


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(
            f"the password is too short: at least {MIN_PASSWORD_LENGTH} characters, please "
            "(a few unrelated words make a long one that is easy to remember)"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(f"the password is too long: at most {MAX_PASSWORD_LENGTH} characters")


def add_user(
    session: Session, email: str, password: str, now: datetime, role: Role | None = None
) -> DeskUser:
    """A new account of the session's clinic. Without a `role`, the clinic's first
    account is its owner (someone must be able to manage the others) and any later
    one is staff."""
    address = check_email(email)
    check_password(password)
    if find_user(session, address) is not None:
        raise AccountError(f"this clinic has an account for {address} already")
    if role is None:
        role = Role.STAFF if _has_accounts(session) else Role.OWNER
    user = DeskUser(email=address, password_hash=_hasher.hash(password), role=role, created_at=now)
    session.add(user)
    session.flush()
    return user


def _has_accounts(session: Session) -> bool:
    found = session.scalar(
        select(DeskUser.id).where(DeskUser.clinic_id == clinic_of(session)).limit(1)
    )
    return found is not None


def find_user(session: Session, email: str) -> DeskUser | None:
    return session.scalar(
        select(DeskUser).where(
            DeskUser.clinic_id == clinic_of(session), DeskUser.email == normalized_email(email)
        )
    )


def session_stamp(user: DeskUser) -> str:
    """A mark of the account's password as it is now, kept in each desk session at its
    sign-in: once the password changes, the account's other sessions no longer match
    and end at their next request. (Of the hash, whose salt is new at every change.)"""
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def active_user(session: Session, user_id: int) -> DeskUser | None:
    """The account a desk session names, while it belongs to the session's clinic and
    is not disabled (disabling an account ends its sessions at their next request)."""
    user = session.get(DeskUser, user_id)
    if user is None or user.clinic_id != clinic_of(session) or user.disabled_at is not None:
        return None
    return user


class SignIn(StrEnum):
    OK = "ok"
    WRONG = "wrong"  # no such account, a disabled one, or the wrong password: one answer
    LOCKED = "locked"  # too many failures lately


@dataclass(frozen=True)
class SignInOutcome:
    result: SignIn
    user_id: int | None = None
    stamp: str | None = None  # the account's `session_stamp`, for its new session


def sign_in(
    session: Session, email: str, password: str, address: str, now: datetime
) -> SignInOutcome:
    """Check an email and password typed on the sign-in form from `address`."""
    key = _failure_key(email, address)
    if failures(session, key, now) >= FAILURES_ALLOWED:
        return SignInOutcome(SignIn.LOCKED)
    user = find_user(session, email)
    if user is None or user.disabled_at is not None:
        # A made-up hash is checked all the same, so that the time an answer takes
        # does not tell which addresses have an account.
        _verify(_dummy_hash(), password)
        return _failed(session, key, now)
    if not _verify(user.password_hash, password):
        return _failed(session, key, now)
    session.execute(
        delete(DeskSignInFailure).where(
            DeskSignInFailure.clinic_id == clinic_of(session), DeskSignInFailure.key == key
        )
    )
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return SignInOutcome(SignIn.OK, user.id, session_stamp(user))


def _failed(session: Session, key: str, now: datetime) -> SignInOutcome:
    session.add(DeskSignInFailure(key=key, at=now))
    # Failures older than the window count for nothing: they go, whoever's they were.
    session.execute(
        delete(DeskSignInFailure).where(
            DeskSignInFailure.clinic_id == clinic_of(session),
            DeskSignInFailure.at <= now - FAILURE_WINDOW,
        )
    )
    return SignInOutcome(SignIn.WRONG)


def failures(session: Session, key: str, now: datetime) -> int:
    return (
        session.scalar(
            select(func.count()).where(
                DeskSignInFailure.clinic_id == clinic_of(session),
                DeskSignInFailure.key == key,
                DeskSignInFailure.at > now - FAILURE_WINDOW,
            )
        )
        or 0
    )


def _failure_key(email: str, address: str) -> str:
    return hashlib.sha256(f"{normalized_email(email)}\n{address}".encode()).hexdigest()


def _verify(password_hash: str, password: str) -> bool:
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@cache
def _dummy_hash() -> str:
    return _hasher.hash("no account has this password")


def audit(session: Session, user_id: int, action: str, detail: str, now: datetime) -> None:
    """Record a change made in the desk. `detail` names rows by their ids only."""
    session.add(DeskAudit(user_id=user_id, action=action, detail=detail, at=now))


# --- managing a clinic's accounts: the desk's Accounts and password pages ---------

# Generated passwords: no look-alikes (0/O, 1/l/I), in groups of four to read out.
_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"


def generated_password() -> str:
    """A new random password for an owner to hand over (16 characters, 80 bits)."""
    groups = ("".join(secrets.choice(_ALPHABET) for _ in range(4)) for _ in range(4))
    return "-".join(groups)


@dataclass(frozen=True)
class Account:
    id: int
    email: str
    role: Role
    created_at: datetime
    disabled_at: datetime | None
    last_sign_in: datetime | None  # from the audit log's sign-ins, if any


def accounts(session: Session) -> list[Account]:
    """The clinic's accounts, enabled ones first, each by email."""
    signed_in = session.execute(
        select(DeskAudit.user_id, func.max(DeskAudit.at))
        .where(DeskAudit.clinic_id == clinic_of(session), DeskAudit.action == "sign_in")
        .group_by(DeskAudit.user_id)
    )
    last = {user_id: at for user_id, at in signed_in}
    users = session.scalars(
        select(DeskUser)
        .where(DeskUser.clinic_id == clinic_of(session))
        .order_by(DeskUser.disabled_at.is_not(None), DeskUser.email)
    )
    return [
        Account(u.id, u.email, Role(u.role), u.created_at, u.disabled_at, last.get(u.id))
        for u in users
    ]


class Change(StrEnum):
    """What came of a change asked for on the Accounts page."""

    DONE = "done"
    UNCHANGED = "unchanged"  # it was so already
    NOT_FOUND = "not_found"  # no such account in this clinic
    NOT_OWNER = "not_owner"  # the one asking is no enabled owner (any more)
    YOURSELF = "yourself"  # an owner cannot disable their own account
    LAST_OWNER = "last_owner"  # the clinic would be left without an enabled owner


def set_enabled(
    session: Session, actor_id: int, account_id: int, enabled: bool, now: datetime
) -> Change:
    """Disable an account (its sessions end at their next request) or enable it again.
    Never the actor's own, nor the clinic's last enabled owner."""
    owners = _enabled_owners(session)
    if actor_id not in owners:
        return Change.NOT_OWNER
    user = _account(session, account_id)
    if user is None:
        return Change.NOT_FOUND
    if enabled:
        if user.disabled_at is None:
            return Change.UNCHANGED
        user.disabled_at = None
        return Change.DONE
    if user.disabled_at is not None:
        return Change.UNCHANGED
    if user.id == actor_id:
        return Change.YOURSELF
    if owners == [user.id]:
        return Change.LAST_OWNER
    user.disabled_at = now
    return Change.DONE


def set_role(session: Session, actor_id: int, account_id: int, role: Role) -> Change:
    """Make an account an owner or staff; the clinic's last enabled owner stays one."""
    owners = _enabled_owners(session)
    if actor_id not in owners:
        return Change.NOT_OWNER
    user = _account(session, account_id)
    if user is None:
        return Change.NOT_FOUND
    if user.role == role:
        return Change.UNCHANGED
    if owners == [user.id]:
        return Change.LAST_OWNER
    user.role = role
    return Change.DONE


class PasswordChange(StrEnum):
    DONE = "done"
    WRONG = "wrong"  # the current password given is not the account's
    LOCKED = "locked"  # too many wrong ones lately, as for signing in


def change_password(
    session: Session, user_id: int, current: str, new: str, address: str, now: datetime
) -> PasswordChange:
    """Replace an account's password, given its current one. A wrong current password
    counts as a failed sign-in of the account from `address`: a session left open is
    no way to guess the password faster than the sign-in form allows. Raises
    AccountError for a new password the desk cannot accept."""
    user = active_user(session, user_id)
    if user is None:
        return PasswordChange.WRONG
    key = _failure_key(user.email, address)
    if failures(session, key, now) >= FAILURES_ALLOWED:
        return PasswordChange.LOCKED
    if not _verify(user.password_hash, current):
        _failed(session, key, now)
        return PasswordChange.WRONG
    check_password(new)
    user.password_hash = _hasher.hash(new)
    return PasswordChange.DONE


def _enabled_owners(session: Session) -> list[int]:
    """The clinic's enabled owners, their rows locked until the transaction ends
    (PostgreSQL; SQLite's write transactions run one at a time anyway): two owners
    disabling each other at once cannot leave the clinic with none."""
    return list(
        session.scalars(
            select(DeskUser.id)
            .where(
                DeskUser.clinic_id == clinic_of(session),
                DeskUser.role == Role.OWNER,
                DeskUser.disabled_at.is_(None),
            )
            .order_by(DeskUser.id)
            .with_for_update()
        )
    )


def _account(session: Session, account_id: int) -> DeskUser | None:
    user = session.get(DeskUser, account_id)
    return user if user is not None and user.clinic_id == clinic_of(session) else None

"""The desk's accounts, its audit log and its sign-in rate limit.

A clinic's staff sign in to the desk (the web application) with an email and a
password. Only an Argon2id hash of the password is kept (argon2-cffi's defaults, the
low-memory profile of RFC 9106); a hash made with weaker parameters than today's is
replaced at the next sign-in. Failed sign-ins are counted per email and address in
the database, so every web process sees the same count.
"""

from __future__ import annotations

import hashlib
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


def add_user(session: Session, email: str, password: str, now: datetime) -> DeskUser:
    """A new staff account of the session's clinic."""
    address = check_email(email)
    check_password(password)
    if find_user(session, address) is not None:
        raise AccountError(f"this clinic has an account for {address} already")
    user = DeskUser(email=address, password_hash=_hasher.hash(password), created_at=now)
    session.add(user)
    session.flush()
    return user


def find_user(session: Session, email: str) -> DeskUser | None:
    return session.scalar(
        select(DeskUser).where(
            DeskUser.clinic_id == clinic_of(session), DeskUser.email == normalized_email(email)
        )
    )


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
    return SignInOutcome(SignIn.OK, user.id)


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

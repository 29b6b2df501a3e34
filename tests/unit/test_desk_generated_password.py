"""The passwords the desk generates for a new account: long enough for the desk's
rule, easy to read out, and never the same twice."""

from __future__ import annotations

import re

from scheduler.store.desk import MIN_PASSWORD_LENGTH, check_password, generated_password


def test_a_generated_password_passes_the_desks_own_rule() -> None:
    password = generated_password()
    check_password(password)
    assert len(password) >= MIN_PASSWORD_LENGTH


def test_a_generated_password_is_four_groups_of_four_without_look_alikes() -> None:
    for _ in range(200):
        password = generated_password()
        assert re.fullmatch(r"[a-z2-9]{4}(-[a-z2-9]{4}){3}", password)
        assert not set(password) & set("01loIO")


def test_generated_passwords_differ() -> None:
    assert len({generated_password() for _ in range(100)}) == 100

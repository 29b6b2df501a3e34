"""Booking-link tokens: they name the clinic, the message and which of the clinic's
booking URLs, never a URL; only the installation's key makes one that reads back,
and no other token of the installation passes for one."""

from __future__ import annotations

import pytest

from scheduler.core.booking_links import (
    BookingTarget,
    booking_link,
    booking_token,
    read_booking_token,
)
from scheduler.core.domain import ConsentKind
from scheduler.core.signed_tokens import InvalidToken
from scheduler.core.unsubscribe import unsubscribe_token
from scheduler.store.models import new_delivery_id

KEY = "a-long-random-secret-key-for-tests"
CLINIC = "sakura-seikotsu"


@pytest.mark.parametrize("target", list(BookingTarget))
def test_a_token_reads_back_as_its_clinic_message_and_target(target: BookingTarget) -> None:
    delivery = new_delivery_id()
    token = booking_token(KEY, CLINIC, delivery, target)
    assert read_booking_token(KEY, token) == (CLINIC, delivery, target)


def test_the_link_is_the_public_url_and_the_token() -> None:
    delivery = new_delivery_id()
    link = booking_link("https://tayori.example/", KEY, CLINIC, delivery, BookingTarget.LINE)
    token = booking_token(KEY, CLINIC, delivery, BookingTarget.LINE)
    assert link == f"https://tayori.example/r/{token}"


def _tampered(token: str) -> list[str]:
    payload, signature = token.split(".")
    flipped = ("B" if payload[0] == "A" else "A") + payload[1:]
    return [f"{flipped}.{signature}", f"{payload}.{signature[:-1]}", payload, f"{token}=", ""]


def test_a_token_changed_in_any_way_is_refused() -> None:
    token = booking_token(KEY, CLINIC, new_delivery_id(), BookingTarget.LINE)
    for bad in _tampered(token):
        with pytest.raises(InvalidToken):
            read_booking_token(KEY, bad)


def test_a_token_made_with_another_key_is_refused() -> None:
    token = booking_token("another-key-entirely", CLINIC, new_delivery_id(), BookingTarget.WEB)
    with pytest.raises(InvalidToken):
        read_booking_token(KEY, token)


def test_an_unsubscribe_token_does_not_pass_for_a_booking_token() -> None:
    token = unsubscribe_token(
        KEY, CLINIC, "0f1e2d3c4b5a69788796a5b4c3d2e1f0", ConsentKind.REMINDERS
    )
    with pytest.raises(InvalidToken):
        read_booking_token(KEY, token)


def test_without_a_key_no_token_is_made_or_read() -> None:
    with pytest.raises(ValueError, match="TAYORI_SECRET_KEY"):
        booking_token("", CLINIC, new_delivery_id(), BookingTarget.LINE)
    token = booking_token(KEY, CLINIC, new_delivery_id(), BookingTarget.LINE)
    with pytest.raises(ValueError):
        read_booking_token("", token)

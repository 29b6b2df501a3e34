"""One-click unsubscribe tokens: they carry the patient and the kind of message, and
only the installation's secret key makes one that reads back."""

from __future__ import annotations

import re

import pytest

from scheduler.core.unsubscribe import (
    InvalidToken,
    read_unsubscribe_token,
    unsubscribe_token,
    unsubscribe_url,
)

KEY = "a-long-random-secret-key-for-tests"


@pytest.mark.parametrize(
    ("patient_id", "kind"),
    [(1, "reminders"), (42, "newsletter"), (9_876_543_210, "reminders")],
)
def test_a_token_reads_back_as_its_patient_and_kind(patient_id: int, kind: str) -> None:
    token = unsubscribe_token(KEY, patient_id, kind)
    assert read_unsubscribe_token(KEY, token) == (patient_id, kind)


def test_a_token_fits_in_a_url_path_unchanged() -> None:
    token = unsubscribe_token(KEY, 42, "reminders")
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", token)


def test_the_url_is_the_public_url_with_the_token() -> None:
    url = unsubscribe_url("https://tayori.example.jp", KEY, 42, "reminders")
    assert url == f"https://tayori.example.jp/unsubscribe/{unsubscribe_token(KEY, 42, 'reminders')}"


def test_tokens_differ_by_patient_and_by_kind() -> None:
    tokens = {
        unsubscribe_token(KEY, 1, "reminders"),
        unsubscribe_token(KEY, 2, "reminders"),
        unsubscribe_token(KEY, 1, "newsletter"),
    }
    assert len(tokens) == 3


def _flip(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


def _tampered() -> list[pytest.ParameterSet]:
    token = unsubscribe_token(KEY, 42, "reminders")
    payload, signature = token.split(".")
    other_payload = unsubscribe_token(KEY, 43, "reminders").split(".")[0]
    return [
        pytest.param(_flip(payload, 0) + "." + signature, id="payload-changed"),
        pytest.param(payload + "." + _flip(signature, 5), id="signature-changed"),
        pytest.param(other_payload + "." + signature, id="another-patient-same-signature"),
        pytest.param(payload + "." + signature[:-2], id="signature-truncated"),
        pytest.param(token + "A", id="extra-character"),
    ]


@pytest.mark.parametrize("token", _tampered())
def test_a_tampered_token_is_refused(token: str) -> None:
    with pytest.raises(InvalidToken):
        read_unsubscribe_token(KEY, token)


def test_a_token_made_with_another_key_is_refused() -> None:
    token = unsubscribe_token("another-installation-key", 42, "reminders")
    with pytest.raises(InvalidToken):
        read_unsubscribe_token(KEY, token)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("no-dot-at-all", id="no-dot"),
        pytest.param("a.b.c", id="three-parts"),
        pytest.param(".abc", id="no-payload"),
        pytest.param("!!!.???", id="not-base64"),
        pytest.param("NDI6cmVtaW5kZXJz.", id="no-signature"),
        pytest.param("NDI6cmVtaW5kZXJz==.abc", id="padding"),
        pytest.param("a" * 5 + "." + "b", id="impossible-base64-length"),
    ],
)
def test_a_malformed_token_is_refused(token: str) -> None:
    with pytest.raises(InvalidToken):
        read_unsubscribe_token(KEY, token)


def test_an_invalid_token_is_a_value_error() -> None:
    assert issubclass(InvalidToken, ValueError)


@pytest.mark.parametrize(
    ("patient_id", "kind"),
    [
        pytest.param(0, "reminders", id="patient-zero"),
        pytest.param(-1, "reminders", id="negative-patient"),
        pytest.param(1, "", id="empty-kind"),
        pytest.param(1, "re:minders", id="kind-with-separator"),
        pytest.param(1, "Reminders", id="kind-upper-case"),
    ],
)
def test_a_token_cannot_be_made_for_a_bad_patient_or_kind(patient_id: int, kind: str) -> None:
    with pytest.raises(ValueError, match=r"patient id|kind"):
        unsubscribe_token(KEY, patient_id, kind)


def test_without_a_secret_key_no_token_is_made_or_read() -> None:
    with pytest.raises(ValueError, match="TAYORI_SECRET_KEY"):
        unsubscribe_token("", 42, "reminders")
    token = unsubscribe_token(KEY, 42, "reminders")
    with pytest.raises(ValueError, match="TAYORI_SECRET_KEY"):
        read_unsubscribe_token("", token)


def test_without_a_public_url_no_link_is_made() -> None:
    with pytest.raises(ValueError, match="TAYORI_PUBLIC_URL"):
        unsubscribe_url("", KEY, 42, "reminders")

"""One-click unsubscribe tokens: they carry the clinic, the patient's random public id
and the kind of message, nothing of the clinic's records, and only the installation's
secret key makes one that reads back."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest

from scheduler.core.domain import ConsentKind
from scheduler.core.unsubscribe import (
    InvalidToken,
    read_unsubscribe_token,
    unsubscribe_token,
    unsubscribe_url,
)
from scheduler.store.models import new_public_id

KEY = "a-long-random-secret-key-for-tests"
PUBLIC_ID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
OTHER_ID = "00112233445566778899aabbccddeeff"
REMINDERS, NEWSLETTER = ConsentKind.REMINDERS, ConsentKind.NEWSLETTER
CLINIC = "sakura-seikotsu"


@pytest.mark.parametrize("kind", list(ConsentKind))
def test_a_token_reads_back_as_its_patient_and_kind(kind: ConsentKind) -> None:
    public_id = new_public_id()
    token = unsubscribe_token(KEY, CLINIC, public_id, kind)
    assert read_unsubscribe_token(KEY, token, CLINIC) == (CLINIC, public_id, kind)


def test_a_token_fits_in_a_url_path_unchanged() -> None:
    token = unsubscribe_token(KEY, CLINIC, PUBLIC_ID, REMINDERS)
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", token)


def test_the_url_is_the_public_url_with_the_token() -> None:
    url = unsubscribe_url("https://tayori.example.jp/", KEY, CLINIC, PUBLIC_ID, REMINDERS)
    token = unsubscribe_token(KEY, CLINIC, PUBLIC_ID, REMINDERS)
    assert url == f"https://tayori.example.jp/unsubscribe/{token}"


def test_tokens_differ_by_patient_and_by_kind() -> None:
    tokens = {
        unsubscribe_token(KEY, CLINIC, PUBLIC_ID, REMINDERS),
        unsubscribe_token(KEY, CLINIC, OTHER_ID, REMINDERS),
        unsubscribe_token(KEY, CLINIC, PUBLIC_ID, NEWSLETTER),
    }
    assert len(tokens) == 3


def _decoded(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_a_token_holds_the_public_id_and_no_internal_id() -> None:
    """The payload is readable by anyone; what it shows is random, not a record number."""
    token = unsubscribe_token(KEY, CLINIC, PUBLIC_ID, NEWSLETTER)
    payload, signature = token.split(".")
    assert _decoded(payload) == f"{CLINIC}:{PUBLIC_ID}:newsletter".encode()
    assert len(_decoded(signature)) == 32  # a whole HMAC-SHA256


@pytest.mark.parametrize(
    "public_id",
    [
        pytest.param("42", id="an-internal-id"),
        pytest.param("", id="empty"),
        pytest.param(PUBLIC_ID.upper(), id="upper-case"),
        pytest.param(PUBLIC_ID[:-1], id="too-short"),
        pytest.param(PUBLIC_ID + "0", id="too-long"),
        pytest.param(PUBLIC_ID[:-1] + ":", id="separator"),
    ],
)
def test_a_token_is_made_only_for_a_public_id(public_id: str) -> None:
    with pytest.raises(ValueError, match="public id"):
        unsubscribe_token(KEY, CLINIC, public_id, REMINDERS)


@pytest.mark.parametrize("kind", ["", "Reminders", "reminders:x", "everything"])
def test_a_token_is_made_only_for_a_kind_of_consent(kind: str) -> None:
    with pytest.raises(ValueError, match="ConsentKind"):
        unsubscribe_token(KEY, CLINIC, PUBLIC_ID, kind)  # type: ignore[arg-type]


def _flip(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


def _encoded(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed_as_ours(payload: bytes) -> str:
    """A payload of our format, with a signature that is not its own."""
    return f"{_encoded(payload)}.{'A' * 43}"


def _tampered() -> list[pytest.ParameterSet]:
    token = unsubscribe_token(KEY, CLINIC, PUBLIC_ID, REMINDERS)
    payload, signature = token.split(".")
    other_payload = unsubscribe_token(KEY, CLINIC, OTHER_ID, REMINDERS).split(".")[0]
    newsletter_payload = unsubscribe_token(KEY, CLINIC, PUBLIC_ID, NEWSLETTER).split(".")[0]
    return [
        pytest.param(_flip(payload, 0) + "." + signature, id="payload-changed"),
        pytest.param(payload + "." + _flip(signature, 5), id="signature-changed"),
        pytest.param(other_payload + "." + signature, id="another-patient-same-signature"),
        pytest.param(newsletter_payload + "." + signature, id="another-kind-same-signature"),
        pytest.param(payload + "." + signature[:-2], id="signature-truncated"),
        pytest.param(payload[:-4] + "." + signature, id="payload-truncated"),
        pytest.param(token + "A", id="extra-character"),
        pytest.param(_signed_as_ours(f"{CLINIC}:{PUBLIC_ID}:reminders".encode()), id="made-up"),
        pytest.param(
            unsubscribe_token(KEY, "other", PUBLIC_ID, REMINDERS).split(".")[0] + "." + signature,
            id="another-clinic-same-signature",
        ),
    ]


@pytest.mark.parametrize("token", _tampered())
def test_a_tampered_token_is_refused(token: str) -> None:
    with pytest.raises(InvalidToken):
        read_unsubscribe_token(KEY, token, CLINIC)


def test_a_token_made_with_another_key_is_refused() -> None:
    token = unsubscribe_token(
        "another-installation-key-of-32-characters", CLINIC, PUBLIC_ID, REMINDERS
    )
    with pytest.raises(InvalidToken):
        read_unsubscribe_token(KEY, token, CLINIC)


def test_a_token_names_its_clinic_inside_the_signature() -> None:
    token = unsubscribe_token(KEY, "ume", PUBLIC_ID, REMINDERS)
    assert read_unsubscribe_token(KEY, token, CLINIC) == ("ume", PUBLIC_ID, REMINDERS)


def test_a_token_from_before_clinics_stands_for_the_first_clinic() -> None:
    """v2 tokens, sent before an installation served several clinics, keep working:
    they can only have been for its own clinic."""
    payload = f"{PUBLIC_ID}:newsletter".encode()
    signature = hmac.new(KEY.encode(), b"tayori unsubscribe v2\n" + payload, hashlib.sha256)
    token = f"{_encoded(payload)}.{_encoded(signature.digest())}"
    assert read_unsubscribe_token(KEY, token, "default") == ("default", PUBLIC_ID, NEWSLETTER)


@pytest.mark.parametrize("clinic", ["", "Ume", "ume:1", "u" * 41])
def test_a_token_is_made_only_for_a_clinics_slug(clinic: str) -> None:
    with pytest.raises(ValueError, match="clinic"):
        unsubscribe_token(KEY, clinic, PUBLIC_ID, REMINDERS)


def test_a_first_version_token_with_an_internal_id_is_refused() -> None:
    """v1 tokens named the internal id; even one signed with the right key reads as
    nothing now (the purpose label changed with the format)."""
    payload = b"42:reminders"
    signature = hmac.new(KEY.encode(), b"tayori unsubscribe v1\n" + payload, hashlib.sha256)
    token = f"{_encoded(payload)}.{_encoded(signature.digest())}"
    with pytest.raises(InvalidToken):
        read_unsubscribe_token(KEY, token, CLINIC)


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
        pytest.param("A" * 4000 + "." + "B" * 43, id="very-long"),
    ],
)
def test_a_malformed_token_is_refused(token: str) -> None:
    with pytest.raises(InvalidToken):
        read_unsubscribe_token(KEY, token, CLINIC)


def test_an_invalid_token_is_a_value_error() -> None:
    assert issubclass(InvalidToken, ValueError)


def test_without_a_secret_key_no_token_is_made_or_read() -> None:
    with pytest.raises(ValueError, match="TAYORI_SECRET_KEY"):
        unsubscribe_token("", CLINIC, PUBLIC_ID, REMINDERS)
    token = unsubscribe_token(KEY, CLINIC, PUBLIC_ID, REMINDERS)
    with pytest.raises(ValueError, match="TAYORI_SECRET_KEY"):
        read_unsubscribe_token("", token, CLINIC)


def test_without_a_public_url_no_link_is_made() -> None:
    with pytest.raises(ValueError, match="TAYORI_PUBLIC_URL"):
        unsubscribe_url("", KEY, CLINIC, PUBLIC_ID, REMINDERS)

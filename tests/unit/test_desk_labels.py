"""What the desk says to staff of the outbox's and the lint's English
(scheduler/web/desk/labels.py): every named reason has its Japanese, the channels'
texts by how they begin, the original kept for the operator, and the desk's dates."""

from __future__ import annotations

import json
import string
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from scheduler.channels import line
from scheduler.core import failure_policy, routing
from scheduler.core.failure_policy import Failure
from scheduler.outbox import composer, dispatcher, recorder, transitions
from scheduler.web.desk.labels import (
    REASON_TEXTS,
    Said,
    desk_date,
    desk_datetime,
    lint_problem,
    lint_problem_at,
    why_not_sent,
)

JST = ZoneInfo("Asia/Tokyo")


def _filled(template: str) -> str:
    """A reason as it is written: its `{placeholders}` given a value."""
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    return template.format(**dict.fromkeys(fields, "3"))


def _is_japanese(text: str) -> bool:
    return any("\u3040" <= c <= "\u30ff" or "\u4e00" <= c <= "\u9fff" for c in text)


# Every upper-case text constant of the outbox's state machine is a reason a delivery
# records (`last_error`): a new one needs its Japanese here, or this test fails.
TRANSITION_REASONS = sorted(
    name for name, value in vars(transitions).items() if name.isupper() and isinstance(value, str)
)
# The named reasons written elsewhere (channels' fallbacks, the composer, the worker).
OTHER_REASONS = [
    routing.NO_USABLE_CONTACT,
    dispatcher.COMPOSE_FAILED,
    composer.QUOTA_HELD_REASON,
    failure_policy.RETRY_KEY_EXPIRED,
]


def test_the_state_machine_has_reason_constants_to_walk() -> None:
    assert {"WITHDRAWN_NOT_DUE", "WITHDRAWN_CAMPAIGN_PAUSED", "GIVEN_UP"} <= set(TRANSITION_REASONS)


@pytest.mark.parametrize("name", TRANSITION_REASONS)
def test_every_reason_of_the_state_machine_has_its_japanese(name: str) -> None:
    english = getattr(transitions, name)
    assert english in REASON_TEXTS
    said = why_not_sent(_filled(english))
    assert _is_japanese(said.text) and said.detail == _filled(english)


@pytest.mark.parametrize("english", OTHER_REASONS)
def test_every_other_named_reason_has_its_japanese(english: str) -> None:
    assert english in REASON_TEXTS
    said = why_not_sent(_filled(english))
    assert _is_japanese(said.text) and said.detail == _filled(english)


def _line_error(status: int, message: str, failure: Failure) -> str:
    return line.describe(status, json.dumps({"message": message}), failure)


@pytest.mark.parametrize(
    ("raw", "japanese"),
    [
        (
            "no longer due (a visit, a booking, a cancellation, or a change of consent, "
            "phase or cadence)",
            "不要になったため取りやめました（来院・予約・同意・時期などの変更）",
        ),
        ("its campaign is paused", "お便りを停止中のため取りやめました"),
        ("consent withdrawn (unsubscribe link)", "配信の同意がなくなったため取りやめました"),
        ("patient forgotten", "患者さまの情報を削除したため取りやめました"),
        ("no usable email contact", "その方法で使える連絡先がありません"),
        (
            "address refused: 550 5.1.1 no such user",
            "このメールアドレスには届きません（受け取りを断られました）",
        ),
        (
            "message refused: 554 5.7.1 spam",
            "メールサーバーがこのメッセージを受け付けませんでした",
        ),
        (
            "SMTP login refused: 535 bad credentials — check SMTP_USERNAME and SMTP_PASSWORD",
            "メールの送信設定に問題があります（管理者にご確認ください）",
        ),
        (
            _line_error(400, line.UNKNOWN_USER, Failure.CONTACT_UNUSABLE),
            "このLINEの方には届きません（ブロックや連携の解除など）",
        ),
        (
            _line_error(401, "Authentication failed", Failure.CHANNEL_UNAVAILABLE),
            "LINEの設定に問題があります（管理者にご確認ください）",
        ),
        (
            _line_error(429, "You have reached your monthly limit.", Failure.QUOTA_EXHAUSTED),
            "今月のLINEの送信数が上限に達しました",
        ),
        (
            _line_error(500, "Internal error", Failure.UNCERTAIN),
            "LINE側の不具合で送れませんでした",
        ),
        (
            "could not connect to LINE: connection refused (nothing was sent; ...)",
            "LINEにつながりませんでした",
        ),
        (
            "email: mailbox full (552)",  # no channel writes this: its channel, at least
            "メールで送れませんでした",
        ),
    ],
)
def test_a_known_reason_reads_as_short_japanese_with_the_original_kept(
    raw: str, japanese: str
) -> None:
    assert why_not_sent(raw) == Said(japanese, raw)


def test_the_words_added_to_a_reason_are_said_after_it() -> None:
    raw = f"address refused: 550 no such user; {recorder.SAMPLE_NOT_RETRIED}"
    assert why_not_sent(raw).text == (
        "このメールアドレスには届きません（受け取りを断られました）。試し送信のため、再送はしません"
    )
    raw = f"LINE 500: oops (LINE may have accepted it); {failure_policy.NOT_ANOTHER_WAY}"
    assert why_not_sent(raw).text.endswith("すでに届いた可能性があるため、別の方法では送りません")


def test_an_unknown_reason_is_shown_as_it_is() -> None:
    assert why_not_sent("something new happened") == Said("something new happened")


def test_no_reason_says_none_was_recorded() -> None:
    assert why_not_sent(None) == Said("理由は記録されていません")


@pytest.mark.parametrize(
    ("raw", "japanese"),
    [
        (
            "unknown variable 'patient_nmae' (messages/README.md lists the ones a message has)",
            "「patient_nmae」という名前は使えません（つづりを確かめてください）",
        ),
        (
            "'patient_nmae' is undefined",
            "「patient_nmae」という名前は使えません（つづりを確かめてください）",
        ),
        (
            "promises a result (治る): a clinic's message may encourage, never promise "
            "(e.g. 「〜しやすくなります」)",
            "「治る」は効果を約束する言葉です（「〜しやすくなります」などに）",
        ),
        (
            "no unsubscribe link: the footer must show {{ unsubscribe_url }}",
            "配信停止のリンクがありません（{{ unsubscribe_url }} が必要です）",
        ),
        ("Encountered unknown tag 'endiff'.", "「endiff」というタグは使えません"),
        ("unexpected '}'", "書き方に誤りがあります（かっこや記号の対応を確かめてください）"),
        ("not UTF-8 text: save the file as UTF-8", "文字コードがUTF-8ではありません"),
    ],
)
def test_a_common_lint_problem_reads_as_japanese(raw: str, japanese: str) -> None:
    assert lint_problem(raw) == Said(japanese, raw)


def test_a_lint_problem_of_another_file_keeps_its_place() -> None:
    raw = "cadence_nudge/email.j2:7: unknown variable 'x' (messages/README.md lists …)"
    assert lint_problem_at(raw).text == (
        "cadence_nudge/email.j2 7行目：「x」という名前は使えません（つづりを確かめてください）"
    )


def test_an_unknown_lint_problem_is_shown_as_it_is() -> None:
    assert lint_problem("a brand new check failed") == Said("a brand new check failed")


def test_a_date_of_this_year_has_no_year() -> None:
    assert desk_date(date(2026, 3, 5), date(2026, 11, 29)) == "3月5日（木）"


def test_a_date_of_another_year_names_it() -> None:
    assert desk_date(date(2025, 3, 5), date(2026, 1, 2)) == "2025年3月5日（水）"


def test_the_year_of_a_moment_is_the_clinics() -> None:
    # 15:30 UTC on New Year's Eve is already New Year's Day in Japan.
    now = datetime(2027, 1, 1, 3, 0, tzinfo=JST)
    assert desk_datetime(datetime(2026, 12, 31, 15, 30, tzinfo=UTC), JST, now) == (
        "1月1日（金）00:30"
    )
    assert desk_datetime(datetime(2026, 12, 31, 14, 30, tzinfo=UTC), JST, now) == (
        "2026年12月31日（木）23:30"
    )

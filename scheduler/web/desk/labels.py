"""How the desk names things for the clinic's staff, in one place: channels, delivery
states, consent sources, dates (with the year when it is not this year's), why a
message was not sent, and the lint's problems.

The outbox, the channels and the lint say why in English, for the operator and the
command line (`tayori status`, `tayori lint`), and that text stays as it is. The desk
shows staff a short Japanese sentence instead, and keeps the original within reach
(`Said.detail`, shown in a <details>) for whoever looks after the installation. A text
no rule knows is shown as it is: better English than nothing.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.core.domain import ChannelName, DeliveryState
from scheduler.core.failure_policy import NOT_ANOTHER_WAY, RETRY_KEY_EXPIRED
from scheduler.core.routing import NO_USABLE_CONTACT
from scheduler.messages.context import japanese_date
from scheduler.messages.lint import AWKWARD_NAME_NOTE, FLEX_HINT
from scheduler.outbox.composer import QUOTA_HELD_REASON
from scheduler.outbox.dispatcher import COMPOSE_FAILED
from scheduler.outbox.recorder import SAMPLE_NOT_RETRIED
from scheduler.outbox.transitions import (
    GIVEN_UP,
    UNREADABLE,
    WITHDRAWN_CAMPAIGN_PAUSED,
    WITHDRAWN_NOT_DUE,
)
from scheduler.store.clinics import clinic_of
from scheduler.store.consent import ConsentSource
from scheduler.store.models import Patient

CHANNEL_LABELS = {ChannelName.LINE: "LINE", ChannelName.EMAIL: "メール"}
STATE_LABELS = {
    DeliveryState.PLANNED: "送信予定",
    DeliveryState.SENDING: "送信中",
    DeliveryState.SENT: "送信済み",
    DeliveryState.FAILED: "送れなかった",
    DeliveryState.SKIPPED: "送らなかった",
    DeliveryState.WITHDRAWN: "取りやめ",
}
HELD_LABEL = "保留中"  # a message held by hand (Upcoming's 「保留する」), still planned
SOURCE_LABELS = {
    ConsentSource.IMPORT: "取り込み",
    ConsentSource.DEMO: "デモ",
    ConsentSource.CLI: "コマンド",
    ConsentSource.LINE: "LINE",
    ConsentSource.UNSUBSCRIBE_LINK: "配信停止リンク",
    ConsentSource.DESK: "管理画面",
    ConsentSource.FORGET: "削除の依頼",
}


def source_label(source: str) -> str:
    """A consent change's source (a plain string in the history table)."""
    return next((label for s, label in SOURCE_LABELS.items() if s.value == source), source)


# -- patients ----------------------------------------------------------------------


@dataclass(frozen=True)
class Named:
    """A patient as a page names them, with the row id of their page (the desk's
    `/patients/<id>`): every page that names a patient links to it."""

    number: str
    name: str | None = None
    id: int | None = None  # None: not found (the clinic's own digest has no patient)


def patients_named(db: Session, numbers: Collection[str]) -> dict[str, Named]:
    """The clinic's patients of these numbers, by number (the digest, the report and
    the dry run, shared with the command line, name a patient by number)."""
    wanted = sorted(set(numbers))
    if not wanted:
        return {}
    rows = db.execute(
        select(Patient.id, Patient.external_id, Patient.name).where(
            Patient.clinic_id == clinic_of(db), Patient.external_id.in_(wanted)
        )
    )
    return {number: Named(number, name, id) for id, number, name in rows}


# -- dates -------------------------------------------------------------------------


def desk_date(day: date, today: date) -> str:
    """A day as the desk writes it: 「3月5日（火）」 this year, 「2025年3月5日（水）」
    another year (a history or a period may span years; a message to a patient never
    names the year, scheduler/messages/context.py)."""
    year = "" if day.year == today.year else f"{day.year}年"
    return f"{year}{japanese_date(day)}"


def desk_datetime(moment: datetime, tz: ZoneInfo, now: datetime) -> str:
    """A moment in the clinic's time, with its year unless it is `now`'s year."""
    local = moment.astimezone(tz)
    return f"{desk_date(local.date(), now.astimezone(tz).date())}{local:%H:%M}"


# -- why a message was not sent ----------------------------------------------------


@dataclass(frozen=True)
class Said:
    """A text for staff, and the original for the operator (None: the text is it)."""

    text: str
    detail: str | None = None


def _template(english: str) -> re.Pattern[str]:
    """A pattern for an English text with `{name}` placeholders (str.format's)."""
    parts = re.split(r"\{[^}]*\}", english)
    return re.compile("(.+?)".join(re.escape(part) for part in parts) + "$")


# The named reasons of the outbox, by their English text (placeholders allowed): the
# unit tests check that every one of them is here.
REASON_TEXTS: dict[str, str] = {
    WITHDRAWN_NOT_DUE: "不要になったため取りやめました（来院・予約・同意・時期などの変更）",
    WITHDRAWN_CAMPAIGN_PAUSED: "お便りを停止中のため取りやめました",
    GIVEN_UP: "送信処理が何度も途中で止まったため、送るのをやめました",
    UNREADABLE: "この版では読めない記録のため、送れませんでした",
    NO_USABLE_CONTACT: "使えるLINE・メールの連絡先がありません",
    COMPOSE_FAILED: "メッセージを作れませんでした（システムの問題）",
    QUOTA_HELD_REASON: "今月のLINEの残りを大切なお知らせに回すため、お待ちしています",
    RETRY_KEY_EXPIRED: "LINEに届いた可能性があり、時間がたったため再送しません",
}
# Reasons written with a value in them where they are produced.
_OTHER_REASONS: tuple[tuple[str, str], ...] = (
    ("consent withdrawn ({source})", "配信の同意がなくなったため取りやめました"),
    ("patient forgotten", "患者さまの情報を削除したため取りやめました"),
    ("the patient is no longer in the database", "患者さまの情報がありません"),
    ("campaign {id} is no longer in the campaigns file", "お便りの設定がなくなりました"),
    ("no usable {channel} contact", "その方法で使える連絡先がありません"),
    ("its {channel} contact is no longer usable", "この連絡先はもう使えません"),
    ("no digest {channel} address in the settings any more", "日報の宛先が設定にありません"),
    ("queued again by hand; before: {error}", "再送を受け付けました"),
)
# Words added to a reason: (English, Japanese).
_SUFFIXES: tuple[tuple[str, str], ...] = (
    (SAMPLE_NOT_RETRIED, "試し送信のため、再送はしません"),
    (NOT_ANOTHER_WAY, "すでに届いた可能性があるため、別の方法では送りません"),
    (RETRY_KEY_EXPIRED, "LINEに届いた可能性があるため、再送しません"),
)
_EMAIL_SETTINGS = "メールの送信設定に問題があります（管理者にご確認ください）"
_LINE_SETTINGS = "LINEの設定に問題があります（管理者にご確認ください）"
# What the channels say (scheduler/channels/*.py), by how the text begins or a part of
# it: (pattern, Japanese), the first that matches.
_CHANNEL_TEXTS: tuple[tuple[str, str], ...] = (
    (r"address refused:", "このメールアドレスには届きません（受け取りを断られました）"),
    (r"message refused:", "メールサーバーがこのメッセージを受け付けませんでした"),
    (r".* deferred by the SMTP server:", "メールサーバーが一時的に受け付けませんでした"),
    (
        r"(cannot reach the SMTP server|connection to the SMTP server lost)",
        "メールサーバーにつながりませんでした",
    ),
    (r"the SMTP server \S+ refused the connection", "メールサーバーにつながりませんでした"),
    (
        r"(SMTP login|the SMTP server requires a login|sender refused"
        r"|the SMTP server will not relay|the SMTP server \S+ cannot do"
        r"|the certificate of the SMTP server|TLS with the SMTP server)",
        _EMAIL_SETTINGS,
    ),
    (r"unexpected answer from the SMTP server", "メールサーバーから思わぬ返事がありました"),
    (
        r"LINE \d+: .*this LINE user id cannot be reached",
        "このLINEの方には届きません（ブロックや連携の解除など）",
    ),
    (r"LINE \d+: .*this month's LINE messages are used up", "今月のLINEの送信数が上限に達しました"),
    (r"LINE (401|403|404|3\d\d):", _LINE_SETTINGS),
    (r"LINE 429:", "LINEが混み合っていたため、あとで送ります"),
    (r"LINE 5\d\d:", "LINE側の不具合で送れませんでした"),
    (r"LINE \d+:", "LINEがこのメッセージを受け付けませんでした"),
    (r"LINE text is ", "LINEで送れる長さを超えています"),
    (r"LINE Flex message is", "LINEのメッセージの形式に誤りがあります"),
    (
        r"(LINE did not answer|connection to LINE lost|could not connect to LINE|LINE TLS failure"
        r"|LINE's answer could not be read)",
        "LINEにつながりませんでした",
    ),
    (r"LINE quota: ", "今月のLINEの残りが少ないため、お待ちしています"),
    (r"(line|email) channel held: ", "送信を一時的に見合わせているため、お待ちしています"),
    (r"\S+\.j2(:\d+)?: ", "メッセージのひな形に問題があります（「メッセージ」で直せます）"),
    # Any other word of a channel: at least which way it failed.
    (r"LINE\b", "LINEで送れませんでした"),
    (r"(email|SMTP|the SMTP)\b", "メールで送れませんでした"),
)
_KNOWN = [(_template(english), japanese) for english, japanese in REASON_TEXTS.items()]
_KNOWN += [(_template(english), japanese) for english, japanese in _OTHER_REASONS]
_CHANNELS = [(re.compile(pattern), japanese) for pattern, japanese in _CHANNEL_TEXTS]


def why_not_sent(raw: str | None) -> Said:
    """Why a message was not sent (or not yet), in Japanese for staff; `raw` (a
    delivery's `last_error`) is kept as the detail."""
    if not raw:
        return Said("理由は記録されていません")
    said = _reason(raw)
    return Said(raw) if said is None else Said(said, raw)


def _reason(raw: str) -> str | None:
    notes: list[str] = []
    head = raw
    for english, note in _SUFFIXES:
        if head.endswith(f"; {english}"):
            head = head.removesuffix(f"; {english}")
            notes.append(note)
    said = next((j for pattern, j in _KNOWN + _CHANNELS if pattern.match(head)), None)
    return None if said is None else "。".join([said, *notes])


# -- the lint's problems -----------------------------------------------------------

_LINT_TEXTS: tuple[tuple[str, str], ...] = (
    (
        r"unknown variable '(?P<v>[^']*)'",
        "「{v}」という名前は使えません（つづりを確かめてください）",
    ),
    (
        r"promises a result \((?P<w>[^)]*)\)",
        "「{w}」は効果を約束する言葉です（「〜しやすくなります」などに）",
    ),
    (
        r"no sender footer",
        '差出人（医院名・住所・連絡先）がありません（{{% include "_footer.j2" %}} を残します）',
    ),
    (
        r"no unsubscribe link",
        "配信停止のリンクがありません（{{{{ unsubscribe_url }}}} が必要です）",
    ),
    (r"'(?P<v>[^']*)' is undefined", "「{v}」という名前は使えません（つづりを確かめてください）"),
    (r"not UTF-8 text", "文字コードがUTF-8ではありません"),
    (r"missing: the settings use this message", "ファイルがありません（設定で使っています）"),
    (r"template not found", "読み込むファイルが見つかりません"),
    (r"renders an empty message", "メッセージが空になります"),
    (r"missing block\(s\): (?P<b>.*)", "必要なブロックがありません：{b}"),
    (r"LINE text is .*LINE allows (?P<n>[\d,]+)", "LINEで送れる長さ（{n}文字）を超えています"),
    (r"LINE Flex message is", "LINEのメッセージ（Flex）の書き方に誤りがあります"),
    (r"Encountered unknown tag '(?P<t>[^']*)'", "「{t}」というタグは使えません"),
    (r"unexpected end of template", "途中で終わっています（{{% end… %}} の閉じ忘れなど）"),
    (
        r"(unexpected |expected token )",
        "書き方に誤りがあります（かっこや記号の対応を確かめてください）",
    ),
    (r".* (is|would be) longer than ", "長くなりすぎます"),
)
_LINT = [(re.compile(pattern), japanese) for pattern, japanese in _LINT_TEXTS]
_LINT_SUFFIXES = (
    (AWKWARD_NAME_NOTE, "記号や絵文字の入った長いお名前のとき"),
    (FLEX_HINT, "値は {{ value|tojson }} と書きます"),
)
_LOCATION = re.compile(r"(?P<file>[^\s:]+\.(j2|md))(:(?P<line>\d+|\?))?: (?P<rest>.*)$", re.S)


def lint_problem(raw: str) -> Said:
    """One of the lint's problems (without its `file:line:`), in Japanese for staff."""
    notes = []
    text = raw
    for english, japanese in _LINT_SUFFIXES:
        if english in text:
            text = text.replace(english, "")
            notes.append(japanese)
    for pattern, japanese in _LINT:
        if found := pattern.match(text):
            said = japanese.format(**found.groupdict())
            return Said(said + "".join(f"（{note}）" for note in notes), raw)
    return Said(raw)


def lint_problem_at(raw: str) -> Said:
    """A lint problem that names its file (`file:line: problem`): the place kept."""
    found = _LOCATION.match(raw)
    if found is None:
        return lint_problem(raw)
    said = lint_problem(found["rest"])
    line = found["line"]
    where = found["file"] + (f" {line}行目" if line and line != "?" else "")
    return Said(f"{where}：{said.text}", raw if said.detail else None)

"""The words of Tayori's replies in a LINE chat: short, polite, and naming nobody (a
reply goes to whoever holds that LINE, who may not be the patient).

The greeting is the practitioner's template, messages/line_follow/line.j2, rendered
by the same Renderer as every message; the answers to a link code or to
「配信停止」「配信再開」 are fixed here, because each must say exactly what happened.
"""

from __future__ import annotations

from scheduler.core.config import Clinic
from scheduler.core.domain import ChannelName
from scheduler.core.line_chat import RESUME, STOP, Say
from scheduler.messages.context import LINE_FOLLOW, line_follow_context
from scheduler.messages.template_names import template_in
from scheduler.messages.templates import Renderer

TEXTS: dict[Say, str] = {
    Say.LINKED: (
        "{clinic}です。LINEの連携が完了しました。これからのお知らせは、このLINEにお届けします。"
    ),
    Say.ALREADY_LINKED: "このLINEはすでに連携されています。お知らせはこのLINEにお届けします。",
    Say.TAKEN: (
        "このLINEは、すでに別の患者さまの情報と連携されています。"
        "お手数ですが、{clinic}までお問い合わせください。"
    ),
    Say.WRONG_CODE: (
        "連携コードが見つかりませんでした。"
        "お手元のカードのコードをお確かめのうえ、もう一度お送りください。"
    ),
    Say.EXPIRED_CODE: (
        "この連携コードは有効期限が切れています。"
        "お手数ですが、{clinic}で新しいコードをお受け取りください。"
    ),
    Say.USED_CODE: (
        "この連携コードはすでに使われています。"
        "お心当たりがない場合は、{clinic}までお問い合わせください。"
    ),
    Say.LOCKED: (
        "連携コードの誤りが続いたため、しばらく受け付けを止めています。"
        "1時間ほどたってから、もう一度お試しください。"
    ),
    Say.STOPPED: (
        f"季節のお便りの配信を停止しました。再開をご希望のときは「{RESUME}」とお送りください。"
        "ご予約のお知らせなどは、これまでどおりお届けします。"
    ),
    Say.RESUMED: (
        f"季節のお便りの配信を再開しました。停止をご希望のときは「{STOP}」とお送りください。"
    ),
    Say.NOT_LINKED: (
        "このLINEは、まだ{clinic}の患者さま情報と連携されていません。"
        "受付でお渡しするカードの連携コードをお送りいただくと、連携できます。"
    ),
}


def reply_text(say: Say, clinic: Clinic, renderer: Renderer, *, linked: bool = False) -> str:
    """The text of a reply; the greeting from its template (a TemplateError if the
    template cannot render, and no version of it ever could)."""
    if say is Say.GREETING:
        name = template_in(LINE_FOLLOW, ChannelName.LINE)
        return renderer.render(name, line_follow_context(clinic, linked)).text
    return TEXTS[say].format(clinic=clinic.name)

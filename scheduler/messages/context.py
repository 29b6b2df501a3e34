"""What a template may read about a message (pure). The names here are the
template variables documented in messages/README.md."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from scheduler.core.config import Clinic
from scheduler.core.domain import ConsentKind, Phase, Reason

PHASE_LABELS = {
    Phase.ACUTE: "急性期",
    Phase.REHAB: "リハビリ期",
    Phase.MAINTENANCE: "メンテナンス期",
}
REASON_LABELS = {
    Reason.CADENCE_NUDGE: "次回来院のおすすめ",
    Reason.CADENCE_FOLLOW_UP: "おすすめの再送",
    Reason.APPOINTMENT_REMINDER: "予約前日のお知らせ",
    Reason.NO_SHOW_FOLLOW_UP: "ご来院がなかった方へのご連絡",
    Reason.NEWSLETTER: "季節のお便り",
    Reason.DAILY_DIGEST: "毎朝のまとめ",
}
WEEKDAYS = "月火水木金土日"


def japanese_date(day: date) -> str:
    return f"{day.month}月{day.day}日（{WEEKDAYS[day.weekday()]}）"


def japanese_datetime(moment: datetime, tz: ZoneInfo) -> str:
    local = moment.astimezone(tz)
    return f"{japanese_date(local.date())}{local:%H:%M}"


def message_context(
    *,
    reason: Reason,
    patient_name: str,
    phase: Phase | None,
    last_visit: datetime | None,
    next_visit: datetime | None,
    appointment_at: datetime | None,
    clinic: Clinic,
    now: datetime,
    tz: ZoneInfo,
    unsubscribe_url: str | None = None,
    tip: str | None = None,
    season: str | None = None,
    reopens: date | None = None,
) -> dict[str, Any]:
    return {
        "reason": reason.value,
        "patient_name": f"{patient_name}様",
        "phase": phase.value if phase else None,
        "phase_label": PHASE_LABELS[phase] if phase else None,
        "last_visit": japanese_date(last_visit.astimezone(tz).date()) if last_visit else None,
        "days_since_last_visit": (
            (now.astimezone(tz).date() - last_visit.astimezone(tz).date()).days
            if last_visit
            else None
        ),
        "next_visit": japanese_datetime(next_visit, tz) if next_visit else None,
        "appointment": japanese_datetime(appointment_at, tz) if appointment_at else None,
        "clinic": clinic_values(clinic),
        # Where the patient stops these messages in one click (email only).
        "unsubscribe_url": unsubscribe_url,
        "tip": tip,  # one self-care tip from messages/tips/, or None
        "season": season,  # e.g. 冬, or 冬の土用
        # When the clinic is closed on the day the message goes: the day it reopens.
        "reopens": japanese_date(reopens) if reopens else None,
    }


def clinic_values(clinic: Clinic) -> dict[str, str]:
    """`clinic` in a template: the clinic's details from the settings."""
    return {
        "name": clinic.name,
        "phone": clinic.phone,
        "address": clinic.address,
        "email": clinic.email,
        "booking_url_line": clinic.booking_url_line,
        "booking_url_web": clinic.booking_url_web,
    }


# The reply to someone who adds the clinic's LINE account as a friend (or unblocks
# it): messages/line_follow/line.j2. It knows nobody's name: only the clinic, and
# whether this LINE is linked to a patient already.
LINE_FOLLOW = "line_follow"
LINE_FOLLOW_VARIABLES = frozenset({"clinic", "linked"})


def line_follow_context(clinic: Clinic, linked: bool) -> dict[str, Any]:
    return {"clinic": clinic_values(clinic), "linked": linked}


# Every name a patient message template may use (messages/README.md lists them).
MESSAGE_VARIABLES = frozenset(
    {
        "reason",
        "patient_name",
        "phase",
        "phase_label",
        "last_visit",
        "days_since_last_visit",
        "next_visit",
        "appointment",
        "clinic",
        "unsubscribe_url",
        "tip",
        "season",
        "reopens",
    }
)
# Messages a patient can stop with one click (List-Unsubscribe), and the consent
# that click withdraws.
STOPPABLE = {
    Reason.CADENCE_NUDGE: ConsentKind.REMINDERS,
    Reason.CADENCE_FOLLOW_UP: ConsentKind.REMINDERS,
    Reason.NEWSLETTER: ConsentKind.NEWSLETTER,
}
SAMPLE_CAMPAIGN = {
    "moment": "冬の土用の入り",
    "moment_date": "1月17日（土）",
    "closure": {
        "name": "年末年始",
        "first": "12月29日（火）",
        "last": "1月3日（日）",
        "reopens": "1月4日（月）",
    },
}
SAMPLE_PATIENT = "山田 花子"
# A made-up name that breaks what pastes a name into JSON (or any format) unescaped:
# both quotes, a backslash, emoji (two UTF-16 units each in LINE's count) and a
# length far beyond a real name. `tayori lint` renders every message with it too.
AWKWARD_PATIENT = ('"花子" O\'Hara \\ 🌸🙇 ' + "長" * 200)[:200]
SAMPLE_UNSUBSCRIBE_URL = "https://tayori.example/unsubscribe/sample"
SAMPLE_TIP = "寝る前に、ゆっくり長く息を吐く呼吸を数回してみてください。"


def sample_context(
    reason: Reason,
    phase: Phase | None,
    clinic: Clinic,
    now: datetime,
    tz: ZoneInfo,
    patient_name: str = SAMPLE_PATIENT,
) -> dict[str, Any]:
    """A made-up patient's message, for `tayori preview --sample` and `tayori lint`:
    every variable has a value, as in the fullest real message."""
    appointment = {
        Reason.APPOINTMENT_REMINDER: now + timedelta(days=1),
        Reason.NO_SHOW_FOLLOW_UP: now - timedelta(days=1),
    }.get(reason)
    return message_context(
        reason=reason,
        patient_name=patient_name,
        phase=phase,
        last_visit=now - timedelta(days=5),
        next_visit=now + timedelta(days=1) if reason is Reason.APPOINTMENT_REMINDER else None,
        appointment_at=appointment,
        clinic=clinic,
        now=now,
        tz=tz,
        unsubscribe_url=SAMPLE_UNSUBSCRIBE_URL if reason in STOPPABLE else None,
        tip=SAMPLE_TIP,
        season="冬",
    )

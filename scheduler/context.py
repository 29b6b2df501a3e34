"""What a template may read about a message (pure). The names here are the
template variables documented in messages/README.md."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from scheduler.domain import Phase, Reason
from scheduler.settings import Clinic

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
        "clinic": {
            "name": clinic.name,
            "phone": clinic.phone,
            "address": clinic.address,
            "email": clinic.email,
            "booking_url_line": clinic.booking_url_line,
            "booking_url_web": clinic.booking_url_web,
        },
        # Where the patient stops these messages in one click (email only).
        "unsubscribe_url": unsubscribe_url,
    }

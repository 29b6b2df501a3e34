"""The practitioner's daily digest: its numbers, and that it goes once a day."""

from __future__ import annotations

import email.policy
from dataclasses import replace
from datetime import datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.commands import main
from scheduler.core.domain import AppointmentStatus, ChannelName, DeliveryState, Phase, Reason
from scheduler.messages.digest import build_digest
from scheduler.outbox.planner import plan
from scheduler.runtime import Runtime
from scheduler.settings import Settings
from scheduler.store.db import transaction
from scheduler.store.models import Delivery, Patient
from scheduler.worker import tick
from tests.integration.clinic import add_appointment, add_patient, visited

JST = ZoneInfo("Asia/Tokyo")
# Wednesday morning, before the digest's 08:30 and the 09:00 send window.
WEDNESDAY = datetime(2026, 11, 25, 8, 0, tzinfo=JST)
DIGEST_TIME = datetime(2026, 11, 25, 8, 30, tzinfo=JST)
YESTERDAY_10AM = datetime(2026, 11, 24, 10, 0, tzinfo=JST)


def build_fixture_clinic(runtime: Runtime) -> None:
    """A small clinic whose digest on Wednesday 2026-11-25 is known by heart."""
    sessions = runtime.sessions
    long_ago = WEDNESDAY - timedelta(days=43)
    with transaction(sessions) as session:
        # Nudged yesterday (acute, visited Saturday), by LINE: one LINE message used.
        add_patient(session, long_ago, "SENT", Phase.ACUTE)  # acute for 43 days: review
        visited(session, YESTERDAY_10AM, days_ago=3, external_id="SENT")
        # No contact at all: skipped yesterday.
        add_patient(session, WEDNESDAY, "NOCONTACT", Phase.ACUTE, line_user_id=None)
        visited(session, YESTERDAY_10AM, days_ago=3, external_id="NOCONTACT")
        # Lapsed today (last visit 61 days ago) and lapsed yesterday (62 days ago);
        # without reminder consent, so they get no late follow-up of their own.
        add_patient(session, long_ago, "LAPSED", Phase.MAINTENANCE, reminders=False)
        visited(session, WEDNESDAY, days_ago=61, external_id="LAPSED")
        add_patient(session, long_ago, "OLDLAPSE", Phase.MAINTENANCE, reminders=False)
        visited(session, WEDNESDAY, days_ago=62, external_id="OLDLAPSE")
        # Acute for exactly 42 days: not yet for review. Booked tomorrow: a reminder today.
        add_patient(session, WEDNESDAY - timedelta(days=42), "BOOKED", Phase.ACUTE)
        visited(session, WEDNESDAY, days_ago=1, external_id="BOOKED")
        add_appointment(
            session, WEDNESDAY, WEDNESDAY + timedelta(days=1), AppointmentStatus.BOOKED, "BOOKED"
        )
        # Visited Sunday, rehab by email: nudged Saturday, so nothing today.
        add_patient(
            session, WEDNESDAY, "QUIET", Phase.REHAB, line_user_id=None, email="q@example.jp"
        )
        visited(session, WEDNESDAY, days_ago=3, external_id="QUIET")
    tick(runtime, YESTERDAY_10AM)


def test_digest_counts_match_the_fixture_clinic(runtime: Runtime) -> None:
    build_fixture_clinic(runtime)
    with runtime.sessions() as session:
        digest = build_digest(session, WEDNESDAY, runtime.settings)
    assert digest.planned_today == {Reason.APPOINTMENT_REMINDER: 1}
    assert digest.sent_yesterday == {Reason.CADENCE_NUDGE: 1}
    assert [(n.patient, n.detail) for n in digest.not_delivered_yesterday] == [
        ("NOCONTACT", "次回来院のおすすめ：使える連絡先（LINE・メール）がないため送れませんでした")
    ]
    assert [n.patient for n in digest.newly_lapsed] == ["LAPSED"]
    assert [(n.patient, n.detail) for n in digest.acute_for_review] == [("SENT", "急性期 43日目")]
    # One LINE nudge sent this month. Ahead in November: BOOKED's reminder today and,
    # once that visit has passed, its nudge on the 29th; SENT's follow-up on Thursday.
    assert (digest.line_used, digest.line_forecast, digest.line_quota) == (1, 4, 200)


def test_cli_digest_prints_the_text_the_clinic_is_sent(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    build_fixture_clinic(runtime)
    assert main(["digest", "--now", DIGEST_TIME.isoformat()]) == 0
    printed = capsys.readouterr().out
    tick(runtime, DIGEST_TIME)
    mail = _digest_mails(runtime)[0]
    text = mail.get_body(preferencelist=("plain",))
    assert text is not None
    assert text.get_content().strip() in printed
    assert "急性期が42日を超えた方" in printed
    assert "LINEの今月の送信数" in printed


def _digests(sessions: sessionmaker[Session], day: str = "2026-11-25") -> list[Delivery]:
    """The digests of one day (the fixture clinic's worker also sent one the day before)."""
    with sessions() as session:
        return list(
            session.scalars(
                select(Delivery).where(
                    Delivery.reason == Reason.DAILY_DIGEST,
                    Delivery.idempotency_key.startswith(f"daily_digest:{day}:"),
                )
            )
        )


def _digest_mails(runtime: Runtime) -> list[EmailMessage]:
    return [
        message_from_bytes(
            (runtime.settings.outbox_dir / f"{d.id}.eml").read_bytes(), policy=email.policy.default
        )
        for d in _digests(runtime.sessions)
    ]


def test_no_digest_before_its_time(runtime: Runtime) -> None:
    tick(runtime, DIGEST_TIME - timedelta(minutes=1))
    assert _digests(runtime.sessions) == []


def test_digest_goes_once_a_day_however_often_the_worker_ticks(runtime: Runtime) -> None:
    for minute in range(3):
        tick(runtime, DIGEST_TIME + timedelta(minutes=minute))
    tick(runtime, DIGEST_TIME + timedelta(hours=5))
    [digest] = _digests(runtime.sessions)
    assert digest.state is DeliveryState.SENT
    assert digest.idempotency_key == "daily_digest:2026-11-25:email"
    assert digest.patient_id is None


def test_next_day_brings_a_new_digest(runtime: Runtime) -> None:
    tick(runtime, DIGEST_TIME)
    tick(runtime, DIGEST_TIME + timedelta(days=1))
    assert len(_digests(runtime.sessions, "2026-11-25")) == 1
    assert len(_digests(runtime.sessions, "2026-11-26")) == 1


def test_digest_leaves_before_the_patients_send_window_opens(runtime: Runtime) -> None:
    build_fixture_clinic(runtime)
    result = tick(runtime, DIGEST_TIME)  # 08:30, window opens at 09:00
    assert result.dispatched.counts == {"sent": 1}
    assert [d.state for d in _digests(runtime.sessions)] == [DeliveryState.SENT]


def test_digest_goes_to_line_and_email_when_both_are_set(
    runtime: Runtime, settings: Settings
) -> None:
    line_id = "U" + "cd" * 16
    runtime.settings = replace(
        settings,
        config=replace(settings.config, digest=replace(settings.digest, line_user_id=line_id)),
    )
    runtime.dispatcher.settings = runtime.settings
    tick(runtime, DIGEST_TIME)
    assert sorted(d.channel for d in _digests(runtime.sessions)) == [
        ChannelName.EMAIL,
        ChannelName.LINE,
    ]


def test_disabled_digest_is_never_planned(runtime: Runtime, settings: Settings) -> None:
    runtime.settings = replace(
        settings, config=replace(settings.config, digest=replace(settings.digest, enabled=False))
    )
    tick(runtime, DIGEST_TIME)
    assert _digests(runtime.sessions) == []


def test_digest_never_goes_to_a_patient(runtime: Runtime) -> None:
    build_fixture_clinic(runtime)
    tick(runtime, DIGEST_TIME)
    [mail] = _digest_mails(runtime)
    assert mail["To"] == runtime.settings.digest.email


def _rename_reason(runtime: Runtime, external_id: str, reason: Reason) -> None:
    """Give a patient's delivery of `reason` one this version does not know, as a newer
    version would write it."""
    with transaction(runtime.sessions) as session:
        session.execute(
            sa.update(Delivery)
            .where(
                Delivery.reason == reason,
                Delivery.patient_id
                == sa.select(Patient.id)
                .where(Patient.external_id == external_id)
                .scalar_subquery(),
            )
            .values(reason=sa.literal("birthday_greeting"))
        )


def test_undelivered_message_of_an_unknown_reason_is_named_as_it_is(runtime: Runtime) -> None:
    build_fixture_clinic(runtime)
    _rename_reason(runtime, "NOCONTACT", Reason.CADENCE_NUDGE)
    with runtime.sessions() as session:
        digest = build_digest(session, WEDNESDAY, runtime.settings)
    assert [(n.patient, n.detail) for n in digest.not_delivered_yesterday] == [
        ("NOCONTACT", "birthday_greeting：使える連絡先（LINE・メール）がないため送れませんでした")
    ]


def test_counts_leave_out_a_reason_this_version_does_not_know(runtime: Runtime) -> None:
    build_fixture_clinic(runtime)
    _rename_reason(runtime, "SENT", Reason.CADENCE_NUDGE)  # sent yesterday
    _rename_reason(runtime, "BOOKED", Reason.APPOINTMENT_REMINDER)  # planned today
    with runtime.sessions() as session:
        digest = build_digest(session, WEDNESDAY, runtime.settings)
    assert (digest.planned_today, digest.sent_yesterday) == ({}, {})


def test_cli_digest_with_an_unknown_reason_in_the_outbox_prints_the_rest(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    build_fixture_clinic(runtime)
    _rename_reason(runtime, "NOCONTACT", Reason.CADENCE_NUDGE)
    assert main(["digest", "--now", DIGEST_TIME.isoformat()]) == 0
    assert "急性期が42日を超えた方" in capsys.readouterr().out


def test_patient_booked_ahead_is_not_newly_lapsed(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        add_patient(session, WEDNESDAY, "LAPSED", Phase.MAINTENANCE)
        visited(session, WEDNESDAY, days_ago=61, external_id="LAPSED")
        add_appointment(
            session, WEDNESDAY, WEDNESDAY + timedelta(days=3), AppointmentStatus.BOOKED, "LAPSED"
        )
    with runtime.sessions() as session:
        assert build_digest(session, WEDNESDAY, runtime.settings).newly_lapsed == []


def test_cancelled_appointment_after_the_last_visit_leaves_the_patient_lapsed(
    runtime: Runtime,
) -> None:
    with transaction(runtime.sessions) as session:
        add_patient(session, WEDNESDAY, "LAPSED", Phase.MAINTENANCE)
        visited(session, WEDNESDAY, days_ago=61, external_id="LAPSED")
        add_appointment(
            session,
            WEDNESDAY,
            WEDNESDAY - timedelta(days=30),
            AppointmentStatus.CANCELLED,
            "LAPSED",
        )
    with runtime.sessions() as session:
        digest = build_digest(session, WEDNESDAY, runtime.settings)
    assert [(n.patient, n.detail) for n in digest.newly_lapsed] == [
        ("LAPSED", "最終来院 9月25日（金）")
    ]


def test_visit_since_the_day_that_lapsed_keeps_the_patient_from_the_list(
    runtime: Runtime,
) -> None:
    with transaction(runtime.sessions) as session:
        add_patient(session, WEDNESDAY, "BACK", Phase.MAINTENANCE)
        visited(session, WEDNESDAY, days_ago=61, external_id="BACK")
        visited(session, WEDNESDAY, days_ago=10, external_id="BACK")
    with runtime.sessions() as session:
        assert build_digest(session, WEDNESDAY, runtime.settings).newly_lapsed == []


def test_acute_for_review_counts_from_the_return_to_acute(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        add_patient(session, WEDNESDAY - timedelta(days=90), "AGAIN", Phase.ACUTE)
    for days_ago, phase in ((70, "rehab"), (50, "acute")):
        changed = (WEDNESDAY - timedelta(days=days_ago)).isoformat()
        assert main(["patient", "set", "AGAIN", "--phase", phase, "--now", changed]) == 0
    with runtime.sessions() as session:
        digest = build_digest(session, WEDNESDAY, runtime.settings)
    assert [(n.patient, n.detail) for n in digest.acute_for_review] == [("AGAIN", "急性期 50日目")]


# The year_end campaign (config/campaigns.toml) is planned at 10:00 on 1 December,
# after that morning's digest.
YEAR_END_DIGEST = datetime(2026, 12, 1, 8, 30, tzinfo=JST)


def _newsletter_readers(runtime: Runtime, count: int) -> None:
    """LINE patients who want only newsletters and visited a month ago."""
    with transaction(runtime.sessions) as session:
        for n in range(count):
            add_patient(session, YEAR_END_DIGEST, f"N{n}", reminders=False, newsletter=True)
            visited(session, YEAR_END_DIGEST, days_ago=30, external_id=f"N{n}")


def test_todays_newsletters_are_counted_before_they_are_planned(runtime: Runtime) -> None:
    _newsletter_readers(runtime, 1)
    with runtime.sessions() as session:
        digest = build_digest(session, YEAR_END_DIGEST, runtime.settings)
    assert digest.planned_today == {Reason.NEWSLETTER: 1}


def test_line_forecast_counts_newsletters_before_they_are_planned(runtime: Runtime) -> None:
    _newsletter_readers(runtime, 2)  # paced over several days, all in December
    with runtime.sessions() as session:
        digest = build_digest(session, YEAR_END_DIGEST, runtime.settings)
    assert digest.line_forecast == 2


def test_newsletters_planned_already_are_counted_once(runtime: Runtime) -> None:
    _newsletter_readers(runtime, 1)
    planned_at = YEAR_END_DIGEST + timedelta(hours=1, minutes=30)  # the campaign's 10:00
    with transaction(runtime.sessions) as session:
        plan(session, planned_at, runtime.settings.rules, runtime.settings)
    with runtime.sessions() as session:
        digest = build_digest(session, planned_at, runtime.settings)
    assert (digest.planned_today, digest.line_forecast) == ({Reason.NEWSLETTER: 1}, 1)

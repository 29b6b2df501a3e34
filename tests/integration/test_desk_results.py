"""The desk's Results page, `tayori report` and the booking link `/r/<token>`: a
known set of messages, bookings and visits in a real database (SQLite and
PostgreSQL) gives known numbers on the page and in the report; the link counts its
presses per message and refuses what it did not sign; and the page in a real
Chromium against a real `tayori serve`, on a phone and on a desktop."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from scheduler.clock import FixedClock
from scheduler.core.booking_links import BookingTarget, booking_token
from scheduler.core.domain import AppointmentStatus, ChannelName, DeliveryState, Phase, Reason
from scheduler.outbox.planner import plan
from scheduler.runtime import Runtime
from scheduler.store.db import transaction
from scheduler.store.models import (
    Delivery,
    LinkClick,
    Patient,
    UnconsentedDue,
    new_delivery_id,
)
from scheduler.web.app import create_app
from scheduler.worker import tick
from tests.conftest import run_tayori
from tests.integration.browser import PHONE, fits_the_width
from tests.integration.channel_env import SECRET_KEY
from tests.integration.clinic import add_appointment, add_patient
from tests.integration.desk import (
    JST,
    NOW,
    Site,
    emptied,
    fits_the_phone,
    sign_in_with_browser,
    signed_in,
    text_of,
)

SENT_AT = datetime(2026, 10, 5, 10, 0, tzinfo=JST)  # a Monday; NOW is 51 days later
PERIOD = ("2026-10-01", "2026-10-31")
LINE_BOOKING = "https://line.me/R/ti/p/@tayori-demo"  # config/tayori.toml
LINK = re.compile(r"https?://[^\s\"]+/r/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)")


@dataclass(frozen=True)
class Known:
    """The nudges sent, by patient: their delivery ids."""

    nudges: dict[str, str]


# (external id, contacts and consent, then after the nudge: (days until the
# appointment was recorded, days until it starts, its status) or None)
PATIENTS: list[tuple[str, dict[str, Any], tuple[int, int, AppointmentStatus] | None]] = [
    # Nudged by LINE: booked 3 days later, booked 10 days later, booked 20 days later.
    ("A", {}, (3, 5, AppointmentStatus.BOOKED)),
    ("B", {}, (10, 12, AppointmentStatus.BOOKED)),
    ("I", {}, (20, 22, AppointmentStatus.BOOKED)),
    # Nudged by email: came in 6 days later without a booking, recorded 20 days later.
    (
        "C",
        {"line_user_id": None, "email": "c@example.jp", "preferred": ChannelName.EMAIL},
        (20, 6, AppointmentStatus.VISITED),
    ),
    # Due a nudge but no consent: booked 3 days later; never came back.
    ("D", {"reminders": False}, (3, 5, AppointmentStatus.BOOKED)),
    ("F", {"reminders": False}, None),
    # Due a nudge but no contact: booked 10 days later.
    ("E", {"line_user_id": None}, (10, 12, AppointmentStatus.BOOKED)),
]


def known_results(runtime: Runtime, sent_at: datetime = SENT_AT) -> Known:
    """Seven acute patients seen 3 days before `sent_at`, when the worker runs once
    (it plans, and sends the nudges by the preview channel); then the appointments
    of PATIENTS, each imported on its day."""
    with transaction(runtime.sessions) as session:
        for external_id, details, _ in PATIENTS:
            add_patient(session, sent_at - timedelta(days=30), external_id, Phase.ACUTE, **details)
            seen = sent_at - timedelta(days=3)
            add_appointment(session, seen, seen, AppointmentStatus.VISITED, external_id)
    tick(runtime, sent_at)
    for external_id, _, after in PATIENTS:
        if after is not None:
            recorded, starts, status = after
            with transaction(runtime.sessions) as session:
                add_appointment(
                    session,
                    sent_at + timedelta(days=recorded),
                    sent_at + timedelta(days=starts),
                    status,
                    external_id,
                )
    with runtime.sessions() as session:
        rows = session.execute(
            select(Patient.external_id, Delivery.id)
            .join(Delivery, Delivery.patient_id == Patient.id)
            .where(Delivery.reason == Reason.CADENCE_NUDGE, Delivery.state == DeliveryState.SENT)
        ).all()
    return Known({external_id: delivery_id for external_id, delivery_id in rows})


def window(observed: int, responded: int) -> dict[str, int]:
    return {"observed": observed, "booked_or_visited": responded}


def outcome(count: int, seven: tuple[int, int], fourteen: tuple[int, int]) -> dict[str, Any]:
    """`count` messages; (responded, observed) within 7 and within 14 days."""
    return {
        "messages": count,
        "within_7_days": window(seven[1], seven[0]),
        "within_14_days": window(fourteen[1], fourteen[0]),
    }


def expected_reasons(line_clicks: int = 0, line_clicked: int = 0) -> list[dict[str, Any]]:
    """The report of `known_results` for October, with these presses of the LINE
    nudges' links."""
    return [
        {
            "reason": "cadence_nudge",
            "sent": {
                **outcome(4, (2, 4), (3, 4)),
                "clicks": line_clicks,
                "clicked": line_clicked,
            },
            "by_template_and_channel": [
                {
                    "template": "cadence_nudge/email.j2",
                    "channel": "email",
                    **outcome(1, (1, 1), (1, 1)),  # C: the visit on day 6
                    "clicks": 0,
                    "clicked": 0,
                },
                {
                    "template": "cadence_nudge/line.j2",
                    "channel": "line",
                    **outcome(3, (1, 3), (2, 3)),  # A by day 3, B by day 10, I too late
                    "clicks": line_clicks,
                    "clicked": line_clicked,
                },
            ],
            # D booked by day 3, E by day 10, F never.
            "could_not_be_messaged": {
                **outcome(3, (1, 3), (2, 3)),
                "no_consent": 2,
                "no_contact": 1,
            },
        },
        {
            # The follow-ups D and F would have had two days after the nudge (the
            # worker did not run again, so none was sent, and E's waits planned).
            "reason": "cadence_follow_up",
            "sent": {**outcome(0, (0, 0), (0, 0)), "clicks": 0, "clicked": 0},
            "by_template_and_channel": [],
            "could_not_be_messaged": {
                **outcome(2, (1, 2), (1, 2)),
                "no_consent": 2,
                "no_contact": 0,
            },
        },
    ]


def report(env: dict[str, str], *extra: str) -> dict[str, Any]:
    done = run_tayori(
        "report",
        "--from",
        PERIOD[0],
        "--to",
        PERIOD[1],
        "--json",
        "--now",
        NOW.isoformat(),
        *extra,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def link_of(runtime: Runtime, delivery_id: str) -> str:
    """The booking link's token in the LINE message the preview channel wrote."""
    sent = (runtime.settings.outbox_dir / f"{delivery_id}.json").read_text(encoding="utf-8")
    match = LINK.search(sent)
    assert match is not None, sent
    return match.group(1)


# --- the numbers of a known data set ------------------------------------------------


def test_the_report_gives_the_numbers_of_a_known_data_set(
    desk_env: dict[str, str], desk_runtime: Runtime
) -> None:
    known_results(desk_runtime)
    document = report(desk_env)
    assert (document["from"], document["to"]) == PERIOD
    assert document["reasons"] == expected_reasons()


def test_the_report_prints_a_table_of_the_same_numbers(
    desk_env: dict[str, str], desk_runtime: Runtime
) -> None:
    known_results(desk_runtime)
    done = run_tayori(
        "report", "--from", PERIOD[0], "--to", PERIOD[1], "--now", NOW.isoformat(), env=desk_env
    )
    assert done.returncode == 0, done.stderr
    lines = [" ".join(line.split()) for line in done.stdout.splitlines()]
    assert "cadence_nudge cadence_nudge/line.j2 line 3 1/3 33% 2/3 67% 0 (0 presses)" in lines
    assert (
        "cadence_nudge could not be messaged (no consent 2, no contact 1) - 3 1/3 33% 2/3 67% -"
        in lines
    )


def test_the_report_refuses_a_period_that_ends_before_it_starts(
    desk_env: dict[str, str],
) -> None:
    done = run_tayori("report", "--from", "2026-10-31", "--to", "2026-10-01", env=desk_env)
    assert done.returncode == 1
    assert "--from 2026-10-31 is after --to 2026-10-01" in done.stderr


def test_the_results_page_shows_the_numbers_of_a_known_data_set(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    known_results(desk_runtime)
    signed_in(client)
    answer = client.get(f"/results?from={PERIOD[0]}&to={PERIOD[1]}")
    assert answer.status_code == 200
    page = text_of(answer.get_data(as_text=True))
    assert "10月1日（木）〜10月31日（土）にお送りしたメッセージ" in page
    nudges, follow_ups = page.split("次回来院のおすすめ")[1].split("おすすめの再送")
    # Columns: count, then rate and responded/observed within 7 and 14 days, then
    # the messages whose link was pressed and the presses.
    assert "メール cadence_nudge 1 100% 1/1 100% 1/1 0通 0回" in nudges
    assert "LINE cadence_nudge 3 33% 1/3 67% 2/3 0通 0回" in nudges
    assert "お送りしていない方 同意なし 2・連絡先なし 1 3 33% 1/3 67% 2/3 —" in nudges
    assert "お送りした方 75%（3/4）" in nudges  # the chart's bars, 14 days
    assert "お送りしていない方 67%（2/3）" in nudges
    assert "お送りしていない方 同意なし 2・連絡先なし 0 2 50% 1/2 50% 1/2 —" in follow_ups
    assert "お送りした方 該当なし" in follow_ups


def test_a_period_without_messages_says_so(client: FlaskClient, desk_runtime: Runtime) -> None:
    known_results(desk_runtime)
    signed_in(client)
    page = text_of(client.get("/results?from=2026-11-01&to=2026-11-20").get_data(as_text=True))
    assert "この期間にお送りしたメッセージはありません。" in page


def test_a_date_that_is_not_one_shows_the_last_90_days_and_says_why(client: FlaskClient) -> None:
    signed_in(client)
    page = text_of(client.get("/results?from=yesterday").get_data(as_text=True))
    assert "日付は 2026-11-01 のように入力してください。" in page
    assert "8月28日（金）〜11月25日（水）にお送りしたメッセージ" in page


@pytest.mark.parametrize(
    "period", ["to=9999-12-31", "from=0001-01-01&to=0001-01-02", "from=2100-01-01"]
)
def test_a_date_at_the_ends_of_the_calendar_shows_the_last_90_days(
    client: FlaskClient, period: str
) -> None:
    signed_in(client)
    answer = client.get(f"/results?{period}")
    assert answer.status_code == 200
    assert "日付は 2026-11-01 のように入力してください。" in text_of(answer.get_data(as_text=True))


def test_the_results_page_needs_a_sign_in(client: FlaskClient) -> None:
    answer = client.get("/results")
    assert (answer.status_code, answer.location) == (302, "/login")


# --- the booking link ---------------------------------------------------------------


def test_sent_messages_carry_their_own_booking_link_not_the_booking_url(
    desk_runtime: Runtime,
) -> None:
    known = known_results(desk_runtime)
    sent = (desk_runtime.settings.outbox_dir / f"{known.nudges['A']}.json").read_text()
    assert "https://tayori.clinic.example/r/" in sent
    assert LINE_BOOKING not in sent


def _presses(runtime: Runtime) -> list[LinkClick]:
    with runtime.sessions() as session:
        return list(session.scalars(select(LinkClick)))


def test_a_valid_link_redirects_to_the_clinics_booking_url_and_counts_one_press(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    known = known_results(desk_runtime)
    answer = client.get(f"/r/{link_of(desk_runtime, known.nudges['A'])}")
    assert (answer.status_code, answer.location) == (302, LINE_BOOKING)
    assert "Set-Cookie" not in answer.headers
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    [click] = _presses(desk_runtime)
    assert (click.delivery_id, click.clicked_at) == (known.nudges["A"], NOW.astimezone(UTC))


def test_a_head_request_redirects_without_counting(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    known = known_results(desk_runtime)
    answer = client.head(f"/r/{link_of(desk_runtime, known.nudges['A'])}")
    assert (answer.status_code, answer.location) == (302, LINE_BOOKING)
    assert _presses(desk_runtime) == []


def test_a_tampered_link_is_refused_and_counts_nothing(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    known = known_results(desk_runtime)
    token = link_of(desk_runtime, known.nudges["A"])
    payload, signature = token.split(".")
    other = booking_token(SECRET_KEY, "default", known.nudges["B"], BookingTarget.LINE)
    forged = booking_token("not-the-key", "default", known.nudges["A"], BookingTarget.LINE)
    for bad in (
        f"{other.split('.')[0]}.{signature}",  # another message's payload, A's signature
        f"{payload}.{signature[:-2]}",  # truncated
        forged,  # signed with another key
        "nonsense",
    ):
        answer = client.get(f"/r/{bad}")
        assert answer.status_code == 404, bad
        assert answer.location is None
    assert _presses(desk_runtime) == []


def test_a_link_of_a_clinic_not_served_is_refused(client: FlaskClient) -> None:
    token = booking_token(SECRET_KEY, "elsewhere", new_delivery_id(), BookingTarget.LINE)
    assert client.get(f"/r/{token}").status_code == 404


def test_a_link_whose_message_is_not_in_this_clinics_outbox_redirects_uncounted(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    token = booking_token(SECRET_KEY, "default", new_delivery_id(), BookingTarget.LINE)
    answer = client.get(f"/r/{token}")
    assert (answer.status_code, answer.location) == (302, LINE_BOOKING)
    assert _presses(desk_runtime) == []


def test_the_redirect_goes_only_to_the_booking_url_in_the_settings(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    known = known_results(desk_runtime)
    token = booking_token(SECRET_KEY, "default", known.nudges["A"], BookingTarget.WEB)
    answer = client.get(f"/r/{token}?next=https://elsewhere.example/")
    assert (answer.status_code, answer.location) == (302, "https://clinic.example/booking")


def test_the_log_of_a_press_carries_no_token(
    client: FlaskClient, desk_runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    known = known_results(desk_runtime)
    token = link_of(desk_runtime, known.nudges["A"])
    with caplog.at_level("DEBUG"):
        client.get(f"/r/{token}")
    assert f"booking link: delivery {known.nudges['A']} pressed" in caplog.text
    assert token not in caplog.text and token.split(".")[0] not in caplog.text


def test_presses_are_counted_per_message_in_the_report(
    client: FlaskClient, desk_env: dict[str, str], desk_runtime: Runtime
) -> None:
    known = known_results(desk_runtime)
    for patient in ("A", "A", "B"):
        assert client.get(f"/r/{link_of(desk_runtime, known.nudges[patient])}").status_code == 302
    # Three presses, of two messages: both LINE nudges.
    assert report(desk_env)["reasons"] == expected_reasons(line_clicks=3, line_clicked=2)


def test_the_results_page_shows_the_presses_per_message(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    known = known_results(desk_runtime)
    for patient in ("A", "A", "B"):
        client.get(f"/r/{link_of(desk_runtime, known.nudges[patient])}")
    signed_in(client)
    page = text_of(client.get(f"/results?from={PERIOD[0]}&to={PERIOD[1]}").get_data(as_text=True))
    assert "LINE cadence_nudge 3 33% 1/3 67% 2/3 2通 3回" in page


# --- who could not be messaged: recorded by the planner ---------------------------------


def test_the_planner_records_the_reminders_of_a_patient_without_consent(
    desk_runtime: Runtime,
) -> None:
    settings = desk_runtime.settings
    with transaction(desk_runtime.sessions) as session:
        add_patient(session, SENT_AT - timedelta(days=30), "D", Phase.ACUTE, reminders=False)
        seen = SENT_AT - timedelta(days=3)
        add_appointment(session, seen, seen, AppointmentStatus.VISITED, "D")
    with transaction(desk_runtime.sessions) as session:
        plan(session, SENT_AT, settings.rules, settings)
    with desk_runtime.sessions() as session:
        dues = session.scalars(select(UnconsentedDue).order_by(UnconsentedDue.due_at)).all()
        assert session.scalars(select(Delivery)).all() == []  # nothing goes to the patient
    assert [(d.reason, d.due_at) for d in dues] == [
        (Reason.CADENCE_NUDGE, SENT_AT.astimezone(UTC)),
        (Reason.CADENCE_FOLLOW_UP, (SENT_AT + timedelta(days=2)).astimezone(UTC)),
    ]


def test_a_booking_before_its_moment_removes_a_would_be_reminder_but_not_a_past_one(
    desk_runtime: Runtime,
) -> None:
    settings = desk_runtime.settings
    with transaction(desk_runtime.sessions) as session:
        add_patient(session, SENT_AT - timedelta(days=30), "D", Phase.ACUTE, reminders=False)
        seen = SENT_AT - timedelta(days=3)
        add_appointment(session, seen, seen, AppointmentStatus.VISITED, "D")
    with transaction(desk_runtime.sessions) as session:
        plan(session, SENT_AT, settings.rules, settings)
    booked = SENT_AT + timedelta(days=1)
    with transaction(desk_runtime.sessions) as session:
        add_appointment(session, booked, booked + timedelta(days=3), external_id="D")
    with transaction(desk_runtime.sessions) as session:
        plan(session, booked, settings.rules, settings)
    with desk_runtime.sessions() as session:
        dues = session.scalars(select(UnconsentedDue)).all()
    # The nudge's moment had passed: it stays; the follow-up goes, and the booking
    # brings the reminder the patient would have had the day before.
    assert sorted(d.reason for d in dues) == [Reason.APPOINTMENT_REMINDER, Reason.CADENCE_NUDGE]


# --- in a real browser, against a real `tayori serve` --------------------------------


def results_a_month_ago(site: Site) -> None:
    """The known data set, its nudges sent 30 days ago at 10:00 (the web process runs
    on the real clock: its default period, the last 90 days, holds them)."""
    now = datetime.now(UTC)
    emptied(site.runtime, now)
    day = now.astimezone(JST).date() - timedelta(days=30)
    known_results(site.runtime, datetime.combine(day, time(10), tzinfo=JST))


def test_the_results_page_on_a_phone(site: Site, browser: Any, screenshots: Path) -> None:
    results_a_month_ago(site)
    page = browser.new_page(viewport=PHONE)
    try:
        sign_in_with_browser(page, site.base)
        page.get_by_role("link", name="効果").click()
        page.wait_for_load_state()
        assert page.inner_text("h1") == "効果"
        chart = page.get_by_role("img", name=re.compile("次回来院のおすすめ"))
        assert chart.get_attribute("aria-label") == (
            "次回来院のおすすめ：お送りした方 75%（3/4）、お送りしていない方 67%（2/3）"
        )
        assert "LINE cadence_nudge 3" in " ".join(page.inner_text("main").split())
        assert fits_the_phone(page) and fits_the_width(page)
        page.screenshot(path=str(screenshots / "desk-results-phone.png"), full_page=True)
    finally:
        page.close()


def test_the_results_page_on_a_desktop_chooses_a_period(
    site: Site, browser: Any, screenshots: Path
) -> None:
    results_a_month_ago(site)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        sign_in_with_browser(page, site.base)
        page.goto(f"{site.base}/results")
        assert fits_the_phone(page)
        page.screenshot(path=str(screenshots / "desk-results-desktop.png"), full_page=True)
        today = datetime.now(UTC).astimezone(JST).date()
        page.get_by_label("はじめ").fill((today - timedelta(days=7)).isoformat())
        page.get_by_role("button", name="表示").click()
        page.wait_for_load_state()
        assert "この期間にお送りしたメッセージはありません。" in page.inner_text("main")
    finally:
        page.close()


def test_a_link_that_is_not_ours_names_no_clinic(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    page = client.get("/r/nonsense").get_data(as_text=True)
    assert desk_runtime.settings.clinic.name not in page
    assert "通院先に直接お問い合わせください" in page


def test_a_link_to_a_booking_url_since_removed_gives_that_clinics_contact(
    desk_runtime: Runtime,
) -> None:
    known = known_results(desk_runtime)
    link = link_of(desk_runtime, known.nudges["A"])
    clinic = replace(desk_runtime.settings.clinic, booking_url_line="")
    config = replace(desk_runtime.settings.config, clinic=clinic)
    settings = replace(desk_runtime.settings, config=config)
    client = create_app(
        settings, replace(desk_runtime, settings=settings), FixedClock(NOW)
    ).test_client()
    answer = client.get(f"/r/{link}")
    assert answer.status_code == 404
    page = answer.get_data(as_text=True)
    assert clinic.name in page and "ご予約はお電話かメールで" in page

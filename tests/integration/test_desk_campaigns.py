"""The desk's Campaigns page: the coming occurrences of each seasonal campaign with
their audience, LINE/email split and the LINE quota they need (the numbers of
`tayori campaigns`), and pausing or resuming a campaign — through the Flask app
against a real database (SQLite and PostgreSQL), the real planner and `tayori tick`,
the CLI as a user runs it, and a real `tayori serve` driven by a real Chromium."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from scheduler.clock import FixedClock
from scheduler.commands import main
from scheduler.core.domain import ChannelName, DeliveryState, Reason
from scheduler.messages.context import japanese_date
from scheduler.outbox import transitions
from scheduler.outbox.campaign_control import pause, resume
from scheduler.outbox.planner import plan
from scheduler.outbox.transitions import WITHDRAWN_CAMPAIGN_PAUSED
from scheduler.runtime import Runtime
from scheduler.store.db import transaction
from scheduler.store.models import Delivery, DeskAudit, PausedCampaign
from scheduler.store.paused_campaigns import add_pause, paused_ids
from tests.integration.browser import PHONE, fits_the_width
from tests.integration.clinic import add_appointment, add_patient, visited
from tests.integration.desk import (
    JST,
    NOW,
    STAFF,
    Site,
    claim_due,
    csrf_of,
    emptied,
    fits_the_phone,
    second_clinic,
    sign_in_with_browser,
    signed_in,
    text_of,
)

YEAR_END = datetime(2026, 12, 1, 10, 0, tzinfo=JST)  # the year_end campaign's moment


def known_clinic(runtime: Runtime) -> None:
    """At NOW: three readers by LINE and one by email who visited 30 days ago, one
    more by LINE booked on 10 December (so left out of year_end, which leaves out
    patients booked in its next 28 days), and a patient who wants no newsletters."""
    with transaction(runtime.sessions) as session:
        for external_id in ("LINE1", "LINE2", "LINE3", "BOOKED"):
            add_patient(session, NOW, external_id, newsletter=True, reminders=False)
        add_patient(
            session,
            NOW,
            "MAIL",
            newsletter=True,
            reminders=False,
            line_user_id=None,
            email="mail@example.jp",
            preferred=ChannelName.EMAIL,
        )
        add_patient(session, NOW, "NONE", newsletter=False, reminders=False)
        for external_id in ("LINE1", "LINE2", "LINE3", "BOOKED", "MAIL", "NONE"):
            visited(session, NOW, days_ago=30, external_id=external_id)
        add_appointment(session, NOW, datetime(2026, 12, 10, 10, tzinfo=JST), external_id="BOOKED")


def readers(runtime: Runtime, count: int) -> None:
    """Patients who want newsletters (and no cadence messages), seen 30 days before NOW."""
    with transaction(runtime.sessions) as session:
        for n in range(1, count + 1):
            add_patient(session, NOW, f"R{n:03d}", newsletter=True, reminders=False)
            visited(session, NOW, days_ago=30, external_id=f"R{n:03d}")


HEADING = r"\b{} (?:送信する|停止中) "


def _section(page: str, campaign_id: str) -> str:
    """The text of one campaign's section of the page, from its heading to the next."""
    after = re.split(HEADING.format(re.escape(campaign_id)), page, maxsplit=1)[1]
    return re.split(HEADING.format(r"[a-z_]+"), after, maxsplit=1)[0]


def _campaigns_page(client: FlaskClient) -> str:
    answer = client.get("/campaigns")
    assert answer.status_code == 200
    return text_of(answer.get_data(as_text=True))


def _post(client: FlaskClient, path: str) -> TestResponse:
    return client.post(path, data={"csrf_token": csrf_of(client, "/campaigns")})


def _year_end(runtime: Runtime) -> list[Delivery]:
    with runtime.sessions() as session:
        return list(
            session.scalars(
                select(Delivery).where(
                    Delivery.clinic_id == runtime.settings.clinic_id,
                    Delivery.reason == Reason.NEWSLETTER,
                    Delivery.campaign_id == "year_end",
                )
            )
        )


def _states(rows: list[Delivery]) -> Counter[DeliveryState]:
    return Counter(row.state for row in rows)


def _plan(runtime: Runtime, now: datetime) -> None:
    with transaction(runtime.sessions) as session:
        plan(session, now, runtime.settings.rules, runtime.settings)


# --- the numbers ------------------------------------------------------------------


def test_the_page_shows_each_coming_occurrence_with_its_audience_and_channels(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    known_clinic(desk_runtime)
    signed_in(client)
    page = _campaigns_page(client)
    assert "送信 0 通・残り 200 通 （上限 200 通）" in page
    # day, audience, LINE, email, LINE left that month (December's: its whole limit)
    assert "12月1日（火） 4 3 1 200" in _section(page, "year_end")
    season = _section(page, "season_change")
    assert "2027年1月17日（日） 5 4 1 200" in season
    assert "2027年4月17日（土） 5 4 1 200" in season
    # The visits are more than 180 days before July and October: nobody then.
    assert "2027年7月20日（火） 0 0 0 200" in season
    assert "2027年10月21日（木） 0 0 0 200" in season
    assert "毎年12月1日 10:00から・5日間に分けて、1時間に30通まで" in page


def test_the_page_shows_the_same_numbers_as_the_campaigns_command(
    client: FlaskClient, desk_runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    known_clinic(desk_runtime)
    signed_in(client)
    page = _campaigns_page(client)
    assert main(["campaigns", "--json", "--now", NOW.isoformat()]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 5
    for row in rows:
        day = datetime.fromisoformat(row["day"]).date()
        year = f"{day.year}年" if day.year != NOW.year else ""
        numbers = f"{row['audience']} {row['line']} {row['email']} {row['line_left_that_month']}"
        assert f"{year}{japanese_date(day)} {numbers}" in _section(page, row["campaign"]), row


def test_an_occurrence_needing_more_line_than_the_month_has_says_how_many_go_over(
    desk_runtime: Runtime, clock: FixedClock
) -> None:
    from scheduler.web.app import create_app

    settings = desk_runtime.settings
    line = replace(settings.config.line, monthly_quota=3)
    small = replace(settings, config=replace(settings.config, line=line))
    runtime = replace(desk_runtime, settings=small)
    known_clinic(runtime)
    client = create_app(small, runtime, clock).test_client()
    signed_in(client)
    page = _campaigns_page(client)
    assert "12月1日（火） 4 3 1 3" in _section(page, "year_end")  # three fit in three
    assert "2027年1月17日（日） 5 4 1 3（1 超過）" in _section(page, "season_change")
    assert "LINEの残りを超える分は、メールアドレスのある方にはメールで" in page


def test_a_campaign_switched_off_in_the_campaigns_file_is_shown_without_a_button(
    desk_runtime: Runtime, clock: FixedClock
) -> None:
    from scheduler.web.app import create_app

    settings = desk_runtime.settings
    off = tuple(replace(c, enabled=c.id != "year_end") for c in settings.campaigns)
    switched = replace(settings, campaigns=off)
    client = create_app(switched, replace(desk_runtime, settings=switched), clock).test_client()
    signed_in(client)
    html = client.get("/campaigns").get_data(as_text=True)
    assert "設定ファイル（campaigns.toml）で止められています" in _section(text_of(html), "year_end")
    assert "停止する（year_end）" not in html and "再開する（year_end）" not in html
    assert "停止する（season_change）" in html


# --- pausing and resuming -----------------------------------------------------------


def test_pausing_withdraws_the_planned_newsletters_but_not_the_sent_and_records_who(
    client: FlaskClient, desk_runtime: Runtime, clock: FixedClock
) -> None:
    known_clinic(desk_runtime)
    _plan(desk_runtime, YEAR_END)
    with transaction(desk_runtime.sessions) as session:
        [first] = claim_due(session, YEAR_END, limit=1)
        transitions.record_sent(session, [(first.claim, None, None)], YEAR_END)
    clock.set(YEAR_END + timedelta(minutes=5))
    signed_in(client)
    assert "いま送信を待っているお便り： 3 件" in _section(_campaigns_page(client), "year_end")
    answer = _post(client, "/campaigns/year_end/pause")
    assert answer.location == "/campaigns"
    page = _campaigns_page(client)
    assert "year_end を停止しました。予定していたお便り 3 件を取りやめました。" in page
    assert "year_end 停止中" in page
    rows = _year_end(desk_runtime)
    assert _states(rows) == {DeliveryState.SENT: 1, DeliveryState.WITHDRAWN: 3}
    assert {r.last_error for r in rows if r.state is DeliveryState.WITHDRAWN} == {
        WITHDRAWN_CAMPAIGN_PAUSED
    }
    with desk_runtime.sessions() as session:
        [record] = session.scalars(select(DeskAudit)).all()
        [paused] = session.scalars(select(PausedCampaign)).all()
    assert (record.action, record.detail, record.at) == (
        "campaign_pause",
        "campaign year_end paused; 3 planned newsletters withdrawn",
        (YEAR_END + timedelta(minutes=5)).astimezone(UTC),
    )
    assert (paused.campaign_id, paused.paused_by) == ("year_end", record.user_id)


def test_the_page_says_when_and_by_whom_a_campaign_was_paused(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    signed_in(client)
    _post(client, "/campaigns/season_change/pause")
    section = _section(_campaigns_page(client), "season_change")
    assert f"11月25日（水）09:30に停止（{STAFF}）。再開するまで、お便りは送りません。" in section
    assert "再開する" in section
    # Its occurrences are still listed, with what they would need, but need no LINE.
    assert "2027年1月17日（日） 0 0 0 —" in section


def test_a_campaign_paused_before_its_moment_is_not_planned(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    readers(desk_runtime, 3)
    signed_in(client)
    _post(client, "/campaigns/year_end/pause")
    _plan(desk_runtime, YEAR_END)
    _plan(desk_runtime, YEAR_END + timedelta(days=1))
    assert _year_end(desk_runtime) == []


def test_resuming_plans_the_withdrawn_newsletters_again_at_their_moments(
    client: FlaskClient, desk_runtime: Runtime, clock: FixedClock
) -> None:
    readers(desk_runtime, 5)
    _plan(desk_runtime, YEAR_END)
    planned = {r.idempotency_key: r.send_after for r in _year_end(desk_runtime)}
    clock.set(YEAR_END + timedelta(minutes=1))
    signed_in(client)
    _post(client, "/campaigns/year_end/pause")
    clock.set(YEAR_END + timedelta(minutes=2))
    assert _post(client, "/campaigns/year_end/resume").location == "/campaigns"
    assert "year_end を再開しました。" in _campaigns_page(client)
    _plan(desk_runtime, YEAR_END + timedelta(minutes=3))
    rows = _year_end(desk_runtime)
    # The first one's moment (10:00) passed during the pause: it takes the next free
    # slot of the pacing; the others keep theirs.
    assert _states(rows) == {DeliveryState.PLANNED: 5}
    moved = {r.idempotency_key for r in rows if r.send_after != planned[r.idempotency_key]}
    [first] = [key for key, at in planned.items() if at == YEAR_END]
    assert moved == {first}
    with desk_runtime.sessions() as session:
        actions = [a.action for a in session.scalars(select(DeskAudit).order_by(DeskAudit.id))]
        assert session.scalars(select(PausedCampaign)).all() == []
    assert actions == ["campaign_pause", "campaign_resume"]


def test_newsletters_whose_moments_passed_during_a_pause_keep_to_the_pacing(
    desk_runtime: Runtime,
) -> None:
    readers(desk_runtime, 60)
    settings = desk_runtime.settings
    _plan(desk_runtime, YEAR_END)
    with transaction(desk_runtime.sessions) as session:
        assert pause(session, settings, "year_end", None, YEAR_END).withdrawn == 60
    back = datetime(2026, 12, 3, 12, 0, tzinfo=JST)
    with transaction(desk_runtime.sessions) as session:
        assert resume(session, settings, "year_end")
    _plan(desk_runtime, back)
    moments = [r.send_after for r in _year_end(desk_runtime)]
    assert len(moments) == 60 and len(set(moments)) == 60
    assert min(moments) >= back
    per_hour = Counter(
        m.astimezone(JST).replace(minute=0, second=0, microsecond=0) for m in moments
    )
    assert max(per_hour.values()) <= 30


def test_a_pause_and_a_resume_take_effect_at_the_next_worker_cycle(
    client: FlaskClient, desk_runtime: Runtime, clock: FixedClock
) -> None:
    """`tayori tick` plans only the patients whose facts changed or whose moment has
    come; a pause or a resume changes no patient, so it is the planner's settings
    fingerprint (taken of the campaigns in force) that has everyone planned again."""
    readers(desk_runtime, 40)
    signed_in(client)

    def tick(at: datetime) -> None:
        assert main(["tick", "--now", at.isoformat()]) == 0

    tick(YEAR_END)
    assert len(_year_end(desk_runtime)) == 40
    tick(YEAR_END + timedelta(minutes=1))  # every patient planned, none due again
    clock.set(YEAR_END + timedelta(minutes=5))
    _post(client, "/campaigns/year_end/pause")
    tick(YEAR_END + timedelta(minutes=10))
    paused = _states(_year_end(desk_runtime))
    assert paused[DeliveryState.PLANNED] == 0
    assert paused[DeliveryState.WITHDRAWN] == 40 - paused[DeliveryState.SENT]
    clock.set(YEAR_END + timedelta(minutes=15))
    _post(client, "/campaigns/year_end/resume")
    tick(YEAR_END + timedelta(minutes=20))
    resumed = _states(_year_end(desk_runtime))
    assert resumed[DeliveryState.WITHDRAWN] == 0
    assert resumed[DeliveryState.PLANNED] + resumed[DeliveryState.SENT] == 40


def test_a_newsletter_planned_before_a_pause_it_raced_is_not_sent(
    desk_runtime: Runtime,
) -> None:
    """A plan that read the campaigns just before a pause committed may have planned
    its newsletters again; the worker reads the pauses with its claims and sends
    none of them (skipped, to come back on resuming)."""
    readers(desk_runtime, 3)
    _plan(desk_runtime, YEAR_END)
    with transaction(desk_runtime.sessions) as session:
        add_pause(session, "year_end", None, YEAR_END)  # the pause, without its withdrawal
    desk_runtime.dispatcher.dispatch_due(YEAR_END + timedelta(days=10))
    rows = _year_end(desk_runtime)
    assert _states(rows) == {DeliveryState.SKIPPED: 3}
    assert {row.last_error for row in rows} == {WITHDRAWN_CAMPAIGN_PAUSED}


def test_the_dry_run_leaves_out_a_paused_campaign_and_says_so(
    desk_runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    readers(desk_runtime, 2)
    day_before = (YEAR_END - timedelta(days=1)).isoformat()

    def newsletters() -> list[str]:
        assert main(["plan", "--now", day_before, "--json"]) == 0
        return [m["template"] for m in json.loads(capsys.readouterr().out)]

    assert newsletters() == ["year_end/line.j2"] * 2
    assert main(["campaign", "pause", "year_end", "--now", day_before]) == 0
    assert "campaign year_end paused: 0 planned newsletter(s) withdrawn" in capsys.readouterr().out
    assert newsletters() == []
    assert main(["plan", "--now", day_before]) == 0
    assert "paused, so none of their newsletters: year_end" in capsys.readouterr().out
    assert main(["campaign", "resume", "year_end"]) == 0
    assert "campaign year_end resumed" in capsys.readouterr().out
    assert newsletters() == ["year_end/line.j2"] * 2


def test_the_campaign_command_pauses_as_the_command_line_and_the_desk_shows_it(
    client: FlaskClient, desk_runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["campaign", "pause", "year_end", "--now", NOW.isoformat()]) == 0
    assert main(["campaign", "pause", "year_end"]) == 0
    assert "campaign year_end was paused already" in capsys.readouterr().out
    signed_in(client)
    assert "に停止（コマンド）" in _section(_campaigns_page(client), "year_end")
    with desk_runtime.sessions() as session:
        [paused] = session.scalars(select(PausedCampaign)).all()
    assert paused.paused_by is None


def test_the_campaigns_command_marks_a_paused_campaign(
    desk_runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    known_clinic(desk_runtime)
    assert main(["campaign", "pause", "year_end"]) == 0
    capsys.readouterr()
    assert main(["campaigns", "--now", NOW.isoformat()]) == 0
    [line] = [row for row in capsys.readouterr().out.splitlines() if "year_end" in row]
    assert line.split()[1:] == ["year_end", "4", "3", "1", "paused:", "nothing", "sent"]
    assert main(["campaigns", "--json", "--now", NOW.isoformat()]) == 0
    [year_end] = [r for r in json.loads(capsys.readouterr().out) if r["campaign"] == "year_end"]
    assert (year_end["paused"], year_end["line_over_quota"]) == (True, 0)


def test_pausing_an_unknown_campaign_changes_nothing(
    client: FlaskClient, desk_runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    signed_in(client)
    assert _post(client, "/campaigns/no_such/pause").location == "/campaigns"
    assert "このキャンペーンは見つかりませんでした。" in _campaigns_page(client)
    assert main(["campaign", "pause", "no_such"]) == 1
    assert "no campaign 'no_such' in the campaigns file: season_change, year_end" in (
        capsys.readouterr().err
    )
    with desk_runtime.sessions() as session:
        assert session.scalars(select(PausedCampaign)).all() == []
        assert session.scalars(select(DeskAudit)).all() == []


def test_resuming_a_campaign_that_is_not_paused_changes_nothing(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    signed_in(client)
    _post(client, "/campaigns/year_end/resume")
    assert "year_end は停止していません。" in _campaigns_page(client)
    with desk_runtime.sessions() as session:
        assert session.scalars(select(DeskAudit)).all() == []


def test_a_campaign_switched_off_in_the_campaigns_file_has_its_planned_newsletters_withdrawn(
    desk_runtime: Runtime,
) -> None:
    readers(desk_runtime, 3)
    _plan(desk_runtime, YEAR_END)
    settings = desk_runtime.settings
    off = tuple(replace(c, enabled=c.id != "year_end") for c in settings.campaigns)
    switched = replace(desk_runtime, settings=replace(settings, campaigns=off))
    _plan(switched, YEAR_END + timedelta(minutes=1))
    rows = _year_end(desk_runtime)
    assert _states(rows) == {DeliveryState.WITHDRAWN: 3}
    assert {r.last_error for r in rows} == {WITHDRAWN_CAMPAIGN_PAUSED}


def test_a_pause_in_one_clinic_leaves_another_clinics_campaign_running(
    client: FlaskClient, desk_runtime: Runtime, tmp_path: Path
) -> None:
    north = second_clinic(desk_runtime, tmp_path / "north", ("tayori.toml", "campaigns.toml"))
    readers(desk_runtime, 2)
    readers(north, 3)
    signed_in(client)
    _post(client, "/campaigns/year_end/pause")
    _plan(desk_runtime, YEAR_END)
    _plan(north, YEAR_END)
    with north.sessions() as session:
        assert paused_ids(session) == frozenset()
    assert _states(_year_end(north)) == {DeliveryState.PLANNED: 3}
    assert _year_end(desk_runtime) == []


# --- in a real browser, against a real `tayori serve` ------------------------------


def _browser_clinic(runtime: Runtime, now: datetime) -> None:
    """An emptied clinic with the staff account and two readers (the web process runs
    on the real clock)."""
    emptied(runtime, now)
    with transaction(runtime.sessions) as session:
        for external_id in ("R1", "R2"):
            add_patient(session, now, external_id, newsletter=True, reminders=False)
            visited(session, now, days_ago=10, external_id=external_id)


def _pause_then_resume(page: Any, base: str, shots: Path, name: str) -> None:
    sign_in_with_browser(page, base)
    page.get_by_role("link", name="キャンペーン").click()
    page.wait_for_load_state()
    assert page.url == f"{base}/campaigns"
    assert page.inner_text("h1") == "キャンペーン"
    assert fits_the_phone(page) and fits_the_width(page)
    page.screenshot(path=str(shots / f"desk-campaigns-{name}.png"), full_page=True)
    page.get_by_role("button", name="停止する（year_end）").click()
    page.wait_for_load_state()
    body = page.inner_text("body")
    assert "year_end を停止しました。" in body
    assert "再開するまで、お便りは送りません。" in body
    assert fits_the_phone(page) and fits_the_width(page)
    page.screenshot(path=str(shots / f"desk-campaigns-paused-{name}.png"), full_page=True)
    page.get_by_role("button", name="再開する（year_end）").click()
    page.wait_for_load_state()
    assert "year_end を再開しました。" in page.inner_text("body")
    assert page.get_by_role("button", name="停止する（year_end）").count() == 1
    assert fits_the_phone(page)
    page.screenshot(path=str(shots / f"desk-campaigns-resumed-{name}.png"), full_page=True)


def _audited(runtime: Runtime) -> list[tuple[str, str]]:
    with runtime.sessions() as session:
        records = session.scalars(select(DeskAudit).order_by(DeskAudit.id))
        return [(r.action, r.detail) for r in records if r.action != "sign_in"]


@pytest.mark.parametrize(
    "name, viewport", [("phone", PHONE), ("desktop", {"width": 1280, "height": 900})]
)
def test_staff_pause_and_resume_a_campaign_in_a_browser(
    site: Site, browser: Any, screenshots: Path, name: str, viewport: dict[str, int]
) -> None:
    _browser_clinic(site.runtime, datetime.now(UTC))
    page = browser.new_page(viewport=viewport)
    try:
        _pause_then_resume(page, site.base, screenshots, name)
    finally:
        page.close()
    assert _audited(site.runtime) == [
        ("campaign_pause", "campaign year_end paused; 0 planned newsletters withdrawn"),
        ("campaign_resume", "campaign year_end resumed"),
    ]

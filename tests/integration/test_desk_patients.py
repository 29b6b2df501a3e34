"""The desk's Patients pages: finding a patient, their page, changing their phase
and cadence (planned again at once), and their LINE link code — through the Flask
app against a real database (SQLite and PostgreSQL), and a real `tayori serve`
driven by a real Chromium."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from scheduler.clock import FixedClock
from scheduler.core.domain import ChannelName, ConsentKind, DeliveryState, Phase, Reason
from scheduler.outbox import transitions
from scheduler.outbox.planner import PlannedMessage, dry_run, plan, plan_patient
from scheduler.runtime import Runtime, open_runtime
from scheduler.settings import load_settings
from scheduler.store.consent import ConsentSource, record_consent
from scheduler.store.db import transaction
from scheduler.store.forget import forget_patient
from scheduler.store.models import (
    CadenceChange,
    Delivery,
    DeskAudit,
    LinkCode,
    Patient,
    Replan,
)
from scheduler.store.patients import find_patient
from scheduler.web.app import create_app
from tests.conftest import ROOT
from tests.integration.browser import PHONE, fits_the_width
from tests.integration.clinic import add_patient, visited
from tests.integration.desk import (
    JST,
    NOW,
    Site,
    add_staff_account,
    claim_due,
    csrf_of,
    emptied,
    fits_the_phone,
    second_clinic,
    serving_desk,
    sign_in_with_browser,
    signed_in,
    text_of,
)

EMAIL = "hanako@example.jp"
BASIC_ID = "@123abcde"
# What the LINE channel records of a user it cannot reach, and what staff read of it.
REFUSED_BY_LINE = (
    "LINE 400: Failed to send messages (this LINE user id cannot be reached from this channel)"
)
REFUSED_BY_LINE_SAID = "このLINEの方には届きません（ブロックや連携の解除など）"
# What the email channel records of an address its server refused.
MAILBOX_FULL = "address refused: 552 5.2.2 mailbox full"


def a_maintenance_patient(
    runtime: Runtime, now: datetime, external_id: str = "P001", *, reminders: bool = True
) -> int:
    """A patient in maintenance who visited 4 days before `now`, planned by a worker
    cycle at `now`; their row id."""
    with transaction(runtime.sessions) as session:
        patient = add_patient(
            session,
            now - timedelta(days=30),
            external_id,
            Phase.MAINTENANCE,
            email=EMAIL,
            reminders=reminders,
        )
        visited(session, now, days_ago=4, external_id=external_id)
        patient_id = patient.id
    with transaction(runtime.sessions) as session:
        plan(session, now, runtime.settings.rules, runtime.settings)
    return patient_id


def planned(runtime: Runtime, patient_id: int) -> list[tuple[Reason, datetime]]:
    """The patient's planned messages in the outbox."""
    with runtime.sessions() as session:
        return [
            (d.reason, d.send_after)
            for d in session.scalars(
                select(Delivery)
                .where(Delivery.patient_id == patient_id, Delivery.state == DeliveryState.PLANNED)
                .order_by(Delivery.send_after)
            )
        ]


def upcoming(runtime: Runtime, now: datetime, days: int = 14) -> list[PlannedMessage]:
    """What `tayori plan --days N` prints: the dry run."""
    settings = runtime.settings
    with runtime.sessions() as session:
        return dry_run(session, now, now + timedelta(days=days), settings.rules, settings)


def at_10(now: datetime, days_later: int) -> datetime:
    """10:00 clinic time, `days_later` days after `now`'s day: when a nudge goes."""
    day = now.astimezone(JST).date() + timedelta(days=days_later)
    return datetime.combine(day, time(10), tzinfo=JST)


def change_phase(client: FlaskClient, patient_id: int, phase: str, **days: str) -> Any:
    return client.post(
        f"/patients/{patient_id}/cadence",
        data={
            "phase": phase,
            "nudge_after_days": days.get("nudge", ""),
            "follow_up_days": days.get("follow_up", ""),
            "csrf_token": csrf_of(client, f"/patients/{patient_id}"),
        },
    )


# --- search -----------------------------------------------------------------------


def some_patients(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        add_patient(session, NOW, "P001", Phase.ACUTE, name="山田 花子")
        add_patient(session, NOW, "P002", Phase.REHAB, name="佐藤 一郎")
        add_patient(session, NOW, "P0021", Phase.MAINTENANCE, name="鈴木 二郎")
        add_patient(session, NOW, "K-9", None, name="山本 P002")


def test_search_finds_a_patient_by_number_and_puts_that_number_first(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    some_patients(desk_runtime)
    signed_in(client)
    page = text_of(client.get("/patients?q=P002").get_data(as_text=True))
    assert "山田 花子" not in page
    # The patient numbered P002 first, then the others holding "P002" by number.
    assert page.index("佐藤 一郎") < page.index("山本 P002") < page.index("鈴木 二郎")


def test_search_finds_patients_by_part_of_the_name(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    some_patients(desk_runtime)
    signed_in(client)
    page = text_of(client.get("/patients?q=山").get_data(as_text=True))
    assert "山田 花子 様 患者番号 P001・急性期" in page
    assert "山本 P002 様 患者番号 K-9・フェーズなし" in page
    assert "佐藤" not in page and "鈴木" not in page


def test_search_finds_a_number_typed_in_full_width_and_any_case(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    some_patients(desk_runtime)
    signed_in(client)
    assert "佐藤 一郎" in client.get("/patients?q=ｐ００２").get_data(as_text=True)


def test_search_takes_percent_and_underscore_as_themselves(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    some_patients(desk_runtime)
    signed_in(client)
    assert "に当てはまる患者はいません。" in client.get("/patients?q=%25").get_data(as_text=True)
    assert "に当てはまる患者はいません。" in client.get("/patients?q=P_0").get_data(as_text=True)


def test_search_shows_thirty_patients_a_page_with_a_link_to_the_next(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    with transaction(desk_runtime.sessions) as session:
        for n in range(31):
            add_patient(session, NOW, f"P{n:03}", Phase.ACUTE, name=f"患者 {n:03}")
    signed_in(client)
    first = client.get("/patients?q=P0").get_data(as_text=True)
    assert first.count("患者番号 P0") == 30
    assert "患者番号 P030" not in first
    assert "/patients?q=P0&amp;page=2" in first
    second = client.get("/patients?q=P0&page=2").get_data(as_text=True)
    assert second.count("患者番号 P0") == 1 and "患者番号 P030" in second


def test_search_finds_no_patient_of_another_clinic(
    client: FlaskClient, desk_runtime: Runtime, tmp_path: Path
) -> None:
    other = second_clinic(desk_runtime, tmp_path / "north")
    with transaction(other.sessions) as session:
        add_patient(session, NOW, "P001", Phase.ACUTE, name="北の 患者")
        elsewhere = find_patient(session, "P001")
        assert elsewhere is not None
        other_id = elsewhere.id
    signed_in(client)
    assert "北の 患者" not in client.get("/patients?q=P001").get_data(as_text=True)
    assert client.get(f"/patients/{other_id}").status_code == 404


# --- a patient's page --------------------------------------------------------------


def test_the_patient_page_shows_phase_cadence_consent_contacts_and_messages(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    patient_id = a_maintenance_patient(desk_runtime, NOW - timedelta(days=1))
    with transaction(desk_runtime.sessions) as session:
        record_consent(session, patient_id, ConsentKind.NEWSLETTER, True, ConsentSource.DESK, NOW)
    signed_in(client)
    page = text_of(client.get(f"/patients/{patient_id}").get_data(as_text=True))
    assert "山田 花子 様 患者番号 P001" in page
    assert "フェーズ メンテナンス期" in page
    assert "来院のおすすめ 最後の来院から 12日後（フェーズの標準）" in page
    assert "最後の来院 11月20日（金）09:30" in page
    assert "来院のおすすめ・予約のお知らせ 同意あり 取り消す 季節のお便り 同意あり 取り消す" in page
    assert "11月25日（水）09:30 季節のお便り：同意 管理画面" in page
    assert f"LINE 連携済み（取り込み） メール {EMAIL} 希望する連絡方法 LINE" in page
    assert (
        "今後の送信予定 次回来院のおすすめ（LINE） 12月2日（水）10:00・ 送信予定 "
        "おすすめの再送（LINE） 12月9日（水）10:00・ 送信予定"
    ) in page
    assert "まだ送ったメッセージはありません。" in page


def test_the_patient_page_logs_messages_newest_first_with_state_and_error(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    first = NOW - timedelta(days=20) + timedelta(hours=1)  # 11/5 10:30, a nudge due
    second = NOW - timedelta(days=2) + timedelta(hours=1)  # 11/23 10:30, the next
    patient_id = a_maintenance_patient(desk_runtime, first - timedelta(days=8))
    with transaction(desk_runtime.sessions) as session:
        visited(session, NOW, days_ago=14, external_id="P001")
    for moment in (first, second):
        with transaction(desk_runtime.sessions) as session:
            plan(session, moment, desk_runtime.settings.rules, desk_runtime.settings)
            [claimed] = claim_due(session, moment)
            if moment == first:
                transitions.record_sent(session, [(claimed.claim, "provider-1", None)], moment)
            else:
                transitions.fail(session, claimed.claim, REFUSED_BY_LINE, moment)
    signed_in(client)
    page = text_of(client.get(f"/patients/{patient_id}").get_data(as_text=True))
    log = page.split("送信の記録")[1]
    failed = log.index(
        f"11月23日（月）10:30・ 送れなかった {REFUSED_BY_LINE_SAID} 詳しい内容 {REFUSED_BY_LINE}"
    )
    assert failed < log.index("11月5日（木）10:30・ 送信済み")


def test_an_unknown_patient_is_not_found(client: FlaskClient) -> None:
    signed_in(client)
    assert client.get("/patients/999999").status_code == 404
    assert client.get("/patients/P001").status_code == 404


# --- changing the phase and cadence -----------------------------------------------------


def test_changing_the_phase_replans_the_patient_at_once(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    patient_id = a_maintenance_patient(desk_runtime, NOW)
    # 12 days after the visit 4 days ago, and its follow-up 7 days later.
    maintenance = [
        (Reason.CADENCE_NUDGE, at_10(NOW, 8)),
        (Reason.CADENCE_FOLLOW_UP, at_10(NOW, 15)),
    ]
    assert planned(desk_runtime, patient_id) == maintenance
    assert [(m.reason, m.send_at) for m in upcoming(desk_runtime, NOW)] == [
        ("cadence_nudge", at_10(NOW, 8))
    ]
    signed_in(client)
    answer = change_phase(client, patient_id, "acute")
    assert answer.location == f"/patients/{patient_id}"
    # No worker cycle in between: the request itself planned the patient again. The
    # change starts a new episode today: the acute nudge 3 days from now, its
    # follow-up 2 days later.
    acute = [(Reason.CADENCE_NUDGE, at_10(NOW, 3)), (Reason.CADENCE_FOLLOW_UP, at_10(NOW, 5))]
    assert planned(desk_runtime, patient_id) == acute
    assert [(m.reason, m.send_at) for m in upcoming(desk_runtime, NOW)] == [
        ("cadence_nudge", at_10(NOW, 3)),
        ("cadence_follow_up", at_10(NOW, 5)),
    ]
    page = text_of(client.get(f"/patients/{patient_id}").get_data(as_text=True))
    assert "フェーズと通院の間隔を変更しました。今後の送信予定も組み直しました。" in page
    assert "次回来院のおすすめ（LINE） 11月28日（土）10:00・ 送信予定" in page


def test_planning_one_patient_leaves_the_others_to_the_workers_next_cycle(
    desk_runtime: Runtime,
) -> None:
    settings = desk_runtime.settings
    with transaction(desk_runtime.sessions) as session:
        for external_id in ("P001", "P002"):
            add_patient(session, NOW - timedelta(days=30), external_id, Phase.MAINTENANCE)
            visited(session, NOW, days_ago=4, external_id=external_id)
        one = find_patient(session, "P001")
        assert one is not None
        result = plan_patient(session, one.id, NOW, settings.rules, settings)
    assert result is not None and (result.created, result.withdrawn) == (2, 0)
    with desk_runtime.sessions() as session:
        rows = session.scalars(select(Patient).order_by(Patient.external_id)).all()
        deliveries = session.scalars(select(Delivery)).all()
        moments = [session.get_one(Replan, row.id).replan_at for row in rows]
    assert {d.patient_id for d in deliveries} == {rows[0].id}
    assert moments[0] is not None  # planned: its next moment recorded
    assert moments[1] is None  # still marked for the next cycle


def test_while_a_campaigns_first_plan_is_pending_the_patient_is_left_to_the_worker(
    client: FlaskClient, desk_runtime: Runtime, clock: FixedClock
) -> None:
    # The year-end newsletter starts on 1 December: its first plan paces its whole
    # audience at once, which is the worker's to do, not a web request's.
    year_end = datetime(2026, 12, 1, 10, 30, tzinfo=JST)
    patient_id = a_maintenance_patient(desk_runtime, NOW)
    clock.set(year_end)
    signed_in(client)
    change_phase(client, patient_id, "acute")
    assert "今後の送信予定は、まもなく組み直します。" in client.get(
        f"/patients/{patient_id}"
    ).get_data(as_text=True)
    with desk_runtime.sessions() as session:
        assert session.get_one(Replan, patient_id).replan_at is None  # marked
        [record] = session.scalars(select(DeskAudit).where(DeskAudit.action == "cadence")).all()
    assert record.detail.endswith("left to the next cycle (a campaign's first plan)")


def test_a_phase_change_is_kept_in_the_history_and_the_audit_log(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    patient_id = a_maintenance_patient(desk_runtime, NOW)
    signed_in(client)
    change_phase(client, patient_id, "rehab", nudge="5")
    with desk_runtime.sessions() as session:
        last = session.scalars(select(CadenceChange).order_by(CadenceChange.id.desc())).first()
        [record] = session.scalars(select(DeskAudit).where(DeskAudit.action == "cadence")).all()
    assert last is not None
    assert (last.phase, last.nudge_after_days, last.follow_up_days, last.source) == (
        Phase.REHAB,
        5,
        None,
        "desk",
    )
    assert record.detail == (
        f"patient {patient_id}: phase maintenance, nudge default, follow-up default -> "
        "phase rehab, nudge 5, follow-up default; planned again (2 new, 2 withdrawn)"
    )
    page = text_of(client.get(f"/patients/{patient_id}").get_data(as_text=True))
    assert "11月25日（水）09:30 リハビリ期（おすすめ 5日後） 管理画面" in page
    assert "来院のおすすめ 最後の来院から 5日後（個別の設定）" in page


def test_no_phase_stops_the_cadence_messages_at_once(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    patient_id = a_maintenance_patient(desk_runtime, NOW)
    signed_in(client)
    change_phase(client, patient_id, "none")
    assert planned(desk_runtime, patient_id) == []
    with desk_runtime.sessions() as session:
        assert session.get_one(Patient, patient_id).phase is None


def test_the_same_phase_and_cadence_again_changes_nothing(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    patient_id = a_maintenance_patient(desk_runtime, NOW)
    signed_in(client)
    change_phase(client, patient_id, "maintenance")
    assert "変更はありませんでした。" in client.get(f"/patients/{patient_id}").get_data(
        as_text=True
    )
    with desk_runtime.sessions() as session:
        assert session.scalars(select(DeskAudit).where(DeskAudit.action == "cadence")).all() == []


@pytest.mark.parametrize("days", ["0", "91", "-1", "seven", "3.5"])
def test_cadence_days_outside_1_to_90_are_refused_and_change_nothing(
    client: FlaskClient, desk_runtime: Runtime, days: str
) -> None:
    patient_id = a_maintenance_patient(desk_runtime, NOW)
    signed_in(client)
    change_phase(client, patient_id, "acute", follow_up=days)
    assert "日数は1〜90の数字で入力してください" in client.get(f"/patients/{patient_id}").get_data(
        as_text=True
    )
    with desk_runtime.sessions() as session:
        assert session.get_one(Patient, patient_id).phase is Phase.MAINTENANCE


def test_a_forgotten_patient_cannot_be_changed(client: FlaskClient, desk_runtime: Runtime) -> None:
    patient_id = a_maintenance_patient(desk_runtime, NOW)
    with transaction(desk_runtime.sessions) as session:
        forget_patient(session, session.get_one(Patient, patient_id), NOW)
    signed_in(client)
    change_phase(client, patient_id, "acute")
    page = client.get(f"/patients/{patient_id}").get_data(as_text=True)
    assert "変更できません。" in page
    assert "/cadence" not in page  # no form
    with desk_runtime.sessions() as session:
        assert session.get_one(Patient, patient_id).phase is Phase.MAINTENANCE


def test_a_change_without_the_csrf_token_is_refused(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    patient_id = a_maintenance_patient(desk_runtime, NOW)
    signed_in(client)
    answer = client.post(f"/patients/{patient_id}/cadence", data={"phase": "acute"})
    assert answer.status_code == 400
    with desk_runtime.sessions() as session:
        assert session.get_one(Patient, patient_id).phase is Phase.MAINTENANCE


# --- consent -------------------------------------------------------------------------


def change_consent(client: FlaskClient, patient_id: int, kind: str, granted: str) -> Any:
    return client.post(
        f"/patients/{patient_id}/consent",
        data={
            "kind": kind,
            "granted": granted,
            "csrf_token": csrf_of(client, f"/patients/{patient_id}"),
        },
    )


def test_withdrawing_consent_withdraws_the_planned_messages_at_once(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    patient_id = a_maintenance_patient(desk_runtime, NOW)
    assert len(planned(desk_runtime, patient_id)) == 2
    signed_in(client)
    change_consent(client, patient_id, "reminders", "no")
    assert planned(desk_runtime, patient_id) == []
    with desk_runtime.sessions() as session:
        [record] = session.scalars(select(DeskAudit).where(DeskAudit.action == "consent")).all()
    assert record.detail == f"patient {patient_id}: reminders withdrawn"
    page = text_of(client.get(f"/patients/{patient_id}").get_data(as_text=True))
    assert "来院のおすすめ・予約のお知らせを「同意なし」にしました。" in page
    assert "11月25日（水）09:30 来院のおすすめ・予約のお知らせ：同意なし 管理画面" in page


def test_granting_consent_plans_the_messages_at_once(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    patient_id = a_maintenance_patient(desk_runtime, NOW, reminders=False)
    assert planned(desk_runtime, patient_id) == []
    signed_in(client)
    change_consent(client, patient_id, "reminders", "yes")
    assert planned(desk_runtime, patient_id) == [
        (Reason.CADENCE_NUDGE, at_10(NOW, 8)),
        (Reason.CADENCE_FOLLOW_UP, at_10(NOW, 15)),
    ]


def test_a_consent_form_of_an_unknown_kind_changes_nothing(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    patient_id = a_maintenance_patient(desk_runtime, NOW)
    signed_in(client)
    change_consent(client, patient_id, "everything", "no")
    assert len(planned(desk_runtime, patient_id)) == 2
    assert "同意の変更を受け付けられませんでした。" in client.get(
        f"/patients/{patient_id}"
    ).get_data(as_text=True)


# --- the LINE link code -------------------------------------------------------------


@pytest.fixture
def line_runtime(desk_env: dict[str, str], tmp_path: Path) -> Iterator[Runtime]:
    """The desk's clinic with its LINE official account's ID set."""
    (tmp_path / "line").mkdir()
    config = with_basic_id(tmp_path / "line")
    opened = open_runtime(load_settings({**desk_env, "TAYORI_CONFIG": str(config)}))
    with transaction(opened.sessions) as session:
        add_staff_account(session, NOW)
    yield opened
    opened.close()


@pytest.fixture
def line_client(line_runtime: Runtime, clock: FixedClock) -> FlaskClient:
    return create_app(line_runtime.settings, line_runtime, clock).test_client()


def issue(client: FlaskClient, patient_id: int) -> Any:
    return client.post(
        f"/patients/{patient_id}/link-code",
        data={"csrf_token": csrf_of(client, f"/patients/{patient_id}")},
    )


def test_issuing_a_link_code_opens_its_printable_page_with_the_qr_code(
    line_client: FlaskClient, line_runtime: Runtime
) -> None:
    patient_id = a_maintenance_patient(line_runtime, NOW)
    signed_in(line_client)
    answer = issue(line_client, patient_id)
    assert answer.location == f"/patients/{patient_id}/link-code"
    with line_runtime.sessions() as session:
        code = session.get_one(LinkCode, patient_id)
    page = line_client.get(answer.location).get_data(as_text=True)
    assert "LINE 連携のご案内" in page and "山田 花子 様" in page
    assert f'<p class="code">{code.code}</p>' in page
    assert "<svg" in page  # the QR code, inline
    assert "12月9日 09:30 まで、1 回だけ使えます" in page
    assert f'href="/patients/{patient_id}"' in page  # back to the patient, not printed


def test_a_new_link_code_replaces_the_old_and_each_is_audited(
    line_client: FlaskClient, line_runtime: Runtime
) -> None:
    patient_id = a_maintenance_patient(line_runtime, NOW)
    signed_in(line_client)
    issue(line_client, patient_id)
    with line_runtime.sessions() as session:
        first = session.get_one(LinkCode, patient_id).code
    issue(line_client, patient_id)
    with line_runtime.sessions() as session:
        second = session.get_one(LinkCode, patient_id).code
        records = session.scalars(select(DeskAudit).where(DeskAudit.action == "link_code")).all()
    assert first != second
    assert [r.detail for r in records] == [f"patient {patient_id}: a new LINE link code"] * 2
    page = line_client.get(f"/patients/{patient_id}").get_data(as_text=True)
    assert "発行済みのコードを印刷する" in page and "12月9日（水）09:30まで有効" in page


def test_without_basic_id_no_code_is_issued_and_the_page_says_what_to_set(
    client: FlaskClient, desk_runtime: Runtime
) -> None:
    patient_id = a_maintenance_patient(desk_runtime, NOW)
    signed_in(client)
    assert "[line] basic_id）の設定が必要です。" in client.get(f"/patients/{patient_id}").get_data(
        as_text=True
    )
    issue(client, patient_id)
    with desk_runtime.sessions() as session:
        assert session.get(LinkCode, patient_id) is None


def test_an_expired_code_has_no_printable_page(
    line_client: FlaskClient, line_runtime: Runtime, clock: FixedClock
) -> None:
    patient_id = a_maintenance_patient(line_runtime, NOW)
    signed_in(line_client)
    issue(line_client, patient_id)
    clock.set(NOW + timedelta(days=15))
    answer = line_client.get(f"/patients/{patient_id}/link-code")
    assert answer.location == f"/patients/{patient_id}"


def test_the_log_names_no_patient_contact_or_code(
    line_client: FlaskClient, line_runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    patient_id = a_maintenance_patient(line_runtime, NOW)
    signed_in(line_client)
    change_phase(line_client, patient_id, "acute")
    issue(line_client, patient_id)
    with line_runtime.sessions() as session:
        code = session.get_one(LinkCode, patient_id).code
    assert "changed the phase or cadence of patient" in caplog.text
    for detail in ("山田", "P001", EMAIL, code):
        assert detail not in caplog.text


# --- in a real browser, against a real `tayori serve` ------------------------------


def a_patient_today(runtime: Runtime, now: datetime) -> int:
    """An emptied clinic with the staff account and a maintenance patient who
    visited 4 days ago and was planned then, a message sent to them and one that
    could not be sent, and a few other patients."""
    emptied(runtime, now)
    with transaction(runtime.sessions) as session:
        for n, name in enumerate(("佐藤 一郎", "鈴木 二郎", "高橋 三郎"), start=2):
            add_patient(session, now, f"P00{n}", Phase.REHAB, name=name)
        add_patient(
            session,
            now - timedelta(days=60),
            "P001",
            Phase.MAINTENANCE,
            email=EMAIL,
            preferred=ChannelName.EMAIL,
        )
        visited(session, now, days_ago=30, external_id="P001")
    # 12 days after that visit, just after its nudge went at 10:00
    earlier = at_10(now, -18) + timedelta(hours=1)
    with transaction(runtime.sessions) as session:
        plan(session, earlier, runtime.settings.rules, runtime.settings)
        [claimed] = claim_due(session, earlier)
        transitions.fail(session, claimed.claim, MAILBOX_FULL, earlier)
    with transaction(runtime.sessions) as session:
        visited(session, now, days_ago=4, external_id="P001")
        patient = find_patient(session, "P001")
        assert patient is not None
        patient_id = patient.id
    with transaction(runtime.sessions) as session:
        plan(session, now, runtime.settings.rules, runtime.settings)
    return patient_id


def test_search_and_open_a_patient_on_a_phone(site: Site, browser: Any, screenshots: Path) -> None:
    a_patient_today(site.runtime, datetime.now(UTC))
    page = browser.new_page(viewport=PHONE)
    try:
        sign_in_with_browser(page, site.base)
        page.get_by_role("link", name="患者").click()
        page.wait_for_load_state()
        page.get_by_label("患者番号または名前").fill("山田")
        page.get_by_role("button", name="検索").click()
        page.wait_for_load_state()
        assert "患者番号 P001" in page.inner_text("main")
        assert "佐藤" not in page.inner_text("main")
        assert fits_the_phone(page) and fits_the_width(page)
        page.screenshot(path=str(screenshots / "desk-patients-phone.png"), full_page=True)
        page.get_by_role("link", name="山田 花子 様").click()
        page.wait_for_load_state()
        assert "患者番号 P001" in page.inner_text("h1")
        main = page.inner_text("main")
        assert "このメールアドレスには届きません（受け取りを断られました）" in main
        assert MAILBOX_FULL not in main  # folded away, for the operator
        page.get_by_text("詳しい内容").last.click()
        assert MAILBOX_FULL in page.inner_text("main")
        assert fits_the_phone(page) and fits_the_width(page)
        page.screenshot(path=str(screenshots / "desk-patient-phone.png"), full_page=True)
    finally:
        page.close()


def test_search_by_number_on_a_desktop(site: Site, browser: Any, screenshots: Path) -> None:
    a_patient_today(site.runtime, datetime.now(UTC))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        sign_in_with_browser(page, site.base)
        page.goto(f"{site.base}/patients")
        page.get_by_label("患者番号または名前").fill("P003")
        page.get_by_role("button", name="検索").click()
        page.wait_for_load_state()
        assert "鈴木 二郎" in page.inner_text("main")
        assert "山田" not in page.inner_text("main")
        page.screenshot(path=str(screenshots / "desk-patients-desktop.png"), full_page=True)
    finally:
        page.close()


def test_change_the_phase_in_the_browser_and_see_the_coming_messages_change(
    site: Site, browser: Any, screenshots: Path
) -> None:
    now = datetime.now(UTC)
    patient_id = a_patient_today(site.runtime, now)
    before = [(m.reason, m.send_at) for m in upcoming(site.runtime, now) if m.patient == "P001"]
    page = browser.new_page(viewport={"width": 1280, "height": 900})

    def on_the_upcoming_page() -> list[str]:
        """P001's messages on the Upcoming page: day, time and kind of each."""
        page.goto(f"{site.base}/upcoming")
        found: list[str] = page.eval_on_selector_all(
            "li.message",
            """items => items.filter(li => li.innerText.includes('患者番号 P001')).map(li =>
                li.closest('section').getAttribute('aria-label') + ' ' +
                li.querySelector('div').innerText.split('\\n')[0])""",
        )
        return found

    try:
        sign_in_with_browser(page, site.base)
        upcoming_before = on_the_upcoming_page()
        page.goto(f"{site.base}/patients/{patient_id}")
        assert fits_the_phone(page)
        page.screenshot(path=str(screenshots / "desk-patient-desktop.png"), full_page=True)
        coming = page.locator("#upcoming + ul").inner_text()
        page.get_by_label("フェーズ", exact=True).select_option(label="急性期")
        page.get_by_role("button", name="変更する").click()
        page.wait_for_load_state()
        assert "今後の送信予定も組み直しました。" in page.inner_text("main")
        assert page.locator("#upcoming + ul").inner_text() != coming
        page.screenshot(path=str(screenshots / "desk-patient-changed-desktop.png"), full_page=True)
        # The Upcoming page shows the new plan at once: the maintenance nudge (its
        # follow-up beyond 30 days) made way for the acute nudge and its follow-up.
        upcoming_after = on_the_upcoming_page()
    finally:
        page.close()
    # Maintenance: the nudge 8 days on, its follow-up 7 days later; acute: 3 and 2.
    kinds = ["次回来院のおすすめ（メール）", "おすすめの再送（メール）"]
    assert [line.split()[-1] for line in upcoming_before] == kinds
    assert [line.split()[-1] for line in upcoming_after] == kinds
    assert upcoming_after != upcoming_before
    # The change holds from the moment the web process made it, on its own clock.
    later = datetime.now(UTC)
    after = [(m.reason, m.send_at) for m in upcoming(site.runtime, later) if m.patient == "P001"]
    # The acute nudge 3 days after the change and its follow-up 2 days later; the
    # maintenance nudge was 8 days ahead (its follow-up beyond the 14 days).
    assert before == [("cadence_nudge", at_10(now, 8))]
    assert after == [("cadence_nudge", at_10(later, 3)), ("cadence_follow_up", at_10(later, 5))]
    with site.runtime.sessions() as session:
        assert session.get_one(Patient, patient_id).phase is Phase.ACUTE


def with_basic_id(folder: Path) -> Path:
    """The shipped settings with the LINE official account's ID set, in `folder`."""
    shipped = (ROOT / "config" / "tayori.toml").read_text("utf-8")
    config = folder / "tayori.toml"
    config.write_text(shipped.replace('\nbasic_id = ""', f'\nbasic_id = "{BASIC_ID}"'), "utf-8")
    return config


@pytest.fixture(scope="module")
def line_site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """A real `tayori serve` (SQLite: the page is the same on both engines) whose
    clinic has its LINE official account's ID, so the desk can print link codes."""
    folder = tmp_path_factory.mktemp("line-desk")
    with serving_desk(request, folder, with_basic_id(folder)) as served:
        yield served


def test_print_a_link_code_with_its_qr_code_on_a_phone(
    line_site: Site, browser: Any, screenshots: Path
) -> None:
    patient_id = a_patient_today(line_site.runtime, datetime.now(UTC))
    page = browser.new_page(viewport=PHONE)
    try:
        sign_in_with_browser(page, line_site.base)
        page.goto(f"{line_site.base}/patients/{patient_id}")
        page.get_by_role("button", name="コードを発行して印刷").click()
        page.wait_for_load_state()
        assert page.url == f"{line_site.base}/patients/{patient_id}/link-code"
        with line_site.runtime.sessions() as session:
            code = session.get_one(LinkCode, patient_id).code
        assert page.inner_text(".code") == code
        assert page.locator(".qr svg").is_visible()
        assert fits_the_phone(page) and fits_the_width(page)
        page.screenshot(path=str(screenshots / "desk-link-code-phone.png"), full_page=True)
        page.get_by_role("link", name="← 患者のページへ戻る").click()
        page.wait_for_load_state()
        assert "発行済みのコードを印刷する" in page.inner_text("main")
        assert fits_the_phone(page)
        page.screenshot(path=str(screenshots / "desk-patient-line-phone.png"), full_page=True)
    finally:
        page.close()
    with line_site.runtime.sessions() as session:
        [record] = session.scalars(select(DeskAudit).where(DeskAudit.action == "link_code")).all()
    assert record.detail == f"patient {patient_id}: a new LINE link code"


def test_the_link_code_page_on_a_desktop(line_site: Site, browser: Any, screenshots: Path) -> None:
    patient_id = a_patient_today(line_site.runtime, datetime.now(UTC))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        sign_in_with_browser(page, line_site.base)
        page.goto(f"{line_site.base}/patients/{patient_id}")
        page.get_by_role("button", name="コードを発行して印刷").click()
        page.wait_for_load_state()
        assert page.locator(".qr svg").is_visible()
        page.screenshot(path=str(screenshots / "desk-link-code-desktop.png"), full_page=True)
    finally:
        page.close()

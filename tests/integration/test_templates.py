"""The practitioner's templates: sandboxed, strict, reloaded when edited, the last
good version kept when an edit breaks one, and `tayori lint` and `tayori preview`
as the practitioner's tools."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from scheduler.channels import DeliveryError, Failure
from scheduler.channels.line import line_message
from scheduler.commands import main
from scheduler.core.domain import PATIENT_REASONS, ChannelName, DeliveryState, Phase, Reason
from scheduler.messages.context import AWKWARD_PATIENT, sample_context
from scheduler.messages.lint import AWKWARD_NAME_NOTE, FLEX_HINT, lint_messages
from scheduler.messages.template_names import template_name
from scheduler.messages.templates import Renderer, TemplateError
from scheduler.messages.tips import load_tips
from scheduler.outbox.planner import plan
from scheduler.runtime import Runtime
from scheduler.settings import Settings
from scheduler.store.db import transaction
from scheduler.store.models import Delivery
from tests.conftest import ROOT, install_clinic_env
from tests.integration.clinic import add_patient, visited
from tests.integration.dispatching import (
    NUDGE_TIME,
    PLANNED_AT,
    RecordingTransport,
    deliveries,
    dispatcher_with,
    nudged_patients,
    the_nudge,
)

JST = ZoneInfo("Asia/Tokyo")
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=JST)
PHASES: list[Phase | None] = [*Phase, None]


@pytest.fixture
def messages(tmp_path: Path) -> Path:
    """A copy of the shipped messages that a test may edit."""
    copy = tmp_path / "messages"
    shutil.copytree(ROOT / "messages", copy)
    return copy


def _edit(path: Path, text: str) -> None:
    """Save `path` as an editor would; its modification time moves on, so Jinja
    notices even within the same clock tick."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before + 10**9, before + 10**9))


def _context(repo_settings: Settings, reason: Reason = Reason.CADENCE_NUDGE) -> dict[str, object]:
    return sample_context(reason, Phase.ACUTE, repo_settings.clinic, NOW, JST)


@pytest.mark.parametrize("phase", PHASES, ids=lambda p: p.value if p else "no-phase")
@pytest.mark.parametrize("channel", list(ChannelName), ids=lambda c: c.value)
@pytest.mark.parametrize("reason", PATIENT_REASONS, ids=lambda r: r.value)
def test_every_shipped_template_renders_for_every_phase_and_channel(
    repo_settings: Settings, reason: Reason, channel: ChannelName, phase: Phase | None
) -> None:
    context = sample_context(reason, phase, repo_settings.clinic, NOW, JST)
    rendered = Renderer(ROOT / "messages").render(template_name(reason, channel), context)
    assert "山田 花子様" in rendered.text
    assert (rendered.subject is not None) == (channel is ChannelName.EMAIL)


def test_shipped_messages_pass_lint(repo_settings: Settings) -> None:
    report = lint_messages(repo_settings, NOW)
    assert report.problems == []
    assert report.templates >= 10 and report.tips >= 24


@pytest.mark.parametrize(
    "expression",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ clinic.__class__.__init__ }}",
        "{{ self.__init__.__globals__ }}",
        "{{ range.__self__ }}",
    ],
)
def test_a_template_cannot_reach_python_internals(
    messages: Path, repo_settings: Settings, expression: str
) -> None:
    _edit(messages / "cadence_nudge" / "line.j2", f"{{{{ patient_name }}}}\n{expression}\n")
    with pytest.raises(
        TemplateError, match=r"cadence_nudge/line\.j2:2: .*(unsafe|undefined|has no attribute)"
    ):
        Renderer(messages).render("cadence_nudge/line.j2", _context(repo_settings))


def test_an_edit_is_used_for_the_next_message(messages: Path, repo_settings: Settings) -> None:
    renderer = Renderer(messages)
    renderer.render("cadence_nudge/line.j2", _context(repo_settings))
    _edit(messages / "cadence_nudge" / "line.j2", "{{ patient_name }}、寒くなりましたね。\n")
    rendered = renderer.render("cadence_nudge/line.j2", _context(repo_settings))
    assert rendered.text == "山田 花子様、寒くなりましたね。"


@pytest.mark.parametrize(
    ("name", "broken", "problem"),
    [
        pytest.param(
            "cadence_nudge/line.j2", "{{ patient_name }\n", "line.j2:1", id="syntax-error"
        ),
        pytest.param(
            "cadence_nudge/line.j2",
            "{{ patient_name }}\n{{ no_such_name }}\n",
            "line.j2:2: 'no_such_name' is undefined",
            id="unknown-variable",
        ),
        pytest.param("cadence_nudge/line.j2", "\n", "renders an empty message", id="emptied"),
        pytest.param("_booking.j2", "{% if %}\n", "_booking.j2:1", id="broken-include"),
    ],
)
def test_a_broken_edit_keeps_the_last_good_version_and_says_where(
    messages: Path, repo_settings: Settings, name: str, broken: str, problem: str
) -> None:
    renderer = Renderer(messages)
    good = renderer.render("cadence_nudge/line.j2", _context(repo_settings))
    _edit(messages / name, broken)
    assert renderer.render("cadence_nudge/line.j2", _context(repo_settings)) == good
    assert problem in " ".join(renderer.problems.values())


def test_a_mended_template_is_used_again(messages: Path, repo_settings: Settings) -> None:
    renderer = Renderer(messages)
    renderer.render("cadence_nudge/line.j2", _context(repo_settings))
    _edit(messages / "cadence_nudge" / "line.j2", "{{ patient_name }\n")
    renderer.render("cadence_nudge/line.j2", _context(repo_settings))
    _edit(messages / "cadence_nudge" / "line.j2", "{{ patient_name }}、直しました。\n")
    rendered = renderer.render("cadence_nudge/line.j2", _context(repo_settings))
    assert rendered.text == "山田 花子様、直しました。"
    assert renderer.problems == {}


def test_a_template_broken_before_it_ever_worked_is_an_error(
    messages: Path, repo_settings: Settings
) -> None:
    _edit(messages / "cadence_nudge" / "line.j2", "{{ patient_name }\n")
    with pytest.raises(TemplateError, match=r"cadence_nudge/line\.j2:1"):
        Renderer(messages).render("cadence_nudge/line.j2", _context(repo_settings))


def test_an_email_html_block_escapes_the_values(messages: Path, repo_settings: Settings) -> None:
    _edit(
        messages / "cadence_nudge" / "email.j2",
        "{% block subject %}件名{% endblock %}\n"
        "{% block body %}{{ patient_name }}{% endblock %}\n"
        "{% block html %}<p>{{ patient_name }}</p>{% endblock %}\n",
    )
    context = {**_context(repo_settings), "patient_name": "<b>山田</b>様"}
    rendered = Renderer(messages).render("cadence_nudge/email.j2", context)
    assert rendered.text == "<b>山田</b>様"
    assert rendered.html == "<p>&lt;b&gt;山田&lt;/b&gt;様</p>"


# --- tayori lint ---------------------------------------------------------------------

LONG_TEXT = "あ" * 5001
FLEX_WITHOUT_ALT_TEXT = '{"type": "flex", "contents": {"type": "bubble"}}'
# A name pasted into JSON as it is: valid for 山田 花子, broken by a name with a quote.
FLEX_WITH_THE_NAME_UNESCAPED = (
    '{"type": "flex", "altText": "{{ patient_name }}、ご予約のご案内です",\n'
    ' "contents": {"type": "bubble", "body": {"type": "box", "layout": "vertical",\n'
    '  "contents": [{"type": "text", "text": "{{ patient_name }}"}]}}}\n'
)
EMAIL_WITHOUT_FOOTER = (
    "{% block subject %}ご案内{% endblock %}\n{% block body %}{{ patient_name }}{% endblock %}\n"
)


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        pytest.param("cadence_nudge/line.j2", "{{ patient_name }\n", "line.j2:1: ", id="syntax"),
        pytest.param(
            "cadence_nudge/line.j2",
            "{{ patient_name }}\n\n{{ shoe_size }}\n",
            "cadence_nudge/line.j2:3: unknown variable 'shoe_size'",
            id="unknown-variable",
        ),
        pytest.param(
            "cadence_nudge/line.j2",
            "{{ clinic.fax }}\n",
            "'dict object' has no attribute 'fax'",
            id="unknown-attribute",
        ),
        pytest.param(
            "cadence_nudge/line.j2", LONG_TEXT, "LINE allows 5,000", id="line-text-too-long"
        ),
        pytest.param(
            "cadence_nudge/line.j2", FLEX_WITHOUT_ALT_TEXT, "'altText'", id="flex-invalid"
        ),
        pytest.param(
            "cadence_nudge/line.j2", '{"type": "flex", ', "not valid JSON", id="flex-not-json"
        ),
        pytest.param(
            "cadence_nudge/line.j2",
            FLEX_WITH_THE_NAME_UNESCAPED,
            f"cadence_nudge/line.j2: LINE Flex message is not valid JSON: Expecting ',' delimiter "
            f"(line 1, column 31){FLEX_HINT}{AWKWARD_NAME_NOTE}",
            id="flex-broken-by-an-awkward-name",
        ),
        pytest.param(
            "no_show_follow_up/email.j2",
            EMAIL_WITHOUT_FOOTER,
            "no_show_follow_up/email.j2: no sender footer",
            id="email-without-footer",
        ),
        pytest.param(
            "cadence_follow_up/email.j2",
            EMAIL_WITHOUT_FOOTER,
            "cadence_follow_up/email.j2: no unsubscribe link",
            id="email-without-unsubscribe-link",
        ),
        pytest.param(
            "line_follow/line.j2",
            "{{ clinic.name }}です。\n{{ patient_name }}、ようこそ。\n",
            "line_follow/line.j2:2: unknown variable 'patient_name'",
            id="greeting-knows-no-name",
        ),
        pytest.param(
            "line_follow/line.j2",
            "{% if linked %}" + LONG_TEXT + "{% endif %}",
            "line_follow/line.j2: LINE text is 5,001 UTF-16 units",
            id="greeting-too-long-when-linked",
        ),
    ],
)
def test_lint_finds_each_kind_of_problem(
    messages: Path, repo_settings: Settings, name: str, content: str, problem: str
) -> None:
    _edit(messages / name, content)
    settings = replace(repo_settings, messages_dir=messages)
    assert any(problem in p for p in lint_messages(settings, NOW).problems)


def test_lint_finds_a_template_that_promises_a_cure(
    messages: Path, repo_settings: Settings
) -> None:
    template = messages / "cadence_nudge" / "line.j2"
    _edit(template, "{{ patient_name }}\n次のご来院で必ず良くなります。\n")
    problems = lint_messages(replace(repo_settings, messages_dir=messages), NOW).problems
    assert any(p.startswith(f"{template}:2: promises a result (必ず)") for p in problems)


def test_lint_finds_a_tip_that_promises_a_cure(messages: Path, repo_settings: Settings) -> None:
    tip = messages / "tips" / "daily-walk.md"
    _edit(tip, tip.read_text(encoding="utf-8").rstrip("\n") + "腰痛が治ります。\n")
    problems = lint_messages(replace(repo_settings, messages_dir=messages), NOW).problems
    assert any(f"{tip}:" in p and "promises a result (治り)" in p for p in problems)


def test_the_shipped_messages_promise_no_cure(repo_settings: Settings) -> None:
    problems = lint_messages(replace(repo_settings, messages_dir=ROOT / "messages"), NOW).problems
    assert [p for p in problems if "promises a result" in p] == []


def test_lint_finds_a_missing_line_greeting(messages: Path, repo_settings: Settings) -> None:
    (messages / "line_follow" / "line.j2").unlink()
    problems = lint_messages(replace(repo_settings, messages_dir=messages), NOW).problems
    assert problems == [f"{messages}/line_follow/line.j2: missing: the settings use this message"]


def test_lint_finds_a_message_without_a_template(messages: Path, repo_settings: Settings) -> None:
    (messages / "appointment_reminder" / "line.j2").unlink()
    problems = lint_messages(replace(repo_settings, messages_dir=messages), NOW).problems
    assert problems == [
        f"{messages}/appointment_reminder/line.j2: missing: the settings use this message"
    ]


def test_lint_lists_every_problem_at_once(messages: Path, repo_settings: Settings) -> None:
    _edit(messages / "cadence_nudge" / "line.j2", "{{ patient_name }\n")
    _edit(messages / "no_show_follow_up" / "line.j2", "{{ shoe_size }}\n")
    problems = lint_messages(replace(repo_settings, messages_dir=messages), NOW).problems
    assert any("cadence_nudge/line.j2:1" in p for p in problems)
    assert any("no_show_follow_up/line.j2:1: unknown variable" in p for p in problems)


def test_lint_command_exits_1_with_the_problems_and_0_when_clean(
    clinic_env: dict[str, str],
    messages: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TAYORI_MESSAGES_DIR", str(messages))
    assert main(["lint"]) == 0
    assert capsys.readouterr().out.endswith("tips checked: no problems\n")
    _edit(messages / "cadence_nudge" / "line.j2", "{{ patient_name }\n")
    assert main(["lint"]) == 1
    assert "cadence_nudge/line.j2:1" in capsys.readouterr().out


TEMPLATE_MISTAKES = [
    pytest.param(
        "{{ patient_name }}\n{% for i in range(10**9) %}.{% endfor %}\n",
        "cadence_nudge/line.j2:2: range() of more than 10,000 numbers",
        id="range-of-a-billion",
    ),
    pytest.param(
        "{{ patient_name }}\n"
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}\n",
        "cadence_nudge/line.j2:2: more than 100,000 loop iterations and calls",
        id="nested-loops",
    ),
    pytest.param(
        "{{ patient_name }}\n{{ 'x'.center(10**9) }}\n",
        "cadence_nudge/line.j2:2: center() would be longer than 100,000",
        id="center",
    ),
    pytest.param(
        "{{ patient_name }}\n{{ [0] * 10**8 }}\n",
        "cadence_nudge/line.j2:2: the result of * would be longer than 100,000",
        id="list-repeated",
    ),
    pytest.param(
        "{{ patient_name }}\n{{ 10 ** 100000000 }}\n",
        "cadence_nudge/line.j2:2: a number of more than 4,096 bits",
        id="huge-power",
    ),
    pytest.param(
        "{{ patient_name }}\n{{ clinic[patient_name] }}\n",
        "cadence_nudge/line.j2:2: 'dict object' has no attribute '…'",
        id="unknown-key-from-the-name",
    ),
]


@pytest.mark.parametrize(("content", "problem"), TEMPLATE_MISTAKES)
def test_lint_command_reports_a_template_mistake_as_file_line_problem(
    messages: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    content: str,
    problem: str,
) -> None:
    install_clinic_env(f"sqlite:///{tmp_path / 'unused.db'}", tmp_path, monkeypatch)
    monkeypatch.setenv("TAYORI_MESSAGES_DIR", str(messages))
    _edit(messages / "cadence_nudge" / "line.j2", content)
    assert main(["lint"]) == 1
    printed = capsys.readouterr()
    assert printed.out.splitlines()[0].startswith(f"{messages}/{problem}")
    assert "Traceback" not in printed.out + printed.err
    assert "花子" not in printed.out + printed.err  # in both sample patients' names


def test_lint_command_reports_a_tip_that_includes_itself(
    messages: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    install_clinic_env(f"sqlite:///{tmp_path / 'unused.db'}", tmp_path, monkeypatch)
    monkeypatch.setenv("TAYORI_MESSAGES_DIR", str(messages))
    _edit(messages / "_tip.j2", '{{ tip }}\n{% include "_tip.j2" %}\n')
    assert main(["lint"]) == 1
    printed = capsys.readouterr()
    problem = f"{messages}/_tip.j2:2: includes or macro calls nested too deep"
    assert all(line.startswith(problem) for line in printed.out.splitlines())
    assert "Traceback" not in printed.out + printed.err


def _readme_flex_example() -> str:
    """The Flex message messages/README.md shows the practitioner."""
    readme = (ROOT / "messages" / "README.md").read_text(encoding="utf-8")
    [example] = [block for block in readme.split("```\n")[1::2] if '"type": "flex"' in block]
    return example


def test_the_readme_flex_example_passes_lint(messages: Path, repo_settings: Settings) -> None:
    _edit(messages / "cadence_nudge" / "line.j2", _readme_flex_example())
    assert lint_messages(replace(repo_settings, messages_dir=messages), NOW).problems == []


def test_the_readme_flex_example_carries_an_awkward_name_intact(
    messages: Path, repo_settings: Settings
) -> None:
    _edit(messages / "cadence_nudge" / "line.j2", _readme_flex_example())
    context = sample_context(
        Reason.CADENCE_NUDGE, Phase.ACUTE, repo_settings.clinic, NOW, JST, AWKWARD_PATIENT
    )
    text = Renderer(messages).render("cadence_nudge/line.j2", context).text
    message = line_message(text)
    assert message.alt_text == f"{AWKWARD_PATIENT}様、次回のご予約のご案内です"


# --- tayori preview ------------------------------------------------------------------


def test_preview_prints_the_line_text_of_a_sample_patient(
    clinic_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    now = NOW.isoformat()
    assert main(["preview", "cadence_nudge", "--sample", "--channel", "line", "--now", now]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("山田 花子様、たより整体院です。")


def test_preview_of_an_email_writes_its_html_and_prints_the_path(
    clinic_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["preview", "appointment_reminder", "--channel", "email"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("件名: 【たより整体院】")
    page = Path(printed.rsplit("HTML: ", 1)[1].strip())
    assert "山田 花子様" in page.read_text(encoding="utf-8")


# --- in the running worker -------------------------------------------------------------


def test_a_broken_edit_while_the_worker_runs_keeps_the_old_text(
    runtime: Runtime, messages: Path
) -> None:
    transport = RecordingTransport()
    dispatcher = dispatcher_with(runtime, transport)
    dispatcher.renderer = Renderer(messages)
    nudged_patients(runtime, count=1)
    dispatcher.dispatch_due(NUDGE_TIME)
    _edit(messages / "cadence_nudge" / "line.j2", "{{ patient_name }\n")
    with transaction(runtime.sessions) as session:
        add_patient(session, PLANNED_AT, "P2", name="佐藤 健")
        visited(session, PLANNED_AT, days_ago=1, external_id="P2")
        plan(session, PLANNED_AT, runtime.settings.rules)
    dispatcher.dispatch_due(NUDGE_TIME)

    first, second = transport.received
    assert second.text == first.text.replace("山田 花子", "佐藤 健").replace(
        _tip_line(first.text), _tip_line(second.text)
    )
    assert "line.j2:1" in " ".join(dispatcher.renderer.problems.values())


def test_an_exception_out_of_a_template_holds_its_message_and_the_others_go(
    runtime: Runtime, messages: Path
) -> None:
    """Not a template error Jinja reports, but an exception out of the template (one
    patient's only): composing a batch goes on without that one message, which waits
    to be tried again, its error saying where without quoting the patient."""
    transport = RecordingTransport()
    dispatcher = dispatcher_with(runtime, transport)
    dispatcher.renderer = Renderer(messages)
    template = messages / "cadence_nudge" / "line.j2"
    fault = '{% if patient_name == "佐藤 健様" %}{{ 1 // 0 }}{% endif %}'
    _edit(template, fault + template.read_text(encoding="utf-8"))
    with transaction(runtime.sessions) as session:
        add_patient(session, PLANNED_AT, "P0", name="佐藤 健")
        visited(session, PLANNED_AT, days_ago=1, external_id="P0")
    nudged_patients(runtime, count=3)

    dispatcher.dispatch_due(NUDGE_TIME)

    assert len(transport.received) == 3
    [waiting] = [d for d in deliveries(runtime.sessions, Reason.CADENCE_NUDGE) if not d.sent_at]
    assert (waiting.state, waiting.attempts) == (DeliveryState.PLANNED, 0)
    assert waiting.send_after > NUDGE_TIME
    assert waiting.last_error == (f"{template}:1: division by zero (ZeroDivisionError)")


def test_a_flex_message_a_name_breaks_is_held_as_a_template_problem_not_failed(
    runtime: Runtime, messages: Path
) -> None:
    transport = RecordingTransport()
    dispatcher = dispatcher_with(runtime, transport)
    dispatcher.renderer = Renderer(messages)
    template = messages / "cadence_nudge" / "line.j2"
    _edit(template, FLEX_WITH_THE_NAME_UNESCAPED)
    with transaction(runtime.sessions) as session:
        add_patient(session, PLANNED_AT, "P0", name='"Ken" 佐藤')
        visited(session, PLANNED_AT, days_ago=1, external_id="P0")
    nudged_patients(runtime, count=2)

    dispatcher.dispatch_due(NUDGE_TIME)

    assert len(transport.received) == 2
    [waiting] = [d for d in deliveries(runtime.sessions, Reason.CADENCE_NUDGE) if not d.sent_at]
    assert (waiting.state, waiting.attempts) == (DeliveryState.PLANNED, 0)
    assert (waiting.last_error or "").startswith(f"{template}: LINE Flex message is not valid JSON")
    assert "Ken" not in (waiting.last_error or "")


def _tip_line(text: str) -> str:
    return text.split("セルフケア〉\n", 1)[1].split("\n", 1)[0]


def test_each_message_carries_a_tip_recorded_with_its_delivery(runtime: Runtime) -> None:
    transport = RecordingTransport()
    nudged_patients(runtime)
    dispatcher_with(runtime, transport).dispatch_due(NUDGE_TIME)
    nudge = the_nudge(runtime)
    tips = load_tips(ROOT / "messages" / "tips")
    [message] = transport.received
    assert nudge.tip_id in tips
    assert tips[nudge.tip_id].text in message.text
    assert "〈冬のセルフケア〉" in message.text  # 25 November: after 立冬


def test_the_next_message_brings_another_tip(runtime: Runtime) -> None:
    transport = RecordingTransport()
    dispatcher = dispatcher_with(runtime, transport)
    nudged_patients(runtime)
    dispatcher.dispatch_due(NUDGE_TIME)
    # No booking: the follow-up goes two days later.
    dispatcher.dispatch_due(NUDGE_TIME + timedelta(days=2))
    tip_ids = [d.tip_id for d in deliveries(runtime.sessions, Reason.CADENCE_NUDGE)] + [
        d.tip_id for d in deliveries(runtime.sessions, Reason.CADENCE_FOLLOW_UP)
    ]
    assert len(transport.received) == 2
    assert len(set(tip_ids)) == 2


def test_a_retry_keeps_the_tip_of_its_first_attempt(runtime: Runtime) -> None:
    transport = RecordingTransport([DeliveryError("connection reset", Failure.TRANSIENT)])
    dispatcher = dispatcher_with(runtime, transport)
    nudged_patients(runtime)
    dispatcher.dispatch_due(NUDGE_TIME)
    first_tip = the_nudge(runtime).tip_id
    dispatcher.dispatch_due(the_nudge(runtime).send_after + timedelta(days=1))
    assert the_nudge(runtime).tip_id == first_tip


def test_a_message_sent_on_a_closed_day_says_when_the_clinic_reopens(runtime: Runtime) -> None:
    transport = RecordingTransport()
    nudged_patients(runtime)
    holiday = datetime(2026, 11, 23, 10, 0, tzinfo=JST)  # 勤労感謝の日
    with transaction(runtime.sessions) as session:
        nudge = session.get_one(Delivery, the_nudge(runtime).id)
        nudge.send_after = holiday
    dispatcher_with(runtime, transport).dispatch_due(holiday)
    [message] = transport.received
    assert "11月24日（火）から診療いたします" in message.text

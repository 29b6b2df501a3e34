"""`tayori plan --json` prints its messages one at a time, as json.dumps would print
the whole list, each with its fields in the clinic's terms."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from scheduler.commands.plan import planned_items, print_json_array
from scheduler.core.domain import ChannelName
from scheduler.outbox.planner import PlannedMessage


def printed(items: list[dict[str, object]], capsys: pytest.CaptureFixture[str]) -> str:
    print_json_array(items)
    return capsys.readouterr().out


@pytest.mark.parametrize(
    "items",
    [
        pytest.param([], id="no-items"),
        pytest.param(
            [{"patient": "P1", "reason": "cadence_nudge", "held": True, "key": "k:1"}],
            id="plain-values",
        ),
        pytest.param(
            [{"patient": '山田 "花子"\\\n\t', "count": 3, "none": None, "off": False}],
            id="text-to-escape",
        ),
        pytest.param([{}, {"share": 0.5}, {"nested": [1, {"a": "b"}]}], id="other-values"),
    ],
)
def test_printed_array_is_what_json_dumps_prints(
    items: list[dict[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert printed(items, capsys) == json.dumps(items, ensure_ascii=False, indent=2) + "\n"


def _message(held: bool = False) -> PlannedMessage:
    return PlannedMessage(
        patient="P1",
        reason="cadence_nudge",
        channel=ChannelName.LINE,
        send_at=datetime(2026, 12, 1, 0, 10, tzinfo=UTC),
        template="cadence_nudge/line.j2",
        key="cadence_nudge:1:2026-12-01",
        held=held,
    )


def test_a_planned_message_is_sent_at_the_clinics_local_time() -> None:
    [item] = planned_items([_message()], ZoneInfo("Asia/Tokyo"), keys=False)
    assert item == {
        "patient": "P1",
        "reason": "cadence_nudge",
        "channel": "line",
        "send_at": "2026-12-01T09:10:00+09:00",
        "template": "cadence_nudge/line.j2",
    }


def test_a_planned_message_names_its_key_when_asked_and_says_when_it_is_held() -> None:
    [plain, held] = planned_items([_message(), _message(held=True)], ZoneInfo("UTC"), keys=True)
    assert plain["key"] == held["key"] == "cadence_nudge:1:2026-12-01"
    assert "held" not in plain
    assert held["held"] is True

"""The two log formats: text for people, with a line's facts after its message, and
JSON, one object a line, for a log collector."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from scheduler.core.domain import ChannelName, DeliveryState, Reason
from scheduler.logs import JsonFormatter, TextFormatter

CREATED = datetime(2026, 11, 25, 1, 30, 15, 250000, tzinfo=UTC)
FACTS = {
    "clinic": "default",
    "delivery_id": "d-1",
    "reason": Reason.CADENCE_NUDGE,
    "channel": ChannelName.LINE,
    "state": DeliveryState.SENT,
}


def _record(
    message: str = "delivery %s: %s",
    args: tuple[object, ...] = ("d-1", "sent"),
    extra: dict[str, Any] | None = None,
    exc_info: Any = None,
) -> logging.LogRecord:
    record = logging.getLogger("scheduler.outbox.recorder").makeRecord(
        "scheduler.outbox.recorder", logging.INFO, __file__, 1, message, args, exc_info, extra=extra
    )
    record.created = CREATED.timestamp()
    return record


def test_a_json_line_holds_time_level_logger_message_and_the_facts() -> None:
    line = JsonFormatter().format(_record(extra=FACTS))
    assert json.loads(line) == {
        "time": "2026-11-25T01:30:15.250+00:00",
        "level": "INFO",
        "logger": "scheduler.outbox.recorder",
        "message": "delivery d-1: sent",
        "clinic": "default",
        "delivery_id": "d-1",
        "reason": "cadence_nudge",
        "channel": "line",
        "state": "sent",
    }


def test_a_json_line_leaves_out_facts_given_as_none_and_unknown_extras() -> None:
    line = JsonFormatter().format(_record(extra={"channel": None, "patient_name": "山田"}))
    assert set(json.loads(line)) == {"time", "level", "logger", "message"}


def test_a_json_line_with_a_traceback_is_still_one_line() -> None:
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        record = _record(message="tick failed", args=(), exc_info=sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "ZeroDivisionError" in json.loads(line)["exception"]


def test_a_json_line_keeps_japanese_readable() -> None:
    line = JsonFormatter().format(_record(message="template problem: 閉院日", args=()))
    assert "閉院日" in line


def test_a_text_line_is_the_message_then_its_facts_as_key_value() -> None:
    line = TextFormatter().format(_record(extra=FACTS))
    assert line.endswith(
        "INFO scheduler.outbox.recorder: delivery d-1: sent clinic=default delivery_id=d-1 "
        "reason=cadence_nudge channel=line state=sent"
    )


def test_a_text_line_without_facts_is_as_it_always_was() -> None:
    line = TextFormatter().format(_record())
    assert line.endswith("INFO scheduler.outbox.recorder: delivery d-1: sent")


def test_a_text_fact_with_a_space_is_quoted() -> None:
    line = TextFormatter().format(_record(extra={"clinic": "two words"}))
    assert line.endswith('clinic="two words"')

"""`tayori plan --json` prints its messages one at a time, as json.dumps would print
the whole list."""

from __future__ import annotations

import json

import pytest

from scheduler.commands.outbox import print_json_array


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

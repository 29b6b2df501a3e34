"""Sharing the month's LINE places by priority: how many of the messages asking may
have one, keeping room for more important messages still waiting."""

from __future__ import annotations

import pytest

from scheduler.core.domain import Reason
from scheduler.core.quota import grant

REMINDER = Reason.APPOINTMENT_REMINDER
NUDGE = Reason.CADENCE_NUDGE
NEWSLETTER = Reason.NEWSLETTER


@pytest.mark.parametrize(
    ("left", "waiting", "wanted", "granted"),
    [
        pytest.param(None, {}, {NUDGE: 5}, {NUDGE: 5}, id="no-limit"),
        pytest.param(10, {NUDGE: 3}, {NUDGE: 3}, {NUDGE: 3}, id="all-fit"),
        pytest.param(2, {NUDGE: 3}, {NUDGE: 3}, {NUDGE: 2}, id="as-many-as-left"),
        pytest.param(0, {NUDGE: 1}, {NUDGE: 1}, {NUDGE: 0}, id="none-left"),
        pytest.param(
            3, {REMINDER: 2, NUDGE: 2}, {NUDGE: 2}, {NUDGE: 1}, id="room-kept-for-reminders"
        ),
        pytest.param(
            5,
            {REMINDER: 3, NUDGE: 10},
            {REMINDER: 3, NUDGE: 10},
            {REMINDER: 3, NUDGE: 2},
            id="the-more-important-first-within-one-request",
        ),
        pytest.param(
            2,
            {REMINDER: 5, NEWSLETTER: 1},
            {NEWSLETTER: 1},
            {NEWSLETTER: 0},
            id="newsletters-wait-behind-a-busy-week-of-reminders",
        ),
    ],
)
def test_places_go_to_the_most_important_messages_first(
    left: int | None,
    waiting: dict[Reason, int],
    wanted: dict[Reason, int],
    granted: dict[Reason, int],
) -> None:
    assert grant(left, waiting, wanted) == granted

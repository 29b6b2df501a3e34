"""What a coming campaign occurrence needs of LINE's monthly quota (pure), as the
desk's Campaigns page and `tayori campaigns` show it: a table of cases."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from scheduler.core.campaigns import Audience, Campaign, DateTrigger, Occurrence, Pacing
from scheduler.outbox.campaign_control import ComingOccurrence
from scheduler.outbox.newsletters import CampaignForecast

CAMPAIGN = Campaign("year_end", "year_end", DateTrigger(12, 1), Audience(), Pacing())
OCCURRENCE = Occurrence("year_end", date(2026, 12, 1), datetime(2026, 12, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    "by_line, line_left, paused, over",
    [
        pytest.param(3, 10, False, 0, id="fits"),
        pytest.param(10, 10, False, 0, id="fits-exactly"),
        pytest.param(12, 10, False, 2, id="two-over"),
        pytest.param(5, 0, False, 5, id="month-used-up"),
        pytest.param(500, None, False, 0, id="no-limit"),
        pytest.param(12, 10, True, 0, id="paused-needs-none"),
    ],
)
def test_line_over_is_what_the_month_has_no_room_for(
    by_line: int, line_left: int | None, paused: bool, over: int
) -> None:
    forecast = CampaignForecast(CAMPAIGN, OCCURRENCE, by_line=by_line, by_email=1)
    assert ComingOccurrence(forecast, paused, line_left).line_over == over

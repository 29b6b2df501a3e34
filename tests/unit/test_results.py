"""How the results count a message as followed by a booking or a visit (pure): a
table of appointments against one message, and the windows that have not ended."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.core.domain import AppointmentStatus
from scheduler.outbox.results import Booking, Moment, default_period, outcome, responded

SENT = datetime(2026, 10, 5, 1, 0, tzinfo=UTC)
BOOKED, VISITED, CANCELLED = (
    AppointmentStatus.BOOKED,
    AppointmentStatus.VISITED,
    AppointmentStatus.CANCELLED,
)


def days(n: float) -> datetime:
    return SENT + timedelta(days=n)


@pytest.mark.parametrize(
    ("booking", "within_7", "within_14"),
    [
        (Booking(days(3), days(5), BOOKED), True, True),  # booked on day 3
        (Booking(days(10), days(12), BOOKED), False, True),  # booked on day 10
        (Booking(days(20), days(22), BOOKED), False, False),  # booked on day 20
        (Booking(days(7), days(30), BOOKED), True, True),  # day 7 itself is within
        (Booking(days(3), days(5), CANCELLED), True, True),  # booked, cancelled later
        (Booking(days(20), days(6), VISITED), True, True),  # came on day 6, recorded late
        (Booking(days(20), days(12), VISITED), False, True),  # came on day 12
        (Booking(days(2), days(-1), VISITED), False, False),  # a visit before, recorded late
        (Booking(days(-2), days(1), BOOKED), False, False),  # booked before the message
        (Booking(days(-2), days(1), VISITED), True, True),  # ... and came after it
    ],
)
def test_a_message_is_followed_by_a_booking_or_a_visit_within_the_window(
    booking: Booking, within_7: bool, within_14: bool
) -> None:
    assert (responded(SENT, [booking], 7), responded(SENT, [booking], 14)) == (
        within_7,
        within_14,
    )


def test_a_window_counts_only_the_messages_whose_days_have_passed() -> None:
    moments = [Moment(1, SENT), Moment(2, days(10))]
    bookings = {1: [Booking(days(1), days(2), BOOKED)], 2: [Booking(days(11), days(12), BOOKED)]}
    found = outcome(moments, bookings, now=days(18))
    assert found.count == 2
    assert (found.window(7).observed, found.window(7).responded) == (2, 2)
    assert (found.window(14).observed, found.window(14).responded) == (1, 1)
    assert found.window(14).rate == 1.0


def test_no_message_observed_has_no_rate() -> None:
    found = outcome([Moment(1, SENT)], {}, now=days(1))
    assert found.window(7).rate is None


def test_the_default_period_is_the_last_90_days() -> None:
    today = SENT.date()
    first, last = default_period(today)
    assert (last, (last - first).days + 1) == (today, 90)

"""What a failed send means for its delivery: tables of (failure, what is known of the
delivery) → decision, and when a retry comes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.core.config import Dispatch
from scheduler.core.domain import ChannelName, HoldCause
from scheduler.core.failure_policy import (
    CREDENTIALS_RECHECK,
    LAST_LINE_RETRY,
    MAX_DELAY,
    NOT_ANOTHER_WAY,
    RETRY_KEY_EXPIRED,
    UNREACHABLE_FIRST_WAIT,
    UNREACHABLE_LONGEST_WAIT,
    Attempt,
    Decision,
    Fail,
    Failure,
    HoldChannel,
    Reroute,
    Retry,
    decide,
    retry_at,
)

NOW = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
MONTH_ENDS = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
POLICY = Dispatch(max_attempts=5, retry_after_seconds=60)
LINE, EMAIL = ChannelName.LINE, ChannelName.EMAIL


def _decide(
    failure: Failure,
    channel: ChannelName = LINE,
    attempts: int = 1,
    key_age: timedelta | None = None,
    held_since: datetime | None = None,
    maybe_sent: bool | None = None,
) -> Decision:
    """`maybe_sent` defaults to what a LINE key age implies: a push that may have gone."""
    maybe = key_age is not None if maybe_sent is None else maybe_sent
    attempt = Attempt("d-1", channel, attempts, maybe, key_age)
    return decide(
        failure,
        "what the channel said",
        attempt,
        NOW,
        POLICY,
        month_ends=MONTH_ENDS,
        held_since=held_since,
    )


@pytest.mark.parametrize(
    ("failure", "channel", "key_age", "expected"),
    [
        pytest.param(Failure.PERMANENT, LINE, None, Fail, id="permanent-fails"),
        pytest.param(
            Failure.CONTACT_UNUSABLE, LINE, None, Reroute, id="unknown-line-user-rerouted"
        ),
        pytest.param(Failure.CONTACT_UNUSABLE, EMAIL, None, Reroute, id="refused-address-rerouted"),
        pytest.param(
            Failure.CONTACT_UNUSABLE,
            LINE,
            timedelta(minutes=5),
            Fail,
            id="line-push-that-may-have-arrived-is-never-rerouted",
        ),
        pytest.param(Failure.TRANSIENT, LINE, None, Retry, id="transient-retried"),
        pytest.param(Failure.UNCERTAIN, LINE, timedelta(0), Retry, id="uncertain-retried"),
        pytest.param(Failure.UNCERTAIN, EMAIL, None, Retry, id="uncertain-mail-retried"),
        pytest.param(Failure.CHANNEL_UNAVAILABLE, LINE, None, HoldChannel, id="bad-token-holds"),
        pytest.param(Failure.QUOTA_EXHAUSTED, LINE, None, HoldChannel, id="monthly-limit-holds"),
        pytest.param(Failure.UNREACHABLE, EMAIL, None, HoldChannel, id="unreachable-holds"),
    ],
)
def test_each_failure_leads_to_its_decision(
    failure: Failure,
    channel: ChannelName,
    key_age: timedelta | None,
    expected: type[Decision],
) -> None:
    assert isinstance(_decide(failure, channel, key_age=key_age), expected)


def test_a_line_push_that_may_have_arrived_is_not_sent_by_email_and_says_why() -> None:
    decision = _decide(Failure.CONTACT_UNUSABLE, key_age=timedelta(minutes=5))
    assert decision == Fail(f"what the channel said; {NOT_ANOTHER_WAY}")


def test_a_mail_that_may_have_arrived_is_not_sent_by_line_instead() -> None:
    decision = _decide(Failure.CONTACT_UNUSABLE, channel=EMAIL, maybe_sent=True)
    assert decision == Fail(f"what the channel said; {NOT_ANOTHER_WAY}")


def test_a_mail_that_may_have_arrived_is_retried_with_no_window() -> None:
    decision = _decide(Failure.UNCERTAIN, channel=EMAIL, maybe_sent=True, key_age=None)
    assert isinstance(decision, Retry)


@pytest.mark.parametrize(
    ("failure", "cause", "until"),
    [
        (Failure.CHANNEL_UNAVAILABLE, HoldCause.CREDENTIALS, NOW + CREDENTIALS_RECHECK),
        (Failure.QUOTA_EXHAUSTED, HoldCause.QUOTA, MONTH_ENDS),
        (Failure.UNREACHABLE, HoldCause.UNREACHABLE, NOW + UNREACHABLE_FIRST_WAIT),
    ],
)
def test_a_channel_is_held_for_as_long_as_its_cause_lasts(
    failure: Failure, cause: HoldCause, until: datetime
) -> None:
    assert _decide(failure) == HoldChannel(cause, until, "what the channel said")


@pytest.mark.parametrize(
    ("unreachable_for", "wait"),
    [
        (timedelta(0), UNREACHABLE_FIRST_WAIT),
        (timedelta(seconds=20), UNREACHABLE_FIRST_WAIT),
        (timedelta(minutes=4), timedelta(minutes=4)),
        (timedelta(hours=5), UNREACHABLE_LONGEST_WAIT),
    ],
)
def test_an_unreachable_server_is_tried_less_and_less_often(
    unreachable_for: timedelta, wait: timedelta
) -> None:
    decision = _decide(Failure.UNREACHABLE, held_since=NOW - unreachable_for)
    assert isinstance(decision, HoldChannel)
    assert decision.until == NOW + wait


def test_a_retry_fails_once_the_attempts_are_used_up() -> None:
    assert _decide(Failure.TRANSIENT, attempts=POLICY.max_attempts) == Fail("what the channel said")


@pytest.mark.parametrize(
    ("key_age", "expected"),
    [
        pytest.param(timedelta(0), Retry, id="just-pushed"),
        pytest.param(timedelta(hours=22), Retry, id="well-inside-the-window"),
        pytest.param(LAST_LINE_RETRY - timedelta(seconds=1), Fail, id="retry-would-land-too-late"),
        pytest.param(timedelta(hours=30), Fail, id="long-past"),
    ],
)
def test_an_uncertain_line_push_is_retried_only_well_inside_lines_24_hours(
    key_age: timedelta,
    expected: type[Decision],
) -> None:
    decision = _decide(Failure.UNCERTAIN, key_age=key_age)
    assert isinstance(decision, expected)
    if isinstance(decision, Fail):
        assert RETRY_KEY_EXPIRED in decision.reason


def test_a_transient_failure_after_an_uncertain_push_keeps_to_the_window() -> None:
    """LINE may have the first push: the window still counts from it."""
    decision = _decide(Failure.TRANSIENT, key_age=timedelta(hours=23, minutes=30))
    assert isinstance(decision, Fail)


# -- when a retry comes ----------------------------------------------------------------


def delay(attempts: int, delivery_id: str = "d-1") -> timedelta:
    moment = retry_at(delivery_id, attempts, NOW, POLICY)
    assert moment is not None
    return moment - NOW


def test_each_retry_waits_longer_than_the_one_before() -> None:
    delays = [delay(n) for n in range(1, 5)]
    assert delays == sorted(delays)
    assert delays[0] >= timedelta(seconds=60)


def test_the_wait_never_exceeds_an_hour() -> None:
    assert delay(4, "x") <= MAX_DELAY
    assert retry_at("x", 4, NOW, Dispatch(max_attempts=50, retry_after_seconds=3600)) == (
        NOW + MAX_DELAY
    )


def test_no_retry_once_the_attempts_are_used_up() -> None:
    assert retry_at("d-1", 5, NOW, POLICY) is None


def test_same_delivery_and_attempt_give_the_same_moment() -> None:
    assert delay(2, "same") == delay(2, "same")


def test_jitter_spreads_different_deliveries() -> None:
    assert len({delay(1, f"d-{n}") for n in range(20)}) > 1

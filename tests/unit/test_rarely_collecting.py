"""While a plan runs, the garbage collector's full collections are nearly paused;
the thresholds come back when the process's last plan ends."""

from __future__ import annotations

import gc

from scheduler.outbox.spread import rarely_collecting


def test_a_plan_raises_the_collectors_thresholds_and_puts_them_back() -> None:
    before = gc.get_threshold()
    with rarely_collecting():
        assert gc.get_threshold()[0] > 10 * before[0]
    assert gc.get_threshold() == before


def test_the_thresholds_come_back_only_when_the_last_of_overlapping_plans_ends() -> None:
    before = gc.get_threshold()
    first, second = rarely_collecting(), rarely_collecting()
    first.__enter__()
    second.__enter__()
    raised = gc.get_threshold()
    first.__exit__(None, None, None)  # the first to start ends first
    assert gc.get_threshold() == raised
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before


def test_the_thresholds_come_back_after_a_plan_that_failed() -> None:
    before = gc.get_threshold()
    try:
        with rarely_collecting():
            raise RuntimeError("the plan failed")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before

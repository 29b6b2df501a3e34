"""Lanes: work handed in is done by a fixed number of threads; the loop that hands it
in can wait for work that made more work, and a fault is reported without hanging
the lanes. GroupCommit: outcomes written together, none left unwritten."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from scheduler.outbox.lanes import GroupCommit, Lanes


def test_every_piece_of_work_is_done_once() -> None:
    done: list[int] = []
    lock = threading.Lock()

    def do(n: int) -> bool:
        with lock:
            done.append(n)
        return False

    with Lanes(4, do) as lanes:
        for n in range(100):
            lanes.put(n)
    assert sorted(done) == list(range(100))


def test_no_more_lanes_than_asked_work_at_once() -> None:
    busy = 0
    most = 0
    lock = threading.Lock()
    release = threading.Event()

    def do(_: int) -> bool:
        nonlocal busy, most
        with lock:
            busy += 1
            most = max(most, busy)
        release.wait()
        with lock:
            busy -= 1
        return False

    with Lanes(3, do) as lanes:
        for n in range(3):
            lanes.put(n)
        release.set()
        for n in range(20):
            lanes.put(n)
    assert most <= 3


def test_waiting_with_nothing_in_flight_returns_at_once() -> None:
    with Lanes(2, lambda _: True) as lanes:
        assert lanes.wait_for_more(lanes.made_more) is False


def test_waiting_returns_once_work_in_flight_makes_more_work() -> None:
    release = threading.Event()
    with Lanes(2, lambda _: release.wait()) as lanes:
        seen = lanes.made_more
        lanes.put(1)
        release.set()
        assert lanes.wait_for_more(seen) is True
        assert lanes.made_more == seen + 1


def test_waiting_ends_without_more_work_once_nothing_is_in_flight() -> None:
    release = threading.Event()
    with Lanes(2, lambda _: not release.wait()) as lanes:
        seen = lanes.made_more
        lanes.put(1)
        lanes.put(2)
        release.set()
        assert lanes.wait_for_more(seen) is False


def test_a_fault_is_raised_at_the_end_and_the_rest_still_reaches_the_work() -> None:
    seen: list[tuple[int, bool]] = []
    lanes: Lanes[int]

    def do(n: int) -> bool:
        seen.append((n, lanes.error is not None))
        if n == 0:
            raise RuntimeError("broken")
        return False

    with pytest.raises(RuntimeError, match="broken"), Lanes(1, do) as lanes:
        for n in range(3):
            lanes.put(n)
    assert seen == [(0, False), (1, True), (2, True)]


# --- group commit -------------------------------------------------------------------


def _writer(written: list[list[int]]) -> Callable[[list[int]], list[bool]]:
    def write(items: list[int]) -> list[bool]:
        written.append(items)
        return [True] * len(items)

    return write


def test_an_item_is_written_before_add_returns() -> None:
    written: list[list[int]] = []
    GroupCommit(_writer(written)).add(1)
    assert written == [[1]]


def test_add_returns_what_the_write_said_of_its_item() -> None:
    group = GroupCommit(lambda items: [item % 2 == 0 for item in items])
    assert (group.add(2), group.add(3)) == (True, False)


def test_items_reported_during_a_write_are_written_together_next() -> None:
    written: list[list[int]] = []
    first_write = threading.Event()
    release = threading.Event()

    def write(items: list[int]) -> list[bool]:
        if not written:
            first_write.set()
            release.wait()
        written.append(items)
        return [True] * len(items)

    group = GroupCommit(write)
    adders = [threading.Thread(target=group.add, args=(n,)) for n in range(4)]
    adders[0].start()
    first_write.wait()
    for adder in adders[1:]:
        adder.start()
    deadline = time.monotonic() + 10
    while group.waiting < 3:  # the three others have reported and wait for the writer
        assert time.monotonic() < deadline, "the other lanes never reported"
        threading.Event().wait(0.001)
    release.set()
    for adder in adders:
        adder.join()
    assert written[0] == [0]
    assert sorted(written[1]) == [1, 2, 3]
    assert len(written) == 2


def test_a_failed_write_raises_and_its_items_are_not_kept() -> None:
    written: list[list[int]] = []
    failures = [RuntimeError("database gone")]

    def write(items: list[int]) -> list[bool]:
        if failures:
            raise failures.pop()
        written.append(items)
        return [True] * len(items)

    group = GroupCommit(write)
    with pytest.raises(RuntimeError):
        group.add(1)
    group.add(2)
    assert written == [[2]]

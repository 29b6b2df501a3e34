"""Long lists taken a batch at a time: an IN list or a bulk statement stays far below
every driver's limit on bound parameters, and memory stays small."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

CHUNK = 1000

T = TypeVar("T")


def batches(items: Iterable[T], size: int = CHUNK) -> Iterator[list[T]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch

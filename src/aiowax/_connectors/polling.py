"""`SimplePollingSource`: a source that calls user code on a schedule."""

from __future__ import annotations

import inspect
from abc import abstractmethod
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from aiowax._checks import aware_datetime, timedelta_arg
from aiowax._definition.inputs import FixedPartitionedSource, StatefulSourcePartition

X = TypeVar("X")


class SimplePollingSource(FixedPartitionedSource[X, None], Generic[X]):
    """A source that calls `next_item` once every ``interval``.

    Subclass it and implement `next_item` (plain or ``async def``). Return
    ``None`` when there is nothing new; raise `SimplePollingSource.Retry` to
    be called again sooner (or later) than the interval, and `StopIteration`
    (or `StopAsyncIteration`) to end the input.

    Args:
        interval: Time between calls; a positive timedelta.
        align_to: If given, a timezone-aware datetime: calls happen at
            ``align_to + k * interval``. Otherwise the first call is
            immediate.

    Raises:
        TypeError: ``interval`` is not a timedelta, or ``align_to`` is
            neither a datetime nor ``None``, or a naive one.
        ValueError: ``interval`` is not positive.
    """

    class Retry(Exception):
        """Raised by `next_item` to be called again after ``timeout``."""

        def __init__(self, timeout: timedelta) -> None:
            super().__init__(timeout)
            self.timeout = timeout

    def __init__(self, interval: timedelta, align_to: datetime | None = None) -> None:
        where = "SimplePollingSource"
        self._interval = timedelta_arg(where, "interval", interval, allow_zero=False)
        self._align_to = None if align_to is None else aware_datetime(where, "align_to", align_to)

    def list_parts(self) -> list[str]:
        return ["singleton"]

    def build_part(self, now: datetime, for_part: str, resume_state: None) -> _PollingPartition[X]:
        return _PollingPartition(self, now, self._interval, self._align_to)

    @abstractmethod
    def next_item(self) -> Any:
        """Return the next item, or ``None`` if there is none yet."""


class _PollingPartition(StatefulSourcePartition[X, None]):
    def __init__(
        self,
        source: SimplePollingSource[X],
        now: datetime,
        interval: timedelta,
        align_to: datetime | None,
    ) -> None:
        self._source = source
        self._interval = interval
        if align_to is None:
            self._awake = now
        else:
            # The first aligned tick at or after now.
            ticks = -((align_to - now) // interval)
            self._awake = align_to + ticks * interval

    async def next_batch(self, sched: datetime | None) -> list[X]:
        now = sched or self._awake
        try:
            item = self._source.next_item()
            if inspect.isawaitable(item):
                item = await item
        except SimplePollingSource.Retry as retry:
            self._awake = now + retry.timeout
            return []
        except StopIteration:
            # Inside a coroutine a StopIteration would turn into RuntimeError.
            raise StopAsyncIteration from None
        self._awake = now + self._interval
        return [] if item is None else [item]

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> None:
        return None

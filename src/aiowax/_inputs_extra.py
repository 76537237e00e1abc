"""Helpers for writing sources: polling on a schedule, and batching."""

from __future__ import annotations

import asyncio
import inspect
from abc import abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, Generic, TypeVar

import anyio

from aiowax._definition.inputs import FixedPartitionedSource, StatefulSourcePartition

X = TypeVar("X")
_UTC = UTC


def batch(ib: Iterable[X], batch_size: int) -> Iterator[list[X]]:
    """Cut an iterable into lists of at most ``batch_size`` items.

    >>> list(batch(range(5), 2))
    [[0, 1], [2, 3], [4]]
    """
    if batch_size < 1:
        msg = f"batch_size must be positive, got {batch_size!r}"
        raise ValueError(msg)
    it = iter(ib)
    while chunk := list(islice(it, batch_size)):
        yield chunk


async def batch_async(
    aib: AsyncIterable[X], timeout: timedelta, batch_size: int
) -> AsyncIterator[list[X]]:
    """Cut an async iterable into lists, without holding items back long.

    A list is yielded once it has ``batch_size`` items, or once ``timeout``
    has passed since its first item arrived, whichever comes first; the last,
    shorter list is yielded when the iterable ends.

    Args:
        aib: The async iterable to read.
        timeout: Longest an item waits in an unfinished list.
        batch_size: Largest list.
    """
    if batch_size < 1:
        msg = f"batch_size must be positive, got {batch_size!r}"
        raise ValueError(msg)
    it = aib.__aiter__()
    seconds = timeout.total_seconds()
    ended = False
    next_item: _Pending | None = None
    try:
        while not ended:
            chunk: list[X] = []
            deadline: float | None = None
            while len(chunk) < batch_size:
                if next_item is None:
                    next_item = _Pending(it)
                remaining = None if deadline is None else deadline - anyio.current_time()
                if remaining is not None and remaining <= 0:
                    break
                got, value = await next_item.get(remaining)
                if not got:
                    break  # timed out: the pending read stays for the next list
                next_item = None
                if value is _END:
                    ended = True
                    break
                chunk.append(value)
                if deadline is None:
                    deadline = anyio.current_time() + seconds
            if chunk:
                yield chunk
    finally:
        # Closed early (or failed): stop the read in flight, no orphan task.
        if next_item is not None:
            await next_item.cancel()


_END = object()


class _Pending:
    """One read of an async iterator that survives a timeout.

    Cancelling ``__anext__`` on timeout could lose the item it was about to
    return, so the read runs as its own awaitable and is only waited on.
    """

    def __init__(self, it: AsyncIterator[Any]) -> None:
        self._task = asyncio.ensure_future(self._read(it))

    @staticmethod
    async def _read(it: AsyncIterator[Any]) -> Any:
        try:
            return await it.__anext__()
        except StopAsyncIteration:
            return _END

    async def cancel(self) -> None:
        self._task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.wait({self._task})

    async def get(self, timeout: float | None) -> tuple[bool, Any]:
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            return False, None
        return True, self._task.result()


class SimplePollingSource(FixedPartitionedSource[X, None], Generic[X]):
    """A source that calls `next_item` once every ``interval``.

    Subclass it and implement `next_item` (plain or ``async def``). Return
    ``None`` when there is nothing new; raise `SimplePollingSource.Retry` to
    be called again sooner (or later) than the interval, and `StopIteration`
    (or `StopAsyncIteration`) to end the input.

    Args:
        interval: Time between calls.
        align_to: If given, calls happen at ``align_to + k * interval``;
            otherwise the first call is immediate.
    """

    class Retry(Exception):
        """Raised by `next_item` to be called again after ``timeout``."""

        def __init__(self, timeout: timedelta) -> None:
            super().__init__(timeout)
            self.timeout = timeout

    def __init__(self, interval: timedelta, align_to: datetime | None = None) -> None:
        if not isinstance(interval, timedelta):
            msg = f"SimplePollingSource: interval must be a datetime.timedelta, got {interval!r}"
            raise TypeError(msg)
        if interval <= timedelta(0):
            msg = f"SimplePollingSource: interval must be positive, got {interval!r}"
            raise ValueError(msg)
        if align_to is not None and (not isinstance(align_to, datetime) or align_to.tzinfo is None):
            msg = (
                f"SimplePollingSource: align_to must be a timezone-aware datetime, got {align_to!r}"
            )
            raise ValueError(msg)
        self._interval = interval
        self._align_to = align_to

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

"""Cutting item streams into batches: the helpers sources use to fill ``next_batch``."""

from __future__ import annotations

import queue
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable, Iterator
from datetime import timedelta
from itertools import islice
from typing import TypeVar

import anyio

from aiowax._checks import positive_int, timedelta_arg
from aiowax._engine.aio import END, PendingRead, next_or_end
from aiowax._engine.context import stopping_gracefully

X = TypeVar("X")


def batch(ib: Iterable[X], batch_size: int) -> Iterator[list[X]]:
    """Cut an iterable into lists of at most ``batch_size`` items.

    >>> list(batch(range(5), 2))
    [[0, 1], [2, 3], [4]]

    Raises:
        TypeError: ``batch_size`` is not an int.
        ValueError: ``batch_size`` is not positive.
    """
    # Checked here, not in the generator, so a bad call fails where it is made.
    positive_int("batch", "batch_size", batch_size)
    return _batch(iter(ib), batch_size)


def _batch(it: Iterator[X], batch_size: int) -> Iterator[list[X]]:
    while chunk := list(islice(it, batch_size)):
        yield chunk


def batch_getter(
    getter: Callable[[], X], batch_size: int, yield_on: X | None = None
) -> Iterator[list[X]]:
    """Cut the items of a getter that may have nothing yet into lists.

    For a source's ``next_batch``: ``return next(batches)``. Each list ends
    when it has ``batch_size`` items or when ``getter`` returns ``yield_on``
    (compared with ``!=``): nothing more for now, so the list may be empty.
    When ``getter`` raises `StopIteration` (the end of the input), the last
    list, maybe empty, is yielded and the iterator ends, so the next
    ``next(batches)`` raises `StopIteration`, which ends the partition.

    >>> values = iter([1, 2, None, 3])
    >>> list(batch_getter(lambda: next(values), 2))
    [[1, 2], [], [3]]

    Args:
        getter: Returns the next item, or ``yield_on`` while there is none
            yet; raises `StopIteration` at the end of the input.
        batch_size: Largest list; a positive int.
        yield_on: What ``getter`` returns when nothing is ready.

    Returns:
        An iterator of the lists.

    Raises:
        TypeError: ``batch_size`` is not an int.
        ValueError: ``batch_size`` is not positive.
    """
    # Checked here, not in the generator, so a bad call fails where it is made.
    positive_int("batch_getter", "batch_size", batch_size)
    return _batch_getter_ex(_raising_on(getter, yield_on), batch_size, _NothingYet)


class _NothingYet(Exception):
    """What `batch_getter`'s getter means by returning ``yield_on``."""


def _raising_on(getter: Callable[[], X], yield_on: X | None) -> Callable[[], X]:
    def get() -> X:
        item = getter()
        # != rather than `is not`, as the reference compares.
        if item != yield_on:
            return item
        raise _NothingYet

    return get


def batch_getter_ex(
    getter: Callable[[], X],
    batch_size: int,
    yield_ex: type[BaseException] = queue.Empty,
) -> Iterator[list[X]]:
    """Cut the items of a getter that raises while it has nothing yet into lists.

    Like `batch_getter`, but "nothing yet" is the exception ``yield_ex``
    (`queue.Empty` by default, so ``queue.get_nowait`` is a getter as is).

    >>> import queue
    >>> q = queue.Queue()
    >>> for i in range(3):
    ...     q.put(i)
    >>> batches = batch_getter_ex(q.get_nowait, 2)
    >>> next(batches), next(batches), next(batches)
    ([0, 1], [2], [])

    Args:
        getter: Returns the next item; raises ``yield_ex`` while there is
            none yet, and `StopIteration` at the end of the input.
        batch_size: Largest list; a positive int.
        yield_ex: The exception that means nothing is ready; any other
            exception propagates.

    Returns an iterator of the lists, and checks ``batch_size`` as
    `batch_getter` does.
    """
    positive_int("batch_getter_ex", "batch_size", batch_size)
    return _batch_getter_ex(getter, batch_size, yield_ex)


def _batch_getter_ex(
    getter: Callable[[], X], batch_size: int, yield_ex: type[BaseException]
) -> Iterator[list[X]]:
    while True:
        chunk: list[X] = []
        while len(chunk) < batch_size:
            try:
                item = getter()
            except StopIteration:
                yield chunk
                return
            except yield_ex:
                break
            chunk.append(item)
        yield chunk


def batch_async(
    aib: AsyncIterable[X], timeout: timedelta, batch_size: int
) -> AsyncGenerator[list[X], None]:
    """Cut an async iterable into lists, without holding items back long.

    A list is yielded once it has ``batch_size`` items, or once ``timeout``
    has passed since its first item arrived, whichever comes first; the last,
    shorter list is yielded when the iterable ends. Awaited by a source's
    ``next_batch``, an unfinished list is yielded too when a graceful stop
    of the flow cancels the read, so the items it took are not lost.

    Args:
        aib: The async iterable to read.
        timeout: Longest an item waits in an unfinished list; zero or more.
        batch_size: Largest list; a positive int.

    Returns:
        An async generator of the lists (``aclose()`` it to stop early).

    Raises:
        TypeError: ``timeout`` is not a `datetime.timedelta`, or
            ``batch_size`` is not an int.
        ValueError: ``timeout`` is negative, or ``batch_size`` is not
            positive.
    """
    # Checked here, not in the generator, so a bad call fails where it is made.
    timedelta_arg("batch_async", "timeout", timeout, allow_zero=True)
    positive_int("batch_async", "batch_size", batch_size)
    return _batch_async(aib, timeout.total_seconds(), batch_size)


async def _batch_async(
    aib: AsyncIterable[X], seconds: float, batch_size: int
) -> AsyncGenerator[list[X], None]:
    it = aib.__aiter__()
    ended = False
    next_item: PendingRead | None = None
    try:
        while not ended:
            chunk: list[X] = []
            deadline: float | None = None
            while len(chunk) < batch_size:
                if next_item is None:
                    next_item = PendingRead(next_or_end(it))
                remaining = None if deadline is None else deadline - anyio.current_time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    got, value = await next_item.get(remaining)
                except anyio.get_cancelled_exc_class():
                    if chunk and stopping_gracefully():
                        # The stop cancels the source's read: the items this
                        # list took from ``aib`` go out instead of being lost.
                        break
                    raise
                if not got:
                    break  # timed out: the pending read stays for the next list
                next_item = None
                if value is END:
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

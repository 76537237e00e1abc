"""`batch`, `batch_async`, `batch_getter` and `batch_getter_ex` (`aiowax._connectors.batching`):
items into lists for a source."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import aiowax
from aiowax.dataflow import Dataflow
from aiowax.inputs import (
    DynamicSource,
    StatelessSourcePartition,
    batch,
    batch_async,
    batch_getter,
    batch_getter_ex,
)
from aiowax.testing import TestingSink
from flow_helpers import VIRTUAL_WATCHDOG, WATCHDOG, run


def test_batch() -> None:
    assert list(batch(range(5), 2)) == [[0, 1], [2, 3], [4]]
    assert list(batch([], 3)) == []
    assert list(batch(iter("abc"), 5)) == [["a", "b", "c"]]
    assert list(batch(range(4), 1)) == [[0], [1], [2], [3]]
    with pytest.raises(ValueError, match="batch_size"):
        list(batch(range(3), 0))


async def _timed(items: list[tuple[float, Any]]) -> AsyncIterator[Any]:
    """Yield each value at its loop time (relative to the first read)."""
    start = anyio.current_time()
    for at, value in items:
        await anyio.sleep_until(start + at)
        yield value


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_batch_async_size_timeout_and_end() -> None:
    items = [(0, "a"), (0, "b"), (0, "c"), (0.5, "d"), (3, "e"), (3.2, "f"), (10, "g")]
    start = anyio.current_time()
    got: list[tuple[float, list[str]]] = []
    with anyio.fail_after(VIRTUAL_WATCHDOG):
        async for chunk in batch_async(_timed(items), timedelta(seconds=1), 3):
            got.append((anyio.current_time() - start, chunk))
    assert [c for _, c in got] == [["a", "b", "c"], ["d"], ["e", "f"], ["g"]]
    # Full at once; "d" waits 1 s; "e" waits 1 s; "g" goes out when the input ends.
    assert [t for t, _ in got] == pytest.approx([0, 1.5, 4, 10], abs=1e-6)


@pytest.mark.asyncio
async def test_batch_async_plain() -> None:
    async def gen() -> AsyncIterator[int]:
        for i in range(7):
            await anyio.lowlevel.checkpoint()
            yield i

    with anyio.fail_after(WATCHDOG):
        chunks = [c async for c in batch_async(gen(), timedelta(seconds=60), 3)]
    assert chunks == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(ValueError, match="batch_size"):
        [c async for c in batch_async(gen(), timedelta(seconds=1), 0)]


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("timed_out", [False, True], ids=["full-chunk", "timed-out-chunk"])
async def test_batch_async_closed_early_leaves_no_task(timed_out: bool) -> None:
    """Leaving ``batch_async`` early leaves no task behind reading the input.

    After a chunk that timed out, a read of the next item is in flight; closing
    the generator must stop it, not leave it to consume (and lose) an item.
    """
    reads_after_close: list[int] = []
    closed = False

    async def gen() -> AsyncIterator[int]:
        for i in range(1, 10):
            if i == 3 and timed_out:
                await anyio.sleep(5)  # the chunk [1, 2] times out meanwhile
            if closed:
                reads_after_close.append(i)
            yield i

    before = asyncio.all_tasks()
    chunks = batch_async(gen(), timedelta(seconds=1), 2 if not timed_out else 10)
    with anyio.fail_after(VIRTUAL_WATCHDOG):
        first = await chunks.__anext__()
        await chunks.aclose()
        closed = True
        await anyio.sleep(10)
    assert first == [1, 2]
    assert {t for t in asyncio.all_tasks() if t not in before and not t.done()} == set()
    assert reads_after_close == []


def _batched_flow(lists: Callable[[], AsyncIterator[list[int]]], out: list[object]) -> Dataflow:
    """A flow whose source's ``next_batch`` awaits the next of ``lists()`` (per partition)."""

    class Part(StatelessSourcePartition[int]):
        def __init__(self) -> None:
            self.it = lists()

        async def next_batch(self, sched: datetime | None) -> list[int]:
            return await self.it.__anext__()

    class Source(DynamicSource[object]):
        def build(self, now: datetime, worker_index: int, worker_count: int) -> Part:
            return Part()

    flow = Dataflow()
    flow.input("inp", Source())
    flow.output("out", TestingSink(out))
    return flow


@pytest.mark.asyncio
async def test_batch_async_in_a_source() -> None:
    """``batch_async`` is how an async iterator becomes a partition's batches."""

    async def numbers() -> AsyncIterator[int]:
        for i in range(10):
            await anyio.lowlevel.checkpoint()
            yield i

    out: list[object] = []
    flow = _batched_flow(lambda: batch_async(numbers(), timedelta(seconds=1), 4), out)
    await run(flow)
    assert out == list(range(10))


@pytest.mark.asyncio
async def test_a_graceful_stop_keeps_what_batch_async_took_for_an_unfinished_list() -> None:
    # The stop cancels the source's read; batch_async's list in progress
    # held items already taken from the iterator, and they were lost
    # (9 of 29 in the report). They go out now.
    taken: list[int] = []
    three_taken = anyio.Event()

    async def numbers() -> AsyncIterator[int]:
        i = 0
        while True:
            if i == 3:
                three_taken.set()
                await anyio.sleep_forever()
            taken.append(i)
            yield i
            i += 1

    out: list[object] = []
    flow = _batched_flow(lambda: batch_async(numbers(), timedelta(hours=1), 100), out)
    with anyio.fail_after(WATCHDOG):
        async with aiowax.open_flow(flow) as handle:
            await three_taken.wait()
            await handle.stop()
    assert taken == [0, 1, 2]
    assert out == [0, 1, 2]
    assert handle.status is aiowax.FlowStatus.FINISHED


# -- batch_getter / batch_getter_ex ---------------------------------------------------
#
# These match the reference (bytewax.inputs.batch_getter / batch_getter_ex, added
# in Bytewax 0.18.0; 0.17.2 has neither): the expected lists below were worked
# out from its code. A list is yielded when it is full, when the getter says
# "nothing yet" (the sentinel, compared with ``!=``, or the exception), possibly
# empty then, and a last time, possibly empty, when the getter raises
# StopIteration. Other exceptions propagate. One difference: ``batch_size`` is
# checked when called, as `batch` does (the reference loops forever on 0).


def getter_of(values: list[object]) -> Callable[[], object]:
    """A getter returning ``values`` in turn, then raising StopIteration (EOF)."""
    it = iter(values)
    return lambda: next(it)


def test_batch_getter_cuts_on_size_sentinel_and_end() -> None:
    getter = getter_of([1, 2, None, 3, 4, 5, None, None, 6])
    assert list(batch_getter(getter, 2)) == [[1, 2], [], [3, 4], [5], [], [6]]
    # Full just before the end: the reference still yields a last, empty list.
    assert list(batch_getter(getter_of([1, 2]), 2)) == [[1, 2], []]
    assert list(batch_getter(getter_of([]), 3)) == [[]]


def test_batch_getter_with_another_sentinel() -> None:
    # The sentinel is compared with !=: 0 and 0.0 are the same "nothing yet",
    # and None is then an item like any other.
    getter = getter_of(["a", 0, None, 0.0, "b"])
    assert list(batch_getter(getter, 10, yield_on=0)) == [["a"], [None], ["b"]]


def test_batch_getter_is_lazy_and_resumes_after_nothing_yet() -> None:
    q: queue.SimpleQueue[int | None] = queue.SimpleQueue()

    def getter() -> int | None:
        try:
            return q.get_nowait()
        except queue.Empty:
            return None

    batches = batch_getter(getter, 3)
    assert next(batches) == []  # nothing yet
    for i in range(5):
        q.put(i)
    assert next(batches) == [0, 1, 2]
    assert next(batches) == [3, 4]
    assert next(batches) == []


def test_batch_getter_ex_cuts_on_the_exception() -> None:
    q: queue.Queue[int] = queue.Queue()
    batches = batch_getter_ex(q.get_nowait, 2)  # queue.Empty by default
    assert next(batches) == []
    for i in range(3):
        q.put(i)
    assert next(batches) == [0, 1]
    assert next(batches) == [2]
    assert next(batches) == []

    class NotYet(Exception):
        pass

    values: Iterator[int | None] = iter([1, None, 2, 3])

    def getter() -> int:
        value = next(values)  # StopIteration at the end
        if value is None:
            raise NotYet
        return value

    assert list(batch_getter_ex(getter, 5, yield_ex=NotYet)) == [[1], [2, 3]]


def test_batch_getter_errors() -> None:
    def broken() -> int:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        next(batch_getter(broken, 2))
    with pytest.raises(KeyError):
        next(batch_getter_ex(broken, 2))  # not queue.Empty: it propagates
    for helper in (batch_getter, batch_getter_ex):
        with pytest.raises(ValueError, match="batch_size"):
            helper(broken, 0)
        with pytest.raises(TypeError, match="batch_size"):
            helper(broken, 1.5)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_batch_getter_in_a_source() -> None:
    """The reference's use: ``next_batch`` returns ``next(batches)``; the end of
    the getter ends the partition (StopIteration from ``next_batch``)."""
    eof = object()
    q: queue.Queue[object] = queue.Queue()
    for i in range(10):
        q.put(i)
    q.put(eof)

    def get() -> object:
        item = q.get_nowait()  # queue.Empty: nothing yet
        if item is eof:
            raise StopIteration
        return item

    class Part(StatelessSourcePartition[object]):
        def __init__(self) -> None:
            self.batches = batch_getter_ex(get, 4)

        def next_batch(self, sched: datetime | None) -> list[object]:
            return next(self.batches)

    class Source(DynamicSource[object]):
        def build(self, now: datetime, worker_index: int, worker_count: int) -> Part:
            return Part()

    out: list[object] = []
    flow = Dataflow()
    flow.input("inp", Source())
    flow.output("out", TestingSink(out))
    await run(flow)
    assert out == list(range(10))

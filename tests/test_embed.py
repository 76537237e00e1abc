"""Flows embedded in applications: `FlowHandle` and the in-process connectors.

`aiowax.start_flow` / `aiowax.open_flow` run a flow in the background; the
application feeds it with `PushSource` (or an `IterableSource`) and reads it
with `BroadcastSink` subscriptions. Every scenario reaches the state it
checks through events it controls (a sink that waits on a gate, an inspector
that counts), inside ``fail_after`` watchdogs; nothing sleeps to wait.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import aiowax
from aiowax import FlowStatus
from aiowax.connectors.inproc import (
    BroadcastSink,
    IterableSource,
    PushSource,
    SourceClosedError,
    SourceFullError,
    SubscriberOverflowError,
    Subscription,
)
from aiowax.dataflow import Dataflow
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.testing import TestingSink
from aiowax.window import SystemClockConfig, TumblingWindow

WATCHDOG = 2
HOUR = TumblingWindow(timedelta(hours=1), align_to=datetime(2024, 1, 1, tzinfo=UTC))


class Seen:
    """An inspector that sets ``reached`` once it has seen ``target`` items."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.reached = anyio.Event()

    def __call__(self, item: Any) -> None:
        self.count += 1
        if self.count >= self.target:
            self.reached.set()


class _GatedPart(StatelessSinkPartition[Any]):
    def __init__(self, sink: GatedSink) -> None:
        self.sink = sink

    async def write_batch(self, items: list[Any]) -> None:
        self.sink.writing.set()
        await self.sink.gate.wait()
        self.sink.out.extend(items)

    def close(self) -> None:
        self.sink.closed += 1


class GatedSink(DynamicSink[Any]):
    """A sink whose writes wait until the test opens ``gate``."""

    def __init__(self, open_: bool = False) -> None:
        self.gate = anyio.Event()
        if open_:
            self.gate.set()
        self.writing = anyio.Event()
        self.out: list[Any] = []
        self.closed = 0

    def build(self, worker_index: int, worker_count: int) -> _GatedPart:
        return _GatedPart(self)


def window_flow(source: Any, sink: Any, seen: Seen) -> Dataflow:
    """source -> ("k", x) -> sum per hour-long window (system clock) -> sink."""
    flow = Dataflow()
    flow.input("inp", source)
    flow.inspect(seen)
    flow.map("key", lambda x: ("k", x))
    flow.reduce_window("sum", SystemClockConfig(), HOUR, lambda acc, x: acc + x)
    flow.map("value", lambda item: item[1][1])
    flow.output("out", sink)
    return flow


def push_flow(source: PushSource[Any], sink: Any) -> Dataflow:
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", sink)
    return flow


async def read_all(sub: Subscription[Any], into: list[Any]) -> None:
    async for item in sub:
        into.append(item)


async def settle() -> None:
    """Return once every other task waits (a few cheap yields first: anyio's
    `wait_all_tasks_blocked` sleeps 0.1 s whenever a task is still ready)."""
    for _ in range(20):
        await anyio.lowlevel.checkpoint()
    await anyio.wait_all_tasks_blocked()


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


# -- FlowHandle -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_status_goes_running_stopping_finished() -> None:
    source: PushSource[int] = PushSource()
    flow = window_flow(source, TestingSink([]), Seen(1))
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow)
            assert handle.status is FlowStatus.RUNNING
            assert not handle.done
            handle.request_stop()
            assert handle.status is FlowStatus.STOPPING
            await handle.wait()
            assert handle.status is FlowStatus.FINISHED
            assert handle.done
            assert handle.error is None
            await handle.stop()  # stopping a finished flow is a no-op
            assert handle.status is FlowStatus.FINISHED


@pytest.mark.asyncio
async def test_stop_flushes_open_windows_and_closes_sinks() -> None:
    source: PushSource[int] = PushSource()
    sink = GatedSink(open_=True)
    seen = Seen(3)
    flow = window_flow(source, sink, seen)
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow)
            for x in (1, 2, 4):
                source.send_nowait(x)
            await seen.reached.wait()  # read by the flow; the hour is far from over
            assert sink.out == []
            await handle.stop()
    assert sink.out == [7]  # the open window was flushed by the stop
    assert sink.closed == 1
    assert handle.status is FlowStatus.FINISHED
    assert source.closed
    with pytest.raises(SourceClosedError):
        source.send_nowait(8)


@pytest.mark.asyncio
async def test_abort_cancels_at_once_and_closes_partitions() -> None:
    source: PushSource[int] = PushSource()
    sink = GatedSink()  # never opened: a graceful stop could not finish
    seen = Seen(1)
    flow = window_flow(source, sink, seen)
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow)
            source.send_nowait(1)
            await seen.reached.wait()
            handle.request_stop()
            await sink.writing.wait()  # the flushed window is stuck in the sink
            assert handle.status is FlowStatus.STOPPING
            await handle.abort()
    assert handle.status is FlowStatus.CANCELLED
    assert handle.error is None
    assert sink.out == []
    assert sink.closed == 1
    assert source.closed  # its partition was closed
    with pytest.raises(SourceClosedError):
        await source.send(2)


@pytest.mark.asyncio
async def test_flow_error_is_raised_in_the_task_group_by_default() -> None:
    source: PushSource[int] = PushSource()
    flow = Dataflow()
    flow.input("inp", source)
    flow.map("invert", lambda x: 1 / x)
    flow.output("out", TestingSink([]))
    with anyio.fail_after(WATCHDOG), pytest.RaisesGroup(ZeroDivisionError) as info:
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow)
            source.send_nowait(0)
            await anyio.sleep_forever()  # the group cancels this when the flow fails
    error = info.value.exceptions[0]
    assert handle.status is FlowStatus.FAILED
    assert handle.error is error
    assert any("invert" in note for note in error.__notes__)


@pytest.mark.asyncio
async def test_flow_error_stays_on_the_handle_with_propagate_false() -> None:
    source: PushSource[int] = PushSource()
    flow = Dataflow()
    flow.input("inp", source)
    flow.map("invert", lambda x: 1 / x)
    flow.output("out", TestingSink([]))
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow, propagate=False)
            source.send_nowait(0)
            with pytest.raises(ZeroDivisionError) as info:
                await handle.wait()
            assert handle.status is FlowStatus.FAILED
            assert handle.error is info.value
            with pytest.raises(ZeroDivisionError):
                await handle.stop()
            # The task group, and the application around it, are untouched.
            assert not tg.cancel_scope.cancel_called
    assert source.closed


@pytest.mark.asyncio
async def test_open_flow_normal_exit_stops_gracefully() -> None:
    source: PushSource[int] = PushSource()
    sink = GatedSink(open_=True)
    seen = Seen(2)
    with anyio.fail_after(WATCHDOG):
        async with aiowax.open_flow(window_flow(source, sink, seen)) as handle:
            assert handle.status is FlowStatus.RUNNING
            source.send_nowait(10)
            source.send_nowait(5)
            await seen.reached.wait()
    assert handle.status is FlowStatus.FINISHED
    assert sink.out == [15]
    assert sink.closed == 1


@pytest.mark.asyncio
async def test_open_flow_error_in_the_body_aborts_the_flow() -> None:
    source: PushSource[int] = PushSource()
    sink = GatedSink(open_=True)
    seen = Seen(1)
    with anyio.fail_after(WATCHDOG), pytest.raises((KeyError, BaseExceptionGroup)) as info:
        async with aiowax.open_flow(window_flow(source, sink, seen)) as handle:
            source.send_nowait(1)
            await seen.reached.wait()
            raise KeyError("from the body")
    assert [type(e) for e in leaves(info.value)] == [KeyError]
    assert handle.status is FlowStatus.CANCELLED
    assert sink.out == []  # aborted: the window is not flushed
    assert sink.closed == 1
    assert source.closed


# -- PushSource -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_send_nowait_refuses_when_full() -> None:
    source: PushSource[int] = PushSource(max_buffer=2)  # no flow reads it
    source.send_nowait(1)
    source.send_nowait(2)
    with pytest.raises(SourceFullError) as info:
        source.send_nowait(3)
    assert isinstance(info.value, anyio.WouldBlock)
    assert source.qsize() == 2
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_buffer"):
            PushSource(max_buffer=bad)
    for wrong in (1.5, True):
        with pytest.raises(TypeError, match="max_buffer"):
            PushSource(max_buffer=wrong)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_sender_waits_while_the_flow_is_full_and_resumes_when_it_drains() -> None:
    source: PushSource[int] = PushSource(max_buffer=2)
    sink = GatedSink()
    done = anyio.Event()
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, push_flow(source, sink))
            # Feed the flow until it holds all it can: the sink waits, the
            # channels fill, then the source's buffer.
            sent = 0
            while True:
                with contextlib.suppress(SourceFullError):
                    while True:
                        source.send_nowait(sent)
                        sent += 1
                await settle()
                if source.qsize() == source.max_buffer:
                    break  # everything is blocked, and still no room
                assert sent < 1000, "the flow never filled up"

            async def sender() -> None:
                await source.send(sent)
                done.set()

            tg.start_soon(sender)
            await settle()
            assert not done.is_set()  # the sender is held back
            with pytest.raises(SourceFullError):
                source.send_nowait(-1)

            sink.gate.set()  # the flow drains...
            await done.wait()  # ...and the sender goes on
            source.close()
            await handle.wait()
    assert sink.out == list(range(sent + 1))
    assert handle.status is FlowStatus.FINISHED


@pytest.mark.asyncio
async def test_waiting_sender_gets_source_closed_error_when_the_flow_ends() -> None:
    source: PushSource[int] = PushSource(max_buffer=1)
    sink = GatedSink()
    errors: list[BaseException] = []
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, push_flow(source, sink))

            async def sender() -> None:
                try:
                    for i in range(1000):
                        await source.send(i)
                except SourceClosedError as error:
                    errors.append(error)

            tg.start_soon(sender)
            await settle()  # the sender waits for room
            assert not errors
            await handle.abort()
    assert len(errors) == 1


@pytest.mark.asyncio
async def test_close_ends_the_input_and_the_flow_finishes() -> None:
    source: PushSource[int] = PushSource(max_buffer=100)
    out: list[int] = []
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, push_flow(source, TestingSink(out)))
            for i in range(50):
                source.send_nowait(i)
            source.close()
            with pytest.raises(SourceClosedError):
                source.send_nowait(50)
            await handle.wait()
    assert out == list(range(50))  # what was buffered still went through
    assert handle.status is FlowStatus.FINISHED
    with pytest.raises(SourceClosedError):
        source.send_nowait(51)
    with pytest.raises(SourceClosedError):
        await source.send(52)


# -- IterableSource ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_iterable_source_reads_an_async_generator() -> None:
    finalized = anyio.Event()

    async def numbers() -> AsyncIterator[int]:
        try:
            for i in range(10):
                await anyio.lowlevel.checkpoint()
                yield i
        finally:
            finalized.set()

    out: list[int] = []
    flow = Dataflow()
    flow.input("inp", IterableSource(numbers(), batch_size=3))
    flow.map("square", lambda x: x * x)
    flow.output("out", TestingSink(out))
    with anyio.fail_after(WATCHDOG):
        async with aiowax.open_flow(flow) as handle:
            await handle.wait()
    assert out == [i * i for i in range(10)]
    assert handle.status is FlowStatus.FINISHED
    assert finalized.is_set()
    with pytest.raises(TypeError, match="async iterable"):
        IterableSource([1, 2, 3])  # type: ignore[arg-type]


# -- BroadcastSink ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_every_reader_gets_everything_and_finishes_with_the_flow() -> None:
    source: PushSource[int] = PushSource()
    sink: BroadcastSink[int] = BroadcastSink()
    got: list[list[int]] = [[], [], []]
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, push_flow(source, sink))
            for into in got:
                tg.start_soon(read_all, sink.subscribe(), into)
            await settle()
            assert sink.subscriber_count == 3
            for i in range(100):
                await source.send(i)
            source.close()
            # The readers end by themselves once the flow has ended.
    assert got == [list(range(100))] * 3
    assert handle.status is FlowStatus.FINISHED
    late = sink.subscribe()  # subscribing after the end: nothing, at once
    assert [x async for x in late] == []


@pytest.mark.asyncio
async def test_slow_reader_is_disconnected_while_the_flow_and_others_go_on() -> None:
    source: PushSource[int] = PushSource()
    sink: BroadcastSink[int] = BroadcastSink(buffer=4)  # overflow="disconnect"
    fast: list[int] = []
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            slow = sink.subscribe()  # never reads while the flow runs
            tg.start_soon(read_all, sink.subscribe(buffer=1000), fast)
            handle = await aiowax.start_flow(tg, push_flow(source, sink))
            for i in range(50):
                await source.send(i)
            await settle()
            assert sink.subscriber_count == 1  # the slow one was dropped at once
            source.close()
            await handle.wait()  # the flow never waited for the slow reader
        assert fast == list(range(50))
        kept: list[int] = []
        with pytest.raises(SubscriberOverflowError):
            async for item in slow:  # what it had buffered, then the error
                kept.append(item)
    assert kept == [0, 1, 2, 3]


@pytest.mark.asyncio
async def test_drop_oldest_keeps_the_newest_and_counts_the_rest() -> None:
    source: PushSource[int] = PushSource()
    sink: BroadcastSink[int] = BroadcastSink(buffer=4, overflow="drop_oldest")
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            sub = sink.subscribe()
            handle = await aiowax.start_flow(tg, push_flow(source, sink))
            for i in range(10):
                await source.send(i)
            source.close()
            await handle.wait()  # never held back by the reader
        assert [x async for x in sub] == [6, 7, 8, 9]
    assert sub.dropped == 6


@pytest.mark.asyncio
async def test_block_is_lossless_and_holds_the_flow_back() -> None:
    source: PushSource[int] = PushSource(max_buffer=2)
    sink: BroadcastSink[int] = BroadcastSink(buffer=2, overflow="block")
    total = 100
    sent = 0
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            sub = sink.subscribe()
            handle = await aiowax.start_flow(tg, push_flow(source, sink))

            async def sender() -> None:
                nonlocal sent
                for i in range(total):
                    await source.send(i)
                    sent += 1
                source.close()

            tg.start_soon(sender)
            await settle()
            assert sent < total  # back-pressure reached the sender
            assert not handle.done
            got = [x async for x in sub]  # reading lets everything through
    assert got == list(range(total))
    assert handle.status is FlowStatus.FINISHED


@pytest.mark.asyncio
async def test_reader_leaving_mid_stream_is_unsubscribed_and_the_flow_goes_on() -> None:
    source: PushSource[int] = PushSource()
    # "block" would hold the flow back forever for a reader still subscribed.
    sink: BroadcastSink[int] = BroadcastSink(buffer=2, overflow="block")
    left: list[int] = []
    stayed: list[int] = []
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            leaving = sink.subscribe()
            tg.start_soon(read_all, sink.subscribe(), stayed)
            handle = await aiowax.start_flow(tg, push_flow(source, sink))

            async def sender() -> None:
                for i in range(20):
                    await source.send(i)
                source.close()

            tg.start_soon(sender)
            async with leaving:
                async for item in leaving:
                    left.append(item)
                    if len(left) == 3:
                        break
            assert sink.subscriber_count == 1
            await handle.wait()
    assert left == [0, 1, 2]
    assert stayed == list(range(20))
    assert handle.status is FlowStatus.FINISHED


# -- regressions: bugs found while writing these tests ---------------------------


@pytest.mark.asyncio
async def test_stop_keeps_items_the_push_source_accepted() -> None:
    source: PushSource[int] = PushSource()
    out: list[int] = []
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, push_flow(source, TestingSink(out)))
            for i in range(5):
                source.send_nowait(i)  # accepted: the caller was told so
            await handle.stop()
    assert out == list(range(5))


@pytest.mark.asyncio
async def test_break_out_of_async_for_unsubscribes() -> None:
    source: PushSource[int] = PushSource()
    sink: BroadcastSink[int] = BroadcastSink(buffer=2, overflow="block")
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, push_flow(source, sink))
            for i in range(3):
                source.send_nowait(i)
            async for _ in sink.subscribe():
                break
            await settle()
            try:
                assert sink.subscriber_count == 0
            finally:
                await handle.abort()


@pytest.mark.asyncio
async def test_iterable_source_stops_while_a_read_is_in_flight() -> None:
    async def slow() -> AsyncIterator[int]:
        yield 1
        await anyio.sleep_forever()
        yield 2  # pragma: no cover

    seen = Seen(1)
    flow = Dataflow()
    flow.input("inp", IterableSource(slow()))
    flow.inspect(seen)
    flow.output("out", TestingSink([]))
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow, propagate=False)
            await seen.reached.wait()
            await handle.stop()
    assert handle.status is FlowStatus.FINISHED


@pytest.mark.asyncio
async def test_open_flow_raises_errors_as_they_are() -> None:
    with anyio.fail_after(WATCHDOG):
        with pytest.raises(KeyError):
            async with aiowax.open_flow(push_flow(PushSource(), TestingSink([]))):
                raise KeyError("from the body")
        source: PushSource[int] = PushSource()
        flow = Dataflow()
        flow.input("inp", source)
        flow.map("invert", lambda x: 1 / x)
        flow.output("out", TestingSink([]))
        with pytest.raises(ZeroDivisionError):
            async with aiowax.open_flow(flow) as handle:
                source.send_nowait(0)
                await handle.wait()

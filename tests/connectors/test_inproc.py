"""The in-process connectors (`aiowax._connectors.inproc`), in flows embedded in an application.

An application feeds a flow with `PushSource` (or an `IterableSource`) and
reads it with `BroadcastSink` subscriptions, each with its buffer and
overflow policy. The flows run through `aiowax.start_flow` /
`aiowax.open_flow` (tested in ``tests/test_embed.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
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
from aiowax.testing import TestingSink
from embed_helpers import WATCHDOG, GatedSink, Seen, push_flow, settle

# -- PushSource ------------------------------------------------------------------------


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


# -- IterableSource --------------------------------------------------------------------


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


# -- BroadcastSink ---------------------------------------------------------------------


async def read_all(sub: Subscription[Any], into: list[Any]) -> None:
    async for item in sub:
        into.append(item)


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

"""The in-process connectors (`aiowax._connectors.inproc`), in flows embedded in an application.

An application feeds a flow with `PushSource` (or an `IterableSource`) and
reads it with `BroadcastSink` subscriptions, each with its buffer and
overflow policy. The flows run through `aiowax.start_flow` /
`aiowax.open_flow` (tested in ``tests/test_embed.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import aiowax
from aiowax import FlowStatus
from aiowax.connectors.inproc import (
    BroadcastSink,
    FlowFailedError,
    IterableSource,
    PushSource,
    SourceClosedError,
    SourceFullError,
    SubscriberOverflowError,
    Subscription,
)
from aiowax.dataflow import Dataflow
from aiowax.inputs import FixedPartitionedSource
from aiowax.recovery import NoPartitionsError, RecoveryConfig
from aiowax.testing import TestingSink, TestingSource
from aiowax.window import SystemClockConfig, TumblingWindow
from embed_helpers import WATCHDOG, GatedSink, Seen, push_flow, settle, stop_after_yielding

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
            with pytest.raises(SourceClosedError, match="close\\(\\) ended its input for good"):
                source.send_nowait(50)
            await handle.wait()
    assert out == list(range(50))  # what was buffered still went through
    assert handle.status is FlowStatus.FINISHED
    with pytest.raises(SourceClosedError):
        source.send_nowait(51)
    with pytest.raises(SourceClosedError):
        await source.send(52)


@pytest.mark.asyncio
async def test_a_send_between_runs_is_told_apart_from_one_after_close() -> None:
    # helper-58: both said "the PushSource is closed"; between runs a web
    # handler may wait for the next run, after close() it never comes.
    source: PushSource[int] = PushSource()
    with anyio.fail_after(WATCHDOG):
        async with aiowax.open_flow(push_flow(source, TestingSink([]))) as handle:
            await handle.stop()
    with pytest.raises(SourceClosedError, match="its run ended, and no run reads it now"):
        source.send_nowait(1)
    source.close()
    with pytest.raises(SourceClosedError, match="for good"):
        source.send_nowait(1)


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
@pytest.mark.parametrize("old_ends", ["stop", "abort"])
async def test_overlapping_runs_on_one_push_source_end_only_their_own_reading(
    old_ends: str,
) -> None:
    # A hot swap: the new run starts before the old one stops. The old run's
    # end closed the source under the new one, which then finished on its
    # own and refused sends (helper-60). Every accepted item is read once.
    source: PushSource[int] = PushSource()
    old_out: list[int] = []
    new_out: list[int] = []
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            old = await aiowax.start_flow(tg, push_flow(source, TestingSink(old_out)))
            for i in range(5):
                await source.send(i)
            new = await aiowax.start_flow(tg, push_flow(source, TestingSink(new_out)))
            for i in range(5, 10):
                await source.send(i)
            await (old.stop() if old_ends == "stop" else old.abort())
            await settle()
            assert new.status is FlowStatus.RUNNING
            for i in range(10, 15):
                await source.send(i)  # not refused
            source.close()
            await new.wait()
    assert new.status is FlowStatus.FINISHED
    assert set(new_out) >= set(range(10, 15))
    if old_ends == "stop":  # an abort may drop what the old run held
        assert sorted(old_out + new_out) == list(range(15))
    assert not set(old_out) & set(new_out)


@pytest.mark.asyncio
async def test_overlapping_runs_stopped_together_lose_no_accepted_item() -> None:
    # Each stop counted the other run as still reading and left the buffer
    # to it: 19,999 of 20,000 accepted items were never read (helper-61).
    source: PushSource[int] = PushSource(max_buffer=20_000, batch_size=1)
    old_out: list[int] = []
    new_out: list[int] = []
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            old = await aiowax.start_flow(tg, push_flow(source, TestingSink(old_out)))
            new = await aiowax.start_flow(tg, push_flow(source, TestingSink(new_out)))
            for i in range(20_000):
                source.send_nowait(i)  # accepted: the caller was told so
            async with anyio.create_task_group() as stops:
                stops.start_soon(old.stop)
                stops.start_soon(new.stop)
    assert sorted(old_out + new_out) == list(range(20_000))
    assert source.closed


@pytest.mark.asyncio
async def test_overlapping_runs_waiting_for_items_both_wake_on_a_send() -> None:
    # Each waiting read made an event of its own, and a send set only the
    # newest: the other run's read saw items only at its idle return, 0.25 s
    # later (helper-61).
    source: PushSource[int] = PushSource()
    now = datetime.now(UTC)
    parts = [source.build_part(now, "push", None) for _ in range(2)]
    returned: list[list[int]] = []

    async def read(part: Any) -> None:
        returned.append(await part.next_batch(None))

    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            for part in parts:
                tg.start_soon(read, part)
            await settle()
            assert returned == []  # both wait
            source.send_nowait(1)
            for _ in range(20):
                await anyio.lowlevel.checkpoint()
            assert sorted(returned) == [[], [1]]


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


def failing_flow(items: list[int], sink: BroadcastSink[int]) -> Dataflow:
    """items -> a map that raises on 3 -> sink."""

    def boom(x: int) -> int:
        if x == 3:
            raise ValueError("bad item 3")
        return x

    flow = Dataflow()
    flow.input("inp", TestingSource(items))
    flow.map("boom", boom)
    flow.output("out", sink)
    return flow


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.asyncio
async def test_readers_of_a_failed_flow_get_its_output_then_the_failure(workers: int) -> None:
    sink: BroadcastSink[int] = BroadcastSink()
    subs = [sink.subscribe(), sink.subscribe()]
    with anyio.fail_after(WATCHDOG), pytest.raises(ValueError, match="bad item 3"):
        await aiowax.run(failing_flow([0, 1, 2, 3, 4], sink), workers=workers)
    for sub in subs:
        got: list[int] = []
        with pytest.raises(FlowFailedError, match=r"failed \(ValueError: bad item 3\)") as info:
            async for item in sub:
                got.append(item)
        # What the sink was given before the failure, then the error, not a
        # clean end that would look like a finished flow.
        assert sorted(got) == [0, 1, 2]
        assert isinstance(info.value.__cause__, ValueError)
        assert [x async for x in sub] == []  # unsubscribed: it ends now
    assert sink.subscriber_count == 0
    # A reader that comes after the failure is told too.
    late = sink.subscribe()
    with pytest.raises(FlowFailedError):
        async for _ in late:
            pass


@pytest.mark.asyncio
async def test_a_run_after_a_failed_one_finishes_its_readers_cleanly() -> None:
    sink: BroadcastSink[int] = BroadcastSink()
    with pytest.raises(ValueError, match="bad item 3"):
        await aiowax.run(failing_flow([3], sink))
    sub = sink.subscribe()
    with anyio.fail_after(WATCHDOG):
        await aiowax.run(failing_flow([1, 2], sink))
    assert [x async for x in sub] == [1, 2]


@pytest.mark.asyncio
async def test_readers_finish_cleanly_after_a_graceful_stop_or_a_cancel() -> None:
    for how in ("stop", "cancel"):
        source: PushSource[int] = PushSource()
        sink: BroadcastSink[int] = BroadcastSink()
        sub = sink.subscribe()
        with anyio.fail_after(WATCHDOG):
            async with anyio.create_task_group() as tg:
                handle = await aiowax.start_flow(tg, push_flow(source, sink))
                await source.send(1)
                if how == "stop":
                    await handle.stop()
                else:
                    tg.cancel_scope.cancel()
            got = [x async for x in sub]  # ends: no FlowFailedError
        if how == "stop":
            assert got == [1]  # a graceful stop delivers what was sent
        assert handle.error is None, how


class _NoPartitions(FixedPartitionedSource[int, None]):
    """A source whose brokers do not answer: the run fails before any sink is built."""

    def list_parts(self) -> list[str]:
        raise ConnectionError("brokers did not answer")

    def build_part(self, now: datetime, for_part: str, resume_state: None) -> Any:
        raise AssertionError("never built")


@pytest.mark.parametrize("fails_in", ["list_parts", "recovery"])
@pytest.mark.asyncio
async def test_readers_end_when_the_run_fails_before_the_sink_is_built(
    fails_in: str, tmp_path: Path
) -> None:
    sink: BroadcastSink[int] = BroadcastSink()
    flow = Dataflow()
    if fails_in == "list_parts":
        flow.input("inp", _NoPartitions())
        options: dict[str, Any] = {}
        error: type[Exception] = ConnectionError
    else:
        flow.input("inp", TestingSource([1]))
        options = {"recovery_config": RecoveryConfig(tmp_path / "missing")}
        error = NoPartitionsError
    flow.output("out", sink)
    early = sink.subscribe()
    ended: list[BaseException] = []

    async def read(sub: Subscription[int]) -> None:
        with pytest.raises(FlowFailedError) as info:
            async for _ in sub:
                pass
        ended.append(info.value)

    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read, early)
            await settle()
            with pytest.raises(error):
                await aiowax.run(flow, **options)
        await read(sink.subscribe())  # and one that comes after the failure
    assert [type(e.__cause__) for e in ended] == [error, error]


@pytest.mark.asyncio
async def test_a_reader_of_a_failed_run_gets_the_failure_though_the_next_run_started() -> None:
    # A supervisor starts the flow again at once; the reader has not read
    # its buffer yet. Starting the next run cleared the failure, and the
    # reader went on into the next run's items without hearing of it.
    sink: BroadcastSink[int] = BroadcastSink()
    reader = sink.subscribe()
    with pytest.raises(ValueError, match="bad item 3"):
        await aiowax.run(failing_flow([0, 1, 2, 3], sink))
    source: PushSource[int] = PushSource()
    got: list[int] = []
    with anyio.fail_after(WATCHDOG):
        async with aiowax.open_flow(push_flow(source, sink)):
            await source.send(10)  # the next run's: not for this reader
            with pytest.raises(FlowFailedError):
                async for item in reader:
                    got.append(item)
            source.close()
    assert got == [0, 1, 2]


@pytest.mark.asyncio
async def test_two_runs_writing_to_one_sink_end_its_readers_when_both_have_ended() -> None:
    # The first run to end ended every reader while the other still wrote.
    sink: BroadcastSink[str] = BroadcastSink()
    a: PushSource[str] = PushSource()
    b: PushSource[str] = PushSource()
    reader = sink.subscribe()
    got: list[str] = []
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_all, reader, got)
            async with aiowax.open_flow(push_flow(b, sink)):
                async with aiowax.open_flow(push_flow(a, sink)):
                    await a.send("a1")
                    a.close()
                await b.send("b1")  # run a has ended; the reader goes on
                while got != ["a1", "b1"]:
                    await settle()
                b.close()
    assert got == ["a1", "b1"]  # and the reader ended with run b


@pytest.mark.asyncio
async def test_a_reader_waits_for_the_next_run_once_it_has_started() -> None:
    source: PushSource[int] = PushSource()
    sink: BroadcastSink[int] = BroadcastSink()
    flow = push_flow(source, sink)
    with anyio.fail_after(WATCHDOG):
        async with aiowax.open_flow(flow):
            pass
        between = sink.subscribe()
        # Between runs a reader ends at once: no run may ever come.
        assert [x async for x in between] == []
        reader = sink.subscribe()  # made between runs, read during the next
        async with aiowax.open_flow(flow) as handle:
            await source.send_many([3, 4])
            source.close()
            got = [x async for x in reader]
        assert handle.status is FlowStatus.FINISHED
    assert got == [3, 4]


@pytest.mark.asyncio
async def test_readers_end_after_an_aborted_run_and_the_next_run_serves_them() -> None:
    sink: BroadcastSink[int] = BroadcastSink()
    first = sink.subscribe()
    with anyio.fail_after(WATCHDOG):
        # ABORT ends the run as a crash would: the sink is never closed.
        await aiowax.run(_testing_flow([1, TestingSource.ABORT(), 2], sink))
        got = [x async for x in first]
        second = sink.subscribe()
        async with anyio.create_task_group() as tg:
            tg.start_soon(aiowax.run, _testing_flow([5, 6], sink))
            await settle()
            again = [x async for x in second]
    assert got == [1]
    assert again == [5, 6]


def _testing_flow(items: list[Any], sink: BroadcastSink[int]) -> Dataflow:
    flow = Dataflow()
    flow.input("inp", TestingSource(items))
    flow.output("out", sink)
    return flow


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


@pytest.mark.asyncio
async def test_a_subscription_dropped_before_it_was_read_unsubscribes() -> None:
    # A handler failing between subscribe() and its `async for` left the
    # subscription in the sink for good: it took every item written (up to
    # its buffer, under drop_oldest) and each write looped over it.
    import gc

    source: PushSource[int] = PushSource()
    sink: BroadcastSink[int] = BroadcastSink(buffer=4, overflow="drop_oldest")
    kept = sink.subscribe()
    for _ in range(3):
        sink.subscribe()  # dropped at once
    gc.collect()
    assert sink.subscriber_count == 1
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, push_flow(source, sink))
            await source.send_many([1, 2, 3])
            reading = aiter(kept)
            got = [await anext(reading) for _ in range(3)]
            await handle.stop()
    assert got == [1, 2, 3]


# -- issue 11: overflow judged item by item (D3), block waits for all at once (H1) -----


async def read_or_fail(sub: Subscription[Any], into: list[Any], errors: list[Exception]) -> None:
    """Read ``sub`` to its end as fast as it is scheduled; keep an overflow error."""
    try:
        async for item in sub:
            into.append(item)
    except SubscriberOverflowError as error:
        errors.append(error)


@pytest.mark.asyncio
@pytest.mark.parametrize("overflow", ["disconnect", "drop_oldest"])
async def test_a_reader_that_keeps_up_gets_a_batch_larger_than_its_buffer(overflow: Any) -> None:
    """Issue 11 D3 (repro 07): one batch of 100 items, a 10-item buffer.

    The reader waits for items and takes each as soon as it runs: it never
    falls behind, so neither policy applies, although the batch is ten times
    its buffer.
    """
    sink: BroadcastSink[int] = BroadcastSink(overflow=overflow)
    flow = Dataflow()
    flow.input("inp", TestingSource(range(100), batch_size=100))
    flow.output("out", sink)
    sub = sink.subscribe(buffer=10)
    got: list[int] = []
    errors: list[Exception] = []
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_or_fail, sub, got, errors)
            await settle()  # the reader waits before the flow starts
            await aiowax.run(flow)
    assert errors == []
    assert got == list(range(100))
    assert sub.dropped == 0


async def _enrich(x: int) -> int:
    return x  # an async mapper that answers at once (a cache hit)


@pytest.mark.asyncio
async def test_default_sink_behind_an_async_map_keeps_a_fast_reader() -> None:
    """Issue 11 D3 (repro 08): with the defaults (buffer 1024, "disconnect"), an
    async map gathers up to 4096 items into one batch; a reader that keeps up
    gets all of them."""
    sink: BroadcastSink[int] = BroadcastSink()
    flow = Dataflow()
    flow.input("inp", TestingSource(range(20_000), batch_size=500))
    flow.map("enrich", _enrich)
    flow.output("out", sink)
    sub = sink.subscribe()
    got: list[int] = []
    errors: list[Exception] = []
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_or_fail, sub, got, errors)
            await settle()
            await aiowax.run(flow)
    assert errors == []
    assert got == list(range(20_000))


@pytest.mark.asyncio
async def test_default_sink_keeps_a_fast_reader_when_many_windows_close_at_once() -> None:
    """Issue 11 D3 (repro 08, second shape): 2000 windows close on one tick,
    so one write carries 2000 results, more than the default buffer."""
    sink: BroadcastSink[tuple[str, int]] = BroadcastSink()
    align = datetime(2024, 1, 1, tzinfo=UTC)
    flow = Dataflow()
    flow.input("inp", TestingSource([(f"sensor-{i}", 1) for i in range(2000)], batch_size=2000))
    flow.fold_window(
        "count",
        SystemClockConfig(),
        TumblingWindow(timedelta(hours=1), align),
        lambda: 0,
        lambda n, v: n + v,
    )
    flow.output("out", sink)
    sub = sink.subscribe()
    got: list[tuple[str, Any]] = []
    errors: list[Exception] = []
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_or_fail, sub, got, errors)
            await settle()
            await aiowax.run(flow)
    assert errors == []
    assert len(got) == 2000
    assert {key for key, _ in got} == {f"sensor-{i}" for i in range(2000)}


@pytest.mark.asyncio
@pytest.mark.parametrize("overflow", ["disconnect", "drop_oldest"])
async def test_a_reader_that_falls_behind_mid_batch_still_gets_the_policy(overflow: Any) -> None:
    """Item by item, not never: a reader that stops reading inside a large batch
    falls behind once its buffer is full, and the flow goes on without it.

    It takes 0..20 as they come and stalls with 21..28 in its 8-item buffer:
    "disconnect" leaves it those, then the error; "drop_oldest" the newest 8.
    """
    sink: BroadcastSink[int] = BroadcastSink(buffer=8, overflow=overflow)
    flow = Dataflow()
    flow.input("inp", TestingSource(range(100), batch_size=100))
    flow.output("out", sink)
    stalls = sink.subscribe()
    fast = sink.subscribe()
    got_fast: list[int] = []
    got_stalls: list[int] = []
    errors: list[Exception] = []
    release = anyio.Event()

    async def stalling() -> None:
        try:
            async for item in stalls:
                got_stalls.append(item)
                if item == 20:
                    await release.wait()  # busy elsewhere: falls behind here
        except SubscriberOverflowError as error:
            errors.append(error)

    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stalling)
            tg.start_soon(read_or_fail, fast, got_fast, errors)
            await settle()
            await aiowax.run(flow)  # never waits for the stalled reader
            release.set()
    assert got_fast == list(range(100))
    if overflow == "disconnect":
        assert len(errors) == 1
        assert got_stalls == list(range(21 + 8))
    else:
        assert errors == []
        assert got_stalls == [*range(21), *range(92, 100)]
        assert stalls.dropped == 100 - 21 - 8


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_block_waits_for_all_slow_readers_at_once() -> None:
    """Issue 11 H1 (repro 06): four readers at 1 ms (virtual) per item.

    Each alone needs 200 items x 1 ms = 0.2 s. Served one after the other the
    flow took about four times that; waiting for all of them at once, it goes
    at the pace of the slowest one. On the virtual clock the times are exact.
    """
    total, per_item = 200, 0.001
    sink: BroadcastSink[int] = BroadcastSink(buffer=16, overflow="block")
    flow = Dataflow()
    flow.input("inp", TestingSource(range(total), batch_size=50))
    flow.output("out", sink)
    got: list[list[int]] = [[] for _ in range(4)]

    async def slow(sub: Subscription[int], into: list[int]) -> None:
        async for item in sub:
            into.append(item)
            await anyio.sleep(per_item)

    start = anyio.current_time()
    with anyio.fail_after(3600):
        async with anyio.create_task_group() as tg:
            for into in got:
                tg.start_soon(slow, sink.subscribe(), into)
            await aiowax.run(flow)
    elapsed = anyio.current_time() - start
    assert got == [list(range(total))] * 4
    assert elapsed < 1.5 * total * per_item, f"{elapsed:.3f} s of virtual time"


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("overflow", ["disconnect", "drop_oldest", "block"])
async def test_one_hundred_subscribers_fast_slow_and_quitting(overflow: Any) -> None:
    """Issue 11 acceptance: 80 fast, 10 slow and 10 quitting readers.

    Scaled down from 1M items to 3000 to fit CI; the 1M-item run is measured
    by hand. Fast readers (some yield to the loop after every item, some every
    few items, some never) get every item in order under every policy; quitting
    readers get, in order, what they read before leaving; slow readers (1 ms
    of virtual time every 10 items, so 0.3 s for the whole input) get every
    item with "block", an in-order subsequence with "drop_oldest", and a
    prefix then `SubscriberOverflowError` with "disconnect". With "block" the
    run keeps the slowest reader's pace: compared on the virtual clock.
    """
    total = 3000
    slow_pace = total // 10 * 0.001  # seconds a slow reader needs on its own
    sink: BroadcastSink[int] = BroadcastSink(buffer=256, overflow=overflow)
    flow = Dataflow()
    flow.input("inp", TestingSource(range(total), batch_size=500))
    flow.map("enrich", _enrich)  # batches up to 4096 items, beyond the buffer
    flow.output("out", sink)
    fast = [([], sink.subscribe()) for _ in range(80)]
    slow = [([], sink.subscribe()) for _ in range(10)]
    quitting = [([], sink.subscribe(), total * i // 10) for i in range(10)]
    errors: dict[int, Exception] = {}

    async def read_fast(index: int, into: list[int], sub: Subscription[int]) -> None:
        every = (1, 7, 0)[index % 3]  # a checkpoint after every item, every 7th, never
        async for item in sub:
            into.append(item)
            if every and item % every == 0:
                await anyio.lowlevel.checkpoint()

    async def read_slow(into: list[int], sub: Subscription[int]) -> None:
        try:
            async for item in sub:
                into.append(item)
                if len(into) % 10 == 0:
                    await anyio.sleep(0.001)
        except SubscriberOverflowError as error:
            errors[id(sub)] = error

    async def read_and_quit(into: list[int], sub: Subscription[int], after: int) -> None:
        if after == 0:
            sub.close()  # leaves before reading anything
            return
        async for item in sub:
            into.append(item)
            if len(into) == after:
                break

    start = anyio.current_time()
    with anyio.fail_after(3600):
        async with anyio.create_task_group() as tg:
            for index, (into, sub) in enumerate(fast):
                tg.start_soon(read_fast, index, into, sub)
            for into, sub in slow:
                tg.start_soon(read_slow, into, sub)
            for into, sub, after in quitting:
                tg.start_soon(read_and_quit, into, sub, after)
            await aiowax.run(flow)
    elapsed = anyio.current_time() - start

    everything = list(range(total))
    for into, _ in fast:
        assert into == everything
    for into, _, after in quitting:
        assert into == everything[:after]
    for into, sub in slow:
        if overflow == "block":
            assert into == everything
        elif overflow == "drop_oldest":
            assert into == sorted(set(into))  # in order, no repeats
            assert len(into) + sub.dropped == total
            assert into[-1] == total - 1  # the newest are kept
        else:
            assert id(sub) in errors  # 0.3 s behind a flow that takes no time
            assert into == everything[: len(into)]
    if overflow == "block":
        assert elapsed < 1.5 * slow_pace, f"{elapsed:.3f} s for a {slow_pace:.3f} s pace"


# -- issue 11: a graceful stop keeps what an IterableSource read (D4) -------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("batch_size", [1, 64])
async def test_graceful_stop_keeps_what_the_iterable_yielded(batch_size: int) -> None:
    """Issue 11 D4 (repro 09): every item the iterable yielded reaches the sink."""
    for seed in range(8):
        aiterable, yielded, reached = stop_after_yielding(seed)
        out: list[int] = []
        flow = Dataflow()
        flow.input("inp", IterableSource(aiterable, batch_size=batch_size))
        flow.output("out", TestingSink(out))
        with anyio.fail_after(WATCHDOG):
            async with aiowax.open_flow(flow, epoch_interval=timedelta(seconds=1)) as handle:
                await reached.wait()
                await handle.stop()
        assert out == yielded, f"seed {seed}: lost {sorted(set(yielded) - set(out))}"


@pytest.mark.asyncio
async def test_items_read_before_the_iterable_fails_go_through_first() -> None:
    """What the iterable gave before it raised is written, then the error is raised."""

    async def failing() -> AsyncIterator[int]:
        yield 1
        yield 2
        raise RuntimeError("connection lost")

    out: list[int] = []
    flow = Dataflow()
    flow.input("inp", IterableSource(failing()))
    flow.output("out", TestingSink(out))
    with anyio.fail_after(WATCHDOG), pytest.raises(RuntimeError, match="connection lost"):
        await aiowax.run(flow)
    assert out == [1, 2]


# -- issue 11: a source and a second run (W6) --------------------------------------------


@pytest.mark.asyncio
async def test_a_push_source_feeds_a_flow_started_again_after_a_stop() -> None:
    """Issue 11 W6 (repro 20): stop, start again (a config reload): the second run
    reopens the source the first one closed, and reads what is sent to it."""
    source: PushSource[str] = PushSource()
    out: list[str] = []
    flow = push_flow(source, TestingSink(out))
    seen = Seen(1)
    flow.inspect(seen)
    with anyio.fail_after(WATCHDOG):
        async with aiowax.open_flow(flow) as handle:
            await source.send("first run")
            await seen.reached.wait()
            await handle.stop()
        assert source.closed  # between runs, senders are told so
        with pytest.raises(SourceClosedError):
            source.send_nowait("between runs")
        async with aiowax.open_flow(flow) as second:
            # At once, not only once the input task has run: the handle says
            # RUNNING, so a request handler may send now.
            assert second.status is FlowStatus.RUNNING
            assert not source.closed
            source.send_nowait("second run")
            source.close()
            await second.wait()
    assert out == ["first run", "second run"]
    assert second.status is FlowStatus.FINISHED


@pytest.mark.asyncio
async def test_what_an_aborted_run_left_in_a_push_source_goes_to_the_next_run() -> None:
    # More than the flow can hold: a channel of 8 messages, which the lane
    # fills with up to 1024 items each (it gathers reads that do not wait).
    sent = 30_000
    source: PushSource[int] = PushSource(max_buffer=sent, batch_size=10)
    gated = GatedSink()  # never opened: the first run fills up, then is aborted
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, push_flow(source, gated))
            for i in range(sent):
                source.send_nowait(i)
            await settle()
            await handle.abort()
        left = source.qsize()
        assert left > 0
        out: list[int] = []
        async with aiowax.open_flow(push_flow(source, TestingSink(out))) as second:
            source.close()
            await second.wait()
    assert out == list(range(sent - left, sent))


@pytest.mark.asyncio
async def test_a_run_on_a_push_source_whose_input_ended_is_refused() -> None:
    """Issue 11 W6: `close` ends the input for good; once a run has read it to
    its end, another run on the source raises instead of finishing at once."""
    source: PushSource[int] = PushSource()
    out: list[int] = []
    flow = push_flow(source, TestingSink(out))
    source.send_nowait(1)
    source.close()  # closed before the first run: it reads what is buffered
    with anyio.fail_after(WATCHDOG):
        await aiowax.run(flow)
        assert out == [1]
        with pytest.raises(SourceClosedError, match="close") as info:
            await aiowax.run(flow)
    assert "inp" in "".join(getattr(info.value, "__notes__", []))


@pytest.mark.asyncio
async def test_a_second_run_on_a_one_shot_iterator_is_refused() -> None:
    """Issue 11 W6, for `IterableSource`: an async generator is read once; a
    second run on it raises, while an iterable that makes a fresh iterator
    each time may feed any number of runs."""

    async def numbers() -> AsyncIterator[int]:
        for i in range(3):
            yield i

    class Replayable:
        def __aiter__(self) -> AsyncIterator[int]:
            return numbers()

    out: list[int] = []
    once = Dataflow()
    once.input("inp", IterableSource(numbers()))
    once.output("out", TestingSink(out))
    again = Dataflow()
    again.input("inp", IterableSource(Replayable()))
    again.output("out", TestingSink(out))
    with anyio.fail_after(WATCHDOG):
        await aiowax.run(once)
        with pytest.raises(SourceClosedError, match="once"):
            await aiowax.run(once)
        await aiowax.run(again)
        await aiowax.run(again)
    assert out == [0, 1, 2] * 3

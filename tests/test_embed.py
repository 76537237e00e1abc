"""Flows embedded in applications: `FlowHandle`, `start_flow` and `open_flow`.

`aiowax.start_flow` / `aiowax.open_flow` run a flow in the background; the
application stops it gracefully, aborts it, or gets its error. The
in-process connectors that feed and read such a flow (`PushSource`,
`IterableSource`, `BroadcastSink`) are tested in
``tests/connectors/test_inproc.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

import aiowax
from aiowax import FlowStatus
from aiowax.connectors.inproc import PushSource, SourceClosedError
from aiowax.dataflow import Dataflow
from aiowax.testing import TestingSink
from aiowax.window import SystemClockConfig, TumblingWindow
from embed_helpers import WATCHDOG, GatedSink, Seen, push_flow

HOUR = TumblingWindow(timedelta(hours=1), align_to=datetime(2024, 1, 1, tzinfo=UTC))


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


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


# -- FlowHandle ------------------------------------------------------------------------


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


# -- open_flow -------------------------------------------------------------------------


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

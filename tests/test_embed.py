"""Flows embedded in applications: `FlowHandle`, `start_flow` and `open_flow`.

`aiowax.start_flow` / `aiowax.open_flow` run a flow in the background; the
application stops it gracefully, aborts it, or gets its error. The
in-process connectors that feed and read such a flow (`PushSource`,
`IterableSource`, `BroadcastSink`) are tested in
``tests/connectors/test_inproc.py``.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

import aiowax
from aiowax import FlowHandle, FlowStatus
from aiowax.connectors.inproc import PushSource, SourceClosedError
from aiowax.dataflow import Dataflow
from aiowax.recovery import RecoveryConfig
from aiowax.testing import TestingSink, TestingSource
from aiowax.window import EventClockConfig, SystemClockConfig, TumblingWindow
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


@pytest.mark.asyncio
async def test_every_wait_raises_the_error_with_the_flows_traceback() -> None:
    # Not with the frames of every earlier raise piled on top.
    source: PushSource[int] = PushSource()
    flow = Dataflow()
    flow.input("inp", source)
    flow.map("invert", lambda x: 1 / x)
    flow.output("out", TestingSink([]))
    depths = []
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow, propagate=False)
            source.send_nowait(0)
            for _ in range(3):
                with pytest.raises(ZeroDivisionError) as info:
                    await handle.wait()
                depths.append(len(traceback.extract_tb(info.value.__traceback__)))
    assert depths[0] == depths[1] == depths[2]


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


@pytest.mark.asyncio
async def test_bad_run_options_are_named_after_the_call_that_took_them() -> None:
    flow = push_flow(PushSource(), TestingSink([]))
    with pytest.raises(ValueError, match=r"^open_flow: workers must be positive"):
        async with aiowax.open_flow(flow, workers=0):
            pass
    async with anyio.create_task_group() as tg:
        with pytest.raises(TypeError, match=r"^start_flow: epoch_interval must be"):
            await aiowax.start_flow(tg, flow, epoch_interval=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^open_flow: cluster mode keeps its state in Kafka"):
        async with aiowax.open_flow(flow, recovery_config=RecoveryConfig("d"), cluster=object()):
            pass
    with pytest.raises(ValueError, match=r"^run: cluster mode keeps its state in Kafka"):
        await aiowax.run(flow, recovery_config=RecoveryConfig("d"), cluster=object())


# -- stop(timeout) -----------------------------------------------------------------------
#
# On the virtual clock: a deadline of minutes passes in no real time, and at
# its exact time. The watchdog counts virtual time there too.

VIRTUAL_WATCHDOG = 3600


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_stop_with_a_timeout_that_is_met_returns() -> None:
    source: PushSource[int] = PushSource()
    sink = GatedSink(open_=True)
    seen = Seen(2)
    with anyio.fail_after(VIRTUAL_WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, window_flow(source, sink, seen))
            source.send_nowait(1)
            source.send_nowait(2)
            await seen.reached.wait()
            await handle.stop(timeout=timedelta(minutes=1))
    assert handle.status is FlowStatus.FINISHED
    assert sink.out == [3]
    assert sink.closed == 1


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("timeout", [90, 90.0, timedelta(seconds=90)], ids=["int", "float", "td"])
async def test_stop_aborts_at_the_deadline_and_raises_timeout_error(timeout: Any) -> None:
    source: PushSource[int] = PushSource()
    sink = GatedSink()  # never opened: the graceful stop cannot finish
    seen = Seen(1)
    loop_time = anyio.current_time
    with anyio.fail_after(VIRTUAL_WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, window_flow(source, sink, seen))
            source.send_nowait(1)
            await seen.reached.wait()
            asked = loop_time()
            with pytest.raises(TimeoutError, match="did not stop within 90 s"):
                await handle.stop(timeout=timeout)
            assert loop_time() - asked == pytest.approx(90)
            # Raised once the abort is over: the flow has ended, cancelled.
            assert handle.done
            assert handle.status is FlowStatus.CANCELLED
            assert handle.error is None
            assert not tg.cancel_scope.cancel_called
    assert sink.out == []
    assert sink.closed == 1
    assert source.closed


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_stop_with_a_zero_timeout_aborts_at_once() -> None:
    source: PushSource[int] = PushSource()
    sink = GatedSink()
    seen = Seen(1)
    with anyio.fail_after(VIRTUAL_WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, window_flow(source, sink, seen))
            source.send_nowait(1)
            await seen.reached.wait()
            start = anyio.current_time()
            with pytest.raises(TimeoutError):
                await handle.stop(timeout=0)
            assert anyio.current_time() == start
    assert handle.status is FlowStatus.CANCELLED


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_stop_with_a_timeout_raises_the_flows_error() -> None:
    # The flow fails while it stops: its error, not a timeout.
    source: PushSource[int] = PushSource()
    flow = Dataflow()
    flow.input("inp", source)
    flow.map("key", lambda x: ("k", x))
    flow.reduce_window("sum", SystemClockConfig(), HOUR, lambda acc, x: acc + x)
    flow.map("invert", lambda item: 1 / item[1][1])
    flow.output("out", TestingSink([]))
    with anyio.fail_after(VIRTUAL_WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow, propagate=False)
            source.send_nowait(0)  # the window flushed by the stop sums to 0
            with pytest.raises(ZeroDivisionError):
                await handle.stop(timeout=60)
    assert handle.status is FlowStatus.FAILED


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_an_abort_during_a_stop_with_a_timeout_is_no_timeout() -> None:
    source: PushSource[int] = PushSource()
    sink = GatedSink()
    seen = Seen(1)
    outcome: list[Exception | None] = []

    async def stop() -> None:
        try:
            await handle.stop(timeout=3600)
        except Exception as error:
            outcome.append(error)
        else:
            outcome.append(None)

    with anyio.fail_after(VIRTUAL_WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, window_flow(source, sink, seen))
            source.send_nowait(1)
            await seen.reached.wait()
            tg.start_soon(stop)
            await sink.writing.wait()  # stopping, stuck in the sink
            start = anyio.current_time()
            await handle.abort()
            assert anyio.current_time() == start
    # The stop returns once the flow has ended; `status` tells how.
    assert outcome == [None]
    assert handle.status is FlowStatus.CANCELLED


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("timeout", "error"),
    [(-1, ValueError), (float("nan"), ValueError), ("5", TypeError), (True, TypeError)],
)
async def test_stop_rejects_a_bad_timeout(timeout: Any, error: type[Exception]) -> None:
    source: PushSource[int] = PushSource()
    with anyio.fail_after(WATCHDOG):
        async with aiowax.open_flow(push_flow(source, TestingSink([]))) as handle:
            with pytest.raises(error, match=r"FlowHandle\.stop: timeout"):
                await handle.stop(timeout=timeout)
            assert handle.status is FlowStatus.RUNNING  # nothing was asked of the flow


# -- a failure nobody waits for is logged at once -----------------------------------------


def naive_time_flow(source: PushSource[Any]) -> Dataflow:
    """A flow that fails on a naive datetime (repro 24)."""
    flow = Dataflow(name="sensors")
    flow.input("inp", source)
    flow.map("key", lambda t: ("k", t))
    flow.fold_window(
        "count",
        EventClockConfig(lambda t: t),
        TumblingWindow(timedelta(seconds=10), align_to=datetime(2024, 1, 1, tzinfo=UTC)),
        lambda: 0,
        lambda acc, _: acc + 1,
    )
    flow.output("out", TestingSink([]))
    return flow


def aiowax_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "aiowax" and r.levelno >= logging.ERROR]


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_a_failure_inside_open_flow_is_logged_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source: PushSource[Any] = PushSource()
    with anyio.fail_after(VIRTUAL_WATCHDOG), pytest.raises(TypeError, match="naive"):
        async with aiowax.open_flow(naive_time_flow(source)) as handle:
            await source.send(datetime(2024, 1, 1))  # naive: the flow fails
            await anyio.sleep(1)  # the service goes on serving
            assert handle.status is FlowStatus.FAILED
            # Logged while the block still runs, not when it ends.
            (record,) = aiowax_errors(caplog)
            assert record.levelno == logging.ERROR
            assert record.exc_info is not None
            assert record.exc_info[1] is handle.error
            # A service may run several flows: the line says which one failed.
            assert "flow 'sensors' failed" in record.getMessage()
            assert "naive" in record.getMessage()
            assert "Traceback (most recent call last)" in caplog.text
    assert len(aiowax_errors(caplog)) == 1  # and only once


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_a_failure_with_propagate_false_is_logged_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source: PushSource[Any] = PushSource()
    with anyio.fail_after(VIRTUAL_WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, naive_time_flow(source), propagate=False)
            await source.send(datetime(2024, 1, 1))
            await anyio.sleep(1)
            assert len(aiowax_errors(caplog)) == 1
            with pytest.raises(TypeError, match="naive"):
                await handle.wait()
    assert len(aiowax_errors(caplog)) == 1


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_a_failure_that_is_waited_for_is_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Whoever waits receives it at once: a log record would only repeat it.
    source: PushSource[Any] = PushSource()
    with anyio.fail_after(VIRTUAL_WATCHDOG), pytest.raises(TypeError, match="naive"):
        async with aiowax.open_flow(naive_time_flow(source)) as handle:
            await source.send(datetime(2024, 1, 1))
            await handle.wait()
    assert aiowax_errors(caplog) == []


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_a_propagated_failure_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    source: PushSource[Any] = PushSource()
    with anyio.fail_after(VIRTUAL_WATCHDOG), pytest.RaisesGroup(TypeError):
        async with anyio.create_task_group() as tg:
            await aiowax.start_flow(tg, naive_time_flow(source))
            await source.send(datetime(2024, 1, 1))
            await anyio.sleep_forever()
    assert aiowax_errors(caplog) == []


# -- finding a step that blocks the loop ------------------------------------------------


@pytest.mark.asyncio
async def test_asyncio_debug_mode_names_the_step_that_held_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # docs/web-services.md: each step runs in a task named after it, which
    # debug mode's slow-callback warning shows (on asyncio and on uvloop).
    loop = asyncio.get_running_loop()
    debug, slow = loop.get_debug(), loop.slow_callback_duration
    loop.set_debug(True)
    loop.slow_callback_duration = 0.0  # every callback counts as slow: no real wait
    flow = Dataflow()
    flow.input("inp", TestingSource([1, 2]))
    flow.map("enrich", lambda x: x + 1)
    out: list[int] = []
    flow.output("out", TestingSink(out))
    try:
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            await aiowax.run(flow)
    finally:
        loop.set_debug(debug)
        loop.slow_callback_duration = slow
    assert out == [2, 3]
    assert "name='aiowax step enrich@0'" in caplog.text


class _State:
    """A key's state, to watch for (a plain int cannot be referenced weakly)."""

    def __init__(self) -> None:
        self.count = 0


@pytest.mark.asyncio
async def test_a_failed_handle_keeps_its_error_and_lets_go_of_the_run() -> None:
    # The error's traceback held the engine's frames, and through them the
    # run and every step's state: 20 MB a handle for a failed 200,000-key
    # stateful_map, for as long as a job list kept the handle.
    import gc
    import weakref

    from observing import observe_runs

    states: list[weakref.ref[_State]] = []

    def count(state: _State, value: int) -> tuple[_State, int]:
        if value == 99:
            raise ValueError(f"bad value after {state.count}")
        states.append(weakref.ref(state))
        state.count += 1
        return state, state.count

    flow = Dataflow()
    flow.input("inp", TestingSource([(f"k{i}", i) for i in range(100)], batch_size=10))
    flow.stateful_map("count", _State, count)
    flow.output("out", TestingSink([]))
    runs: list[weakref.ref[Any]] = []
    with observe_runs(lambda ctx: runs.append(weakref.ref(ctx))) as seen:
        with anyio.fail_after(WATCHDOG):
            async with anyio.create_task_group() as tg:
                handle = await aiowax.start_flow(tg, flow, propagate=False)
                with pytest.raises(ValueError, match="bad value after 0"):
                    await handle.wait()
        seen.clear()
    assert handle.status is FlowStatus.FAILED
    assert isinstance(handle.error, ValueError)
    gc.collect()
    assert [run() for run in runs] == [None]
    assert len(states) == 99 and all(state() is None for state in states)
    # The traceback still shows where it failed, and the user's own frame
    # keeps its variables (the failing key's state among them).
    printed = "".join(traceback.format_exception(handle.error))
    assert 'raise ValueError(f"bad value after {state.count}")' in printed
    frames = list(traceback.walk_tb(handle.error.__traceback__))
    (user,) = [frame for frame, _ in frames if frame.f_code is count.__code__]
    assert user.f_locals["value"] == 99
    assert isinstance(user.f_locals["state"], _State)


class _Halt(BaseException):
    """A BaseException of a library's own (as SystemExit from sys.exit() is)."""


@pytest.mark.asyncio
async def test_a_flow_ended_by_a_base_exception_from_user_code_is_failed_not_running() -> None:
    # The flow ends and the exception goes on up, but the handle said
    # RUNNING, error None, for good (helper-60, with SystemExit, which
    # asyncio also re-raises out of the loop): a health endpoint reading
    # the handle reported a dead flow as running.
    def mapper(x: int) -> int:
        if x == 2:
            raise _Halt("stop everything")
        return x

    source: PushSource[int] = PushSource()
    flow = Dataflow("svc")
    flow.input("inp", source)
    flow.map("m", mapper)
    flow.output("out", TestingSink([]))
    handle: FlowHandle | None = None
    with anyio.fail_after(WATCHDOG), pytest.raises(BaseExceptionGroup) as raised:
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow, propagate=False)
            await source.send(1)
            await source.send(2)
            await anyio.sleep_forever()
    assert raised.value.subgroup(_Halt) is not None  # it went on up
    assert handle is not None and handle.done
    assert handle.status is FlowStatus.FAILED
    assert isinstance(handle.error, _Halt)
    assert handle.stats().status == "failed"

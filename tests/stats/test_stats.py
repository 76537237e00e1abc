"""Stats of a run: `FlowHandle.stats()`, ``aiowax.run(on_stats=...)``, and their truth.

Every figure is checked against what the flow must have done: items in and
out per step and worker, keys per keyed step, late items for known late
patterns, back-pressure behind a sink that the test holds shut. Nothing
sleeps to wait: the held sink is opened by the test once it sees the
pipeline full.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

import aiowax
from aiowax.connectors.inproc import PushSource
from aiowax.dataflow import Dataflow
from aiowax.inputs import DynamicSource, StatelessSourcePartition
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.recovery import RecoveryConfig, init_db_dir
from aiowax.stats import FlowStats, StepStats
from aiowax.testing import TestingSink, TestingSource
from aiowax.window import EventClockConfig, SlidingWindow, TumblingWindow
from embed_helpers import WATCHDOG, GatedSink, settle
from flow_helpers import TimedSource

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _keyed_flow(out: list[Any], items: int = 1000, batch_size: int = 10) -> Dataflow:
    flow = Dataflow("counts")
    flow.input("inp", TestingSource(range(items), batch_size=batch_size))
    flow.map("key", lambda x: (f"k{x % 7}", x))
    flow.filter("odd", lambda kv: kv[1] % 2 == 1)
    flow.flat_map("twice", lambda kv: [kv, kv])
    flow.stateful_map("count", lambda: 0, lambda n, _v: (n + 1, n + 1))
    flow.output("out", TestingSink(out))
    return flow


async def _final(flow: Dataflow, **options: Any) -> FlowStats:
    seen: list[FlowStats] = []
    await aiowax.run(flow, on_stats=seen.append, **options)
    assert seen, "on_stats was never called"
    return seen[-1]


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 3])
async def test_items_in_and_out_per_step_are_the_truth(workers: int) -> None:
    out: list[Any] = []
    stats = await _final(_keyed_flow(out), workers=workers)
    assert stats.name == "counts"
    assert stats.status == "finished"
    assert stats.workers == workers
    assert stats.error is None
    expected = {
        # step: (in, out)
        "inp": (1000, 1000),
        "key": (1000, 1000),
        "odd": (1000, 500),
        "twice": (500, 1000),
        "count": (1000, 1000),
        "out": (1000, 1000),
    }
    assert {s: (stats.step(s).items_in, stats.step(s).items_out) for s in expected} == expected
    assert len(out) == 1000
    # One row per step and worker, inputs first, in flow order.
    assert [s.step_id for s in stats.steps][:: workers if workers > 1 else 1][:1] == ["inp"]
    assert {(s.step_id, s.worker_index) for s in stats.steps} == {
        (step, w) for step in expected for w in range(workers)
    } - {("inp", w) for w in range(1, workers)}
    # TestingSource is one partition, read by worker 0.
    assert stats.step("inp").partitions == 1
    assert stats.step("count").keys == 7
    assert stats.step("count").kind == "stateful_map"
    assert stats.step("key").keys is None
    assert stats.step("out").write_latency_s is not None
    for row in stats.steps:
        assert row.errors == 0
        assert row.busy_s >= 0 and row.blocked_s >= 0
        assert row.pipeline == "inp"


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("workers", [1, 2])
async def test_what_steps_emit_on_timers_and_at_the_end_counts_as_items_out(workers: int) -> None:
    # Windows and batches emit on their timers (a window closing, a batch's
    # timeout) or at the end of the input, not while taking a batch: those
    # items were not counted (3 windows emitted, items_out 0).
    out: list[Any] = []
    flow = Dataflow("timers")
    schedule = [
        (0.0, [("a", 1), ("b", 2), ("c", 3)]),  # windows [0, 10): closed by timers
        (30.0, [("a", 40)]),  # [40, 50): closed by a timer
        (50.0, [("d", 100)]),  # [100, 110): still open when the input ends
    ]
    flow.input("inp", TimedSource(schedule, end=55.0))
    flow.collect_window(
        "win",
        EventClockConfig(lambda s: T0 + timedelta(seconds=s), timedelta(0)),
        TumblingWindow(timedelta(seconds=10), T0),
    )
    flow.map("plain", lambda kv: (kv[0], kv[1][1][0]))
    # Every key's batch goes out on its 5 s timeout, but d's, at the end.
    flow.batch("batch", 10, timedelta(seconds=5))
    flow.output("out", TestingSink(out))
    stats = await _final(flow, workers=workers)
    assert sorted(out) == [("a", [1]), ("a", [40]), ("b", [2]), ("c", [3]), ("d", [100])]
    assert stats.step("win").items_in == 5
    assert stats.step("win").items_out == 5
    assert stats.step("batch").items_in == 5
    assert stats.step("batch").items_out == 5
    assert stats.step("out").items_in == 5


@pytest.mark.asyncio
async def test_the_flow_name_defaults_and_is_checked() -> None:
    stats = await _final(_unnamed())
    assert stats.name == "flow"
    with pytest.raises(TypeError, match="name must be a str"):
        Dataflow(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must not be empty"):
        Dataflow(" ")


def _unnamed() -> Dataflow:
    flow = Dataflow()
    flow.input("inp", TestingSource([1, 2]))
    flow.output("out", TestingSink([]))
    return flow


def _late_flow(window: Any, times: list[float]) -> Dataflow:
    flow = Dataflow("late")
    flow.input("inp", TestingSource([("a", T0 + timedelta(seconds=t)) for t in times]))
    clock = EventClockConfig(lambda t: t, wait_for_system_duration=timedelta(0))
    flow.collect_window("win", clock, window)
    flow.output("out", TestingSink([]))
    return flow


@pytest.mark.asyncio
async def test_late_items_of_tumbling_windows_are_counted() -> None:
    # 10 s windows: 12 closes [0, 10), so 3 is late; 25 closes [10, 20), so 11 is late.
    window = TumblingWindow(length=timedelta(seconds=10), align_to=T0)
    stats = await _final(_late_flow(window, [0, 5, 12, 3, 25, 11]))
    win = stats.step("win")
    assert win.late == 2
    assert win.items_in == 6
    assert win.kind == "collect_window"


@pytest.mark.asyncio
async def test_late_items_of_sliding_windows_count_once_per_window_missed() -> None:
    # 10 s windows every 5 s. After 11, [0, 10) has closed: 6 is still placed
    # in [5, 15) and late once; 3 belongs to [-5, 5) and [0, 10), both
    # closed: late twice.
    window = SlidingWindow(length=timedelta(seconds=10), offset=timedelta(seconds=5), align_to=T0)
    stats = await _final(_late_flow(window, [1, 11, 6, 3]))
    assert stats.step("win").late == 3


@pytest.mark.asyncio
async def test_a_window_step_reports_its_keys_watermark_and_open_windows() -> None:
    source: PushSource[Any] = PushSource()
    flow = Dataflow()
    flow.input("inp", source)
    clock = EventClockConfig(lambda t: t, wait_for_system_duration=timedelta(seconds=30))
    window = TumblingWindow(length=timedelta(hours=1), align_to=T0)
    flow.collect_window("win", clock, window)
    flow.output("out", TestingSink([]))
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow)
            newest = datetime.now(UTC)
            for key in ("a", "b", "c"):
                await source.send((key, newest - timedelta(hours=2)))
            await source.send(("a", newest))
            while handle.stats().step("win").items_in < 4:
                await settle()
            win = handle.stats().step("win")
            assert win.keys == 3
            # a's newest item moved its watermark past its first window, which
            # closed (one result); a's second window and b's and c's are open.
            assert win.items_out == 1
            assert win.windows_open == 3
            assert win.watermark is not None
            # The newest watermark: a's, 30 s behind its newest item.
            assert abs((newest - timedelta(seconds=30)) - win.watermark) < timedelta(seconds=5)
            assert win.watermark_lag_s is not None and 29 < win.watermark_lag_s < 60
            await handle.stop()


@pytest.mark.asyncio
async def test_back_pressure_shows_as_blocked_time_and_a_full_channel() -> None:
    sink = GatedSink()
    source: PushSource[int] = PushSource(max_buffer=10_000)
    flow = Dataflow()
    flow.input("inp", source)
    flow.map("work", lambda x: x + 1)
    flow.output("out", sink)
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow)
            for i in range(200):
                # One batch each: the channels fill up behind the held sink.
                await source.send(i)
                await settle()
            await sink.writing.wait()
            held = handle.stats()
            # The sink's input channel is full, so the map waits on it.
            assert held.step("out").queued == held.step("out").capacity > 0
            sink.gate.set()
            await handle.stop()
    after = handle.stats()
    assert after.status == "finished"
    assert after.step("work").blocked_s > 0
    assert after.step("out").items_out == 200
    assert after.step("out").blocked_s == 0


@pytest.mark.asyncio
async def test_counts_grow_between_two_reads_of_a_running_flow() -> None:
    source: PushSource[int] = PushSource()
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", TestingSink([]))
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow)
            assert handle.stats().status in ("starting", "running")
            await source.send(1)
            while handle.stats().step("out").items_out < 1:
                await settle()
            first = handle.stats()
            await source.send(2)
            while handle.stats().step("out").items_out < 2:
                await settle()
            second = handle.stats()
            assert first.status == second.status == "running"
            assert second.step("inp").items_in == first.step("inp").items_in + 1
            assert second.uptime_s > first.uptime_s
            await handle.stop()


@pytest.mark.asyncio
async def test_a_failure_is_in_the_final_stats_and_still_raised() -> None:
    def boom(x: int) -> int:
        if x == 3:
            raise ValueError("three")
        return x

    out: list[int] = []
    flow = Dataflow()
    flow.input("inp", TestingSource(range(10), batch_size=10))
    flow.map("boom", boom)
    flow.output("out", TestingSink(out))
    seen: list[FlowStats] = []
    with pytest.raises(ValueError, match="three"):
        await aiowax.run(flow, on_stats=seen.append)
    final = seen[-1]
    assert final.status == "failed"
    assert final.error == "ValueError: three"
    assert final.step("boom").errors == 1
    # What it made of the items before the bad one went on, and counts.
    assert out == [0, 1, 2]
    assert (final.step("boom").items_in, final.step("boom").items_out) == (10, 3)


@pytest.mark.asyncio
async def test_on_stats_may_be_async_and_is_called_while_running() -> None:
    source: PushSource[int] = PushSource()
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", TestingSink([]))
    calls: list[str] = []
    got_one = anyio.Event()

    async def on_stats(stats: FlowStats) -> None:
        calls.append(stats.status)
        got_one.set()

    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: aiowax.run(flow, on_stats=on_stats, stats_interval=0.001))
            await got_one.wait()
            source.close()
    assert calls[0] == "running"
    assert calls[-1] == "finished"


@pytest.mark.asyncio
async def test_a_plain_on_stats_runs_on_the_loop_and_run_awaits_an_async_ones_end() -> None:
    # On purpose, and said in docs/stats.md: a plain callback runs on the
    # loop's thread, like every sync user function, so it may touch the
    # loop's objects (an asyncio.Queue's put_nowait); in a worker thread
    # that would break them. So while it runs, the flow waits. The final
    # call of an async one is awaited before `run` returns.
    flow = Dataflow()
    flow.input("inp", TestingSource(range(3)))
    flow.output("out", TestingSink([]))
    loop_thread = threading.get_ident()
    queue: asyncio.Queue[str] = asyncio.Queue()
    seen: list[int] = []

    def plain(stats: FlowStats) -> None:
        seen.append(threading.get_ident())
        queue.put_nowait(stats.status)

    ended: list[str] = []

    async def slow_end(stats: FlowStats) -> None:
        if stats.status != "running":
            await anyio.sleep(0)  # a callback that awaits still gets its end
            ended.append(stats.status)

    with anyio.fail_after(WATCHDOG):
        await aiowax.run(flow, on_stats=plain)
        await aiowax.run(flow, on_stats=slow_end)
    assert seen and set(seen) == {loop_thread}
    assert queue.get_nowait() in ("running", "finished")
    assert ended == ["finished"]


@pytest.mark.asyncio
async def test_an_on_stats_that_raises_never_stops_the_flow(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source: PushSource[int] = PushSource()
    out: list[int] = []
    flow = Dataflow("watched")
    flow.input("inp", source)
    flow.output("out", TestingSink(out))
    calls: list[str] = []
    failed_thrice = anyio.Event()

    def on_stats(stats: FlowStats) -> None:
        calls.append(stats.status)
        if stats.status == "running":
            if len(calls) == 3:
                failed_thrice.set()
            raise KeyError("broken dashboard")

    with anyio.fail_after(WATCHDOG), caplog.at_level("ERROR", logger="aiowax"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: aiowax.run(flow, on_stats=on_stats, stats_interval=0.001))
            await source.send(1)
            await failed_thrice.wait()
            await source.send(2)
            source.close()
    # The run finished (no exception, no ExceptionGroup) with every item.
    assert out == [1, 2]
    assert calls[-1] == "finished"
    assert calls.count("running") >= 3
    errors = [r for r in caplog.records if "on_stats raised" in r.getMessage()]
    assert errors[0].exc_info is not None  # the first one with its traceback
    assert "'watched'" in errors[0].getMessage()
    assert all(r.exc_info is None for r in errors[1:])
    assert len(errors) == calls.count("running")


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_on_stats_raising_its_own_cancelled_error_does_not_cancel_the_flow(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A CancelledError of the callback's own (a metrics client that leaks
    # one) while nothing cancels the run: the flow was cut short, its final
    # stats said "cancelled", and aiowax.run raised CancelledError (helper-60).
    source: PushSource[int] = PushSource()
    out: list[int] = []
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", TestingSink(out))
    calls: list[str] = []
    raised = anyio.Event()

    def check(stats: FlowStats) -> None:
        calls.append(stats.status)
        if stats.status == "running":
            raised.set()
            raise asyncio.CancelledError

    async def on_async(stats: FlowStats) -> None:
        await anyio.sleep(0)
        check(stats)

    on_stats = check if kind == "sync" else on_async
    with anyio.fail_after(WATCHDOG), caplog.at_level("ERROR", logger="aiowax"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: aiowax.run(flow, on_stats=on_stats, stats_interval=0.001))
            await source.send(1)
            await raised.wait()
            await source.send(2)
            source.close()
    assert out == [1, 2]
    assert calls[-1] == "finished"
    assert "CancelledError while nothing was cancelling it" in caplog.text


@pytest.mark.asyncio
async def test_bad_on_stats_arguments_are_named() -> None:
    flow = _unnamed()
    with pytest.raises(TypeError, match="on_stats must be callable"):
        await aiowax.run(flow, on_stats=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stats_interval must be a positive"):
        await aiowax.run(flow, on_stats=print, stats_interval=0)
    with pytest.raises(TypeError, match="stats_interval must be seconds"):
        await aiowax.run(flow, on_stats=print, stats_interval="1")  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_snapshots_are_counted_with_recovery(tmp_path: Path) -> None:
    flow = Dataflow()
    flow.input("inp", TestingSource(range(30), batch_size=10))
    flow.map("key", lambda x: ("k", x))
    flow.stateful_map("sum", lambda: 0, lambda s, x: (s + x, s + x))
    flow.output("out", TestingSink([]))
    init_db_dir(tmp_path, 1)
    stats = await _final(
        flow, epoch_interval=timedelta(0), recovery_config=RecoveryConfig(str(tmp_path))
    )
    # The writer commits whatever epochs are complete at once: at least one commit.
    assert stats.snapshots >= 1
    assert stats.last_snapshot_at is not None
    assert stats.last_snapshot_s is not None and stats.last_snapshot_s >= 0
    assert stats.epoch >= 3


def test_stats_are_plain_json_and_sum_over_workers() -> None:
    rows = (
        StepStats(step_id="s", kind="map", pipeline="inp", worker_index=0, items_in=2),
        StepStats(step_id="s", kind="map", pipeline="inp", worker_index=1, items_in=3, keys=4),
    )
    stats = FlowStats(name="f", status="running", started_at=T0, steps=rows)
    total = stats.step("s")
    assert (total.items_in, total.keys, total.worker_index) == (5, 4, -1)
    with pytest.raises(KeyError, match="no step 'nope' in flow 'f'"):
        stats.step("nope")
    encoded = json.loads(json.dumps(stats.to_dict()))
    assert encoded["started_at"] == T0.isoformat()
    assert [row["items_in"] for row in encoded["steps"]] == [2, 3]


@pytest.mark.asyncio
async def test_stats_from_another_thread_are_read_on_the_flows_loop() -> None:
    source: PushSource[int] = PushSource()
    flow = Dataflow("threaded")
    flow.input("inp", source)
    flow.output("out", TestingSink([]))
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow)
            await source.send(1)
            while handle.stats().step("out").items_out < 1:
                await settle()
            # A metrics exporter's thread: the read hops to the loop.
            stats = await anyio.to_thread.run_sync(handle.stats)
            assert stats.name == "threaded"
            assert stats.step("out").items_out == 1
            await handle.stop()


@pytest.mark.asyncio
async def test_busy_time_stands_still_while_a_step_waits_for_input() -> None:
    source: PushSource[int] = PushSource()
    flow = Dataflow()
    flow.input("inp", source)
    flow.map("work", lambda x: x)
    flow.output("out", TestingSink([]))
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow)
            await source.send(1)
            while handle.stats().step("out").items_out < 1:
                await settle()
            await settle()  # every step is waiting for input now
            before = handle.stats().step("work").busy_s
            for _ in range(5):
                await anyio.sleep(0.01)  # wall time passes; the map waits
                assert handle.stats().step("work").busy_s == pytest.approx(before, abs=1e-3)
            await handle.stop()


class _SleepyPartition(StatelessSourcePartition[int]):
    """One item, then asleep for an hour (``next_awake``): a sync source waiting."""

    def __init__(self) -> None:
        self.given = False

    def next_batch(self, sched: Any) -> list[int]:
        if self.given:
            return []
        self.given = True
        return [1]

    def next_awake(self) -> datetime | None:
        return datetime.now(UTC) + timedelta(hours=1) if self.given else None


class _SleepySource(DynamicSource[int]):
    def build(self, now: datetime, worker_index: int, worker_count: int) -> _SleepyPartition:
        return _SleepyPartition()


@pytest.mark.parametrize("waits", ["async read", "asleep"])
@pytest.mark.asyncio
async def test_an_input_waiting_for_its_source_is_not_busy(waits: str) -> None:
    # An idle PushSource (awaiting its async read) reported busy_s equal to
    # the run's wall time, and so did a source asleep until its next_awake.
    push: PushSource[int] = PushSource()
    flow = Dataflow()
    flow.input("inp", push if waits == "async read" else _SleepySource())
    flow.output("out", TestingSink([]))
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow)
            if waits == "async read":
                await push.send(1)
            while handle.stats().step("out").items_out < 1:
                await settle()
            await settle()
            before = handle.stats().step("inp").busy_s
            for _ in range(5):
                await anyio.sleep(0.01)  # wall time passes; the input waits
                assert handle.stats().step("inp").busy_s == pytest.approx(before, abs=2e-3)
            stats = handle.stats()
            await handle.stop()
    assert stats.step("inp").busy_s < stats.uptime_s / 2


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_the_watermark_lag_of_an_ended_run_is_as_of_its_end() -> None:
    source: PushSource[Any] = PushSource()
    flow = Dataflow()
    flow.input("inp", source)
    clock = EventClockConfig(lambda t: t, wait_for_system_duration=timedelta(0))
    flow.collect_window("win", clock, TumblingWindow(timedelta(hours=1), align_to=T0))
    flow.output("out", TestingSink([]))
    async with anyio.create_task_group() as tg:
        handle = await aiowax.start_flow(tg, flow)
        await source.send(("a", datetime.now(UTC)))
        while handle.stats().step("win").items_in < 1:
            await settle()
        await handle.stop()
    ended = handle.stats().step("win").watermark_lag_s
    await anyio.sleep(3600)  # an hour later (virtual time), nothing moved
    assert handle.stats().step("win").watermark_lag_s == ended


@pytest.mark.asyncio
async def test_an_input_that_ended_is_not_busy_while_the_run_goes_on() -> None:
    # busy_s was measured over the whole run: an input that ended at once
    # read as busy for as long as another input kept the run going.
    live: PushSource[int] = PushSource()
    flow = Dataflow()
    flow.input("done", TestingSource([1]))
    flow.output("out_done", TestingSink([]))
    flow.input("live", live)
    flow.output("out_live", TestingSink([]))
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow)
            while handle.stats().step("out_done").items_out < 1:
                await settle()
            await settle()
            before = handle.stats().step("done").busy_s
            for _ in range(5):
                await anyio.sleep(0.01)  # wall time passes; "done" has ended
                assert handle.stats().step("done").busy_s == pytest.approx(before, abs=1e-3)
            stats = handle.stats()
            await handle.stop()
    assert stats.step("done").busy_s < stats.uptime_s / 2


@pytest.mark.parametrize("source", ["sync", "push"])
@pytest.mark.asyncio
async def test_an_input_is_not_charged_with_the_time_of_the_steps_after_it(source: str) -> None:
    # Between two reads the lane lets the steps after it run; that time was
    # counted as the input's busy time: an input doing nothing read as busy
    # as the map doing all the work (busy summed over the steps was twice
    # the run's wall time).
    def work(x: int) -> int:
        time.sleep(0.005)  # the work, measured: 20 x 5 ms
        return x

    push: PushSource[int] = PushSource()
    flow = Dataflow()
    flow.input("inp", TestingSource(range(20)) if source == "sync" else push)
    flow.map("work", work)
    flow.output("out", TestingSink([]))
    with anyio.fail_after(WATCHDOG):
        async with aiowax.open_flow(flow) as handle:
            if source == "push":
                for i in range(20):
                    await push.send(i)
                push.close()
            await handle.wait()
    stats = handle.stats()
    assert stats.step("work").busy_s >= 0.1
    assert stats.step("inp").busy_s < stats.step("work").busy_s / 4


class _FailingPartition(StatelessSourcePartition[int]):
    """1, 2, 3, then raises."""

    def __init__(self) -> None:
        self.i = 0

    def next_batch(self, sched: Any) -> list[int]:
        self.i += 1
        if self.i > 3:
            raise ValueError("source boom")
        return [self.i]


class _FailingSource(DynamicSource[int]):
    def build(self, now: datetime, worker_index: int, worker_count: int) -> _FailingPartition:
        return _FailingPartition()


class _CloseFails(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        pass

    def close(self) -> None:
        raise ValueError("close boom")


class _CloseFailsSink(DynamicSink[Any]):
    def build(self, worker_index: int, worker_count: int) -> _CloseFails:
        return _CloseFails()


async def _final_stats(flow: Dataflow, workers: int = 1) -> FlowStats:
    seen: list[FlowStats] = []
    with pytest.raises((ValueError, TypeError)), anyio.fail_after(WATCHDOG):
        await aiowax.run(flow, workers=workers, on_stats=seen.append, stats_interval=3600)
    return seen[-1]


@pytest.mark.asyncio
async def test_a_failing_source_counts_its_error_and_what_it_read() -> None:
    # An input's errors were never counted, and the items read before its
    # failure (which go downstream) were not counted as read: inp in=0 while
    # the map after it had 3.
    flow = Dataflow()
    flow.input("inp", _FailingSource())
    flow.map("m", lambda x: x)
    flow.output("out", TestingSink([]))
    stats = await _final_stats(flow)
    assert (stats.step("inp").items_out, stats.step("inp").errors) == (3, 1)
    assert (stats.step("m").items_in, stats.step("m").errors) == (3, 0)


@pytest.mark.asyncio
async def test_a_sink_failing_to_close_counts_an_error() -> None:
    flow = Dataflow()
    flow.input("inp", TestingSource(range(3)))
    flow.output("out", _CloseFailsSink())
    stats = await _final_stats(flow)
    assert stats.step("out").errors == 1


@pytest.mark.asyncio
async def test_an_item_refused_on_its_way_to_a_keyed_step_is_that_steps_error() -> None:
    # With workers, the (key, value) check runs in the exchange, in the task
    # of the step before: the error was counted on that step, and all its
    # output as passed on, though the items after the bad one never were.
    flow = Dataflow()
    flow.input("inp", TestingSource([("a", 1), ("b", 2), 3, ("c", 4)]))
    flow.map("m", lambda x: x)
    flow.stateful_map("sm", lambda: 0, lambda s, v: (s + v, s + v))
    flow.output("out", TestingSink([]))
    stats = await _final_stats(flow, workers=2)
    assert (stats.step("m").errors, stats.step("m").items_out) == (0, 2)
    assert (stats.step("sm").errors, stats.step("sm").items_in) == (1, 2)


@pytest.mark.asyncio
async def test_a_run_ended_by_abort_execution_reports_cancelled() -> None:
    # TestingSource.ABORT() (or AbortExecution from user code) ends a run as
    # a crash would, and run() returns as Bytewax's does; its stats and its
    # handle said "finished" though items were never processed.
    def aborting() -> Dataflow:
        # A new source each time: ABORT fires on a source's first run only.
        flow = Dataflow()
        flow.input("inp", TestingSource([1, 2, TestingSource.ABORT(), 3]))
        flow.output("out", TestingSink([]))
        return flow

    seen: list[FlowStats] = []
    with anyio.fail_after(WATCHDOG):
        await aiowax.run(aborting(), on_stats=seen.append, stats_interval=3600)
        async with aiowax.open_flow(aborting()) as handle:
            await handle.wait()
    assert seen[-1].status == "cancelled"
    assert handle.status is aiowax.FlowStatus.CANCELLED
    assert handle.stats().status == "cancelled"


@pytest.mark.asyncio
async def test_a_finished_handle_keeps_the_final_figures_and_lets_go_of_the_run() -> None:
    # A handle outlives its run (a job list, a metrics source, the live
    # page); it held the run, and every step's state with it (about 160
    # bytes a key of a stateful_map, for as long as the handle lived).
    import gc
    import weakref

    from observing import observe_runs

    keys = 2_000
    flow = Dataflow(name="jobs")
    flow.input("inp", TestingSource([(f"k{i}", 1) for i in range(keys)]))
    flow.stateful_map("count", lambda: 0, lambda n, one: (n + one, n + one))
    flow.output("out", TestingSink([]))
    runs: list[weakref.ref[Any]] = []
    with observe_runs(lambda ctx: runs.append(weakref.ref(ctx))) as seen:
        with anyio.fail_after(WATCHDOG):
            async with anyio.create_task_group() as tg:
                handle = await aiowax.start_flow(tg, flow)
                await handle.wait()
        seen.clear()
    final = handle.stats()
    assert final.status == "finished"
    assert final.step("count").keys == keys
    assert final.step("out").items_out == keys
    assert handle.stats() == final
    gc.collect()
    assert [run() for run in runs] == [None]

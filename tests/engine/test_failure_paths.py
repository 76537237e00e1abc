"""Failure paths found in review: the user's error always wins, nothing is dropped.

Each test is a scenario where an earlier version of the engine lost output,
hung, or let an internal exception (or an ExceptionGroup) reach the caller.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest

import aiowax
from aiowax._engine.channels import EpochBarrier
from aiowax._engine.usercode import call_ordered
from aiowax.dataflow import Dataflow
from aiowax.inputs import (
    DynamicSource,
    FixedPartitionedSource,
    StatefulSourcePartition,
    StatelessSourcePartition,
)
from aiowax.outputs import DynamicSink, FixedPartitionedSink, StatelessSinkPartition
from aiowax.testing import TestingSink, TestingSource
from aiowax.window import EventClockConfig, TumblingWindow

VIRTUAL = pytest.mark.asyncio(loop_factories=["virtual"])


async def _run(flow: Dataflow, **kwargs: Any) -> None:
    with anyio.fail_after(3600):  # virtual seconds on the virtual loop
        await aiowax.run(flow, **kwargs)


@pytest.mark.asyncio
async def test_bad_item_in_partial_output_does_not_mask_the_users_error() -> None:
    def mapper(x: int) -> str:
        if x == 2:
            raise ValueError("boom")
        return "not a pair"  # what the keyed step after it will refuse

    flow = Dataflow()
    flow.input("inp", TestingSource([1, 2], batch_size=2))
    flow.map("m", mapper)
    flow.stateful_map("sm", lambda: 0, lambda s, v: (s, v))
    flow.output("out", TestingSink([]))
    with pytest.raises(ValueError, match="boom") as raised:
        await _run(flow, workers=2)
    assert raised.value.__notes__ == ["raised in step 'm' by the map mapper"]


class _QuietAfterFirst(StatelessSourcePartition[int]):
    def __init__(self) -> None:
        self.reads = 0

    async def next_batch(self, sched: datetime | None) -> list[int]:
        self.reads += 1
        if self.reads == 1:
            return [1]
        await asyncio.sleep(10)
        return []


class _QuietSource(DynamicSource[int]):
    def build(self, now: datetime, worker_index: int, worker_count: int) -> _QuietAfterFirst:
        return _QuietAfterFirst()


class _SlowClosePartition(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        pass

    async def close(self) -> None:
        await asyncio.sleep(0.3)


class _SlowCloseSink(DynamicSink[Any]):
    def build(self, worker_index: int, worker_count: int) -> _SlowClosePartition:
        return _SlowClosePartition()


@VIRTUAL
async def test_epoch_watcher_does_not_mask_the_users_error() -> None:
    # The async source's watcher keeps closing epochs while its read waits;
    # once the failed step is gone it must stop quietly, not win the race.
    def bad(x: int) -> int:
        raise ValueError("user boom")

    flow = Dataflow()
    flow.input("inp", _QuietSource())
    flow.map("m", bad)
    flow.output("out", _SlowCloseSink())
    with pytest.raises(ValueError, match="user boom"):
        await _run(flow, epoch_interval=timedelta(milliseconds=10))


class _ListPartition(StatefulSourcePartition[Any, None]):
    def __init__(self, batches: list[list[Any]]) -> None:
        self.batches = list(batches)

    def next_batch(self, sched: datetime | None) -> list[Any]:
        if not self.batches:
            raise StopIteration
        return self.batches.pop(0)

    def snapshot(self) -> None:
        return None


class _ClosingFails(StatelessSourcePartition[int]):
    def __init__(self) -> None:
        self.items = list(range(20))

    def next_batch(self, sched: datetime | None) -> list[int]:
        if not self.items:
            raise StopIteration
        return [self.items.pop(0)]

    def close(self) -> None:
        raise OSError("close failed")


class _ClosingFailsSource(DynamicSource[int]):
    def build(self, now: datetime, worker_index: int, worker_count: int) -> _ClosingFails:
        return _ClosingFails()


@VIRTUAL
async def test_a_close_error_lets_what_is_in_flight_reach_the_sink() -> None:
    async def slow(x: int) -> int:
        await asyncio.sleep(0.01)
        return x

    out: list[int] = []
    flow = Dataflow()
    flow.input("inp", _ClosingFailsSource())
    flow.map("slow", slow)
    flow.output("out", TestingSink(out))
    with pytest.raises(OSError, match="close failed") as raised:
        await _run(flow)
    assert raised.value.__notes__ == ["raised in step 'inp' by the input close"]
    assert out == list(range(20))


@pytest.mark.asyncio
async def test_a_cancelled_barrier_waiter_no_longer_counts_as_arrived() -> None:
    barrier = EpochBarrier(3)
    passed: list[str] = []
    scope = anyio.CancelScope()

    async def first() -> None:
        with scope:
            await barrier.wait()

    async def second() -> None:
        await barrier.wait()
        passed.append("second")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            barrier.leave()  # the first lane ends
            tg.start_soon(second)
            await anyio.wait_all_tasks_blocked()
            assert passed == []  # the third lane has not arrived yet
            tg.cancel_scope.cancel()


async def _stray_cancel(x: int) -> int:
    if x == 2:
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        await future  # a library's cancelled future, not ours
    return x


@pytest.mark.asyncio
@pytest.mark.parametrize("batch_size", [1, 3])
async def test_a_stray_cancelled_error_in_user_code_is_an_error(batch_size: int) -> None:
    out: list[int] = []
    flow = Dataflow()
    flow.input("inp", TestingSource([1, 2, 3], batch_size=batch_size))
    flow.map("m", _stray_cancel)
    flow.output("out", TestingSink(out))
    with pytest.raises(RuntimeError, match="CancelledError") as raised:
        await _run(flow, epoch_interval=timedelta(0))
    assert raised.value.__notes__ == ["raised in step 'm' by the map mapper"]
    assert out == [1]


@pytest.mark.asyncio
async def test_call_ordered_reports_a_stray_cancelled_error() -> None:
    from aiowax._engine.errors import StepFailed

    with pytest.raises(StepFailed) as raised:
        await call_ordered(_stray_cancel, [1, 2, 3])
    assert raised.value.partial == [1]
    assert isinstance(raised.value.error, RuntimeError)


class _UnlistableSink(FixedPartitionedSink[Any, None]):
    def list_parts(self) -> list[str]:
        raise OSError("cannot list")

    def build_part(self, for_part: str, resume_state: None) -> Any:
        raise AssertionError("never built")


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 2])
async def test_list_parts_errors_carry_a_note_with_any_worker_count(workers: int) -> None:
    flow = Dataflow()
    flow.input("inp", TestingSource([("a", 1)]))
    flow.output("out", _UnlistableSink())
    with pytest.raises(OSError, match="cannot list") as raised:
        await _run(flow, workers=workers)
    assert raised.value.__notes__ == ["raised in step 'out' by the output list_parts"]


class _CountedParts(FixedPartitionedSource[Any, None]):
    def __init__(self) -> None:
        self.listed = 0

    def list_parts(self) -> list[str]:
        self.listed += 1
        return ["p0", "p1", "p2"]

    def build_part(self, now: datetime, for_part: str, resume_state: None) -> _ListPartition:
        return _ListPartition([[for_part]])


@pytest.mark.asyncio
async def test_a_source_is_listed_once_per_run() -> None:
    source = _CountedParts()
    out: list[str] = []
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", TestingSink(out))
    await _run(flow, workers=3)
    assert source.listed == 1
    assert sorted(out) == ["p0", "p1", "p2"]


@pytest.mark.asyncio
async def test_a_later_window_deadline_adds_no_heap_entry() -> None:
    # The watermark moves every batch; on a real loop float noise makes the
    # key's deadline a hair later each time. Only an earlier deadline needs
    # a new timer entry: the one already there comes due and reschedules.
    from aiowax._engine.clock import current_clock
    from aiowax._engine.kinds import kind_of
    from aiowax._engine.ops.base import StepEnv
    from aiowax._engine.ops.windows.kinds import CollectWindowOp
    from aiowax._engine.ops.windows.state import KeyState

    start = datetime.fromisoformat("2024-01-01T00:00:00+00:00")
    flow = Dataflow()
    flow.collect_window(
        "w",
        EventClockConfig(lambda v: v, timedelta(0)),
        TumblingWindow(timedelta(hours=1), start),
    )
    step = flow.steps[0]
    op = CollectWindowOp(step, StepEnv(kind_of(step), 0, 1, current_clock()))  # type: ignore[arg-type]
    state = op.keys["k"] = KeyState(0, 0.0)
    state.windows[0] = [(0, "x")]
    for i in range(1000):
        state.wm_loop = i * 1e-9
        op._reschedule({"k"}, 0.0)
    assert len(op.heap) == 1


def test_an_async_on_late_hook_is_refused_at_once() -> None:
    async def hook(*_: Any) -> None:
        pass

    with pytest.raises(TypeError, match="on_late must be a plain function"):
        EventClockConfig(lambda v: v, timedelta(0), on_late=hook)


class _Paced(StatefulSourcePartition[Any, int]):
    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.i = 0

    async def next_batch(self, sched: datetime | None) -> list[Any]:
        await asyncio.sleep(0.01)
        if self.i >= len(self.items):
            raise StopAsyncIteration
        self.i += 1
        return [self.items[self.i - 1]]

    def snapshot(self) -> int:
        return self.i


class _PacedSource(FixedPartitionedSource[Any, int]):
    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def list_parts(self) -> list[str]:
        return ["p"]

    def build_part(self, now: datetime, for_part: str, resume_state: int | None) -> _Paced:
        return _Paced(self.items)


class _SlowOnWorkerZero(StatelessSinkPartition[Any]):
    def __init__(self, worker: int, written: list[Any]) -> None:
        self.worker = worker
        self.written = written

    async def write_batch(self, items: list[Any]) -> None:
        await asyncio.sleep(0.5 if self.worker == 0 else 0)
        self.written.extend(items)


class _SlowSink(DynamicSink[Any]):
    def __init__(self, written: list[Any]) -> None:
        self.written = written

    def build(self, worker_index: int, worker_count: int) -> _SlowOnWorkerZero:
        return _SlowOnWorkerZero(worker_index, self.written)


@VIRTUAL
async def test_output_before_a_failure_is_written_while_other_workers_stop() -> None:
    # Worker 0's keyed step fails while its sink is still writing an earlier
    # item; worker 1's senders stop at once. Worker 0's tail must still get
    # to write what came before the failure.
    from aiowax._keys import key_owner

    k0 = next(f"k{i}" for i in range(100) if key_owner(f"k{i}", 2) == 0)
    k1 = next(f"k{i}" for i in range(100) if key_owner(f"k{i}", 2) == 1)
    items = [(k0, 1), (k0, -2)] + [(k1, i) for i in range(20)]

    def mapper(state: int, v: int) -> tuple[int, int]:
        if v == -2:
            raise ValueError("boom")
        return state, v

    written: list[Any] = []
    flow = Dataflow()
    flow.input("inp", _PacedSource(items))
    flow.stateful_map("sm", lambda: 0, mapper)
    flow.output("out", _SlowSink(written))
    with pytest.raises(ValueError, match="boom"):
        await _run(flow, workers=2)
    assert (k0, 1) in written


class _IterRaises:
    def __iter__(self) -> Any:
        raise KeyError("iterated")


@pytest.mark.asyncio
async def test_a_window_step_refuses_a_non_tuple_without_iterating_it() -> None:
    start = datetime.fromisoformat("2024-01-01T00:00:00+00:00")
    flow = Dataflow()
    flow.input("inp", TestingSource([_IterRaises()]))
    flow.collect_window(
        "win",
        EventClockConfig(lambda v: v, timedelta(0)),
        TumblingWindow(timedelta(seconds=1), start),
    )
    flow.output("out", TestingSink([]))
    with pytest.raises(TypeError, match="step 'win' needs"):
        await _run(flow)


def test_run_main_leaves_an_applications_gc_freeze_alone() -> None:
    import gc

    from aiowax.testing import run_main

    flow = Dataflow()
    flow.input("inp", TestingSource([1]))
    flow.output("out", TestingSink([]))
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        run_main(flow)
        assert gc.get_freeze_count() >= frozen > 0
    finally:
        gc.unfreeze()
    run_main(flow)
    assert gc.get_freeze_count() == 0  # its own freeze is undone

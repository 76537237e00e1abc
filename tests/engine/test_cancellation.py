"""Cancelling ``await aiowax.run(flow)`` stops the flow at once and closes everything.

Each scenario reaches a known state first (the source has been called, a
call is in flight), then cancels inside a 100 ms ``fail_after`` watchdog that
also covers the run's completion; nothing sleeps to wait for behaviour.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import aiowax
from aiowax.dataflow import Dataflow
from aiowax.inputs import DynamicSource, FixedPartitionedSource, StatefulSourcePartition
from aiowax.inputs import StatelessSourcePartition as _StatelessPart
from aiowax.outputs import DynamicSink, StatelessSinkPartition

#: Seconds of real time from the cancel to the run's end. A cancel takes
#: 0.3 ms (p50) to 2 ms (p99) here, 14-21 ms at most in 300 (a standalone
#: script, Python 3.12, asyncio); 0.1 s was passed once inside a full suite
#: run, whose process holds a large heap (a full GC pass, a busy machine).
#: 1 s still fails a cancel that waits on anything (a shielded close with a
#: timeout, a task ignoring the cancellation), with room for such pauses.
CANCEL_DEADLINE = 1.0
WATCHDOG = 5


class _Part(_StatelessPart[Any]):
    def __init__(self, owner: ForeverSource) -> None:
        self.owner = owner

    async def next_batch(self, sched: datetime | None) -> list[Any]:
        owner = self.owner
        owner.calls += 1
        if owner.mode == "idle":
            owner.started.set()
            await anyio.Event().wait()  # never fires
        if owner.mode == "tick":
            await anyio.sleep(1)
        else:
            await anyio.sleep(0)
        if owner.calls >= 3:
            owner.started.set()
        return [owner.calls]

    def close(self) -> None:
        self.owner.closed += 1


class ForeverSource(DynamicSource[Any]):
    """An async source that never ends.

    ``idle``: ``next_batch`` awaits an event that never fires. ``busy``: it
    yields an item per call forever, with ``await anyio.sleep(0)``. ``tick``:
    one item per second of loop time.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.started = anyio.Event()
        self.calls = 0
        self.built = 0
        self.closed = 0

    def build(self, now: datetime, worker_index: int, worker_count: int) -> _Part:
        self.built += 1
        return _Part(self)


class _SyncForeverPart(StatefulSourcePartition[int, int]):
    def __init__(self, owner: SyncForeverSource) -> None:
        self.owner = owner
        self.n = 0

    def next_batch(self, sched: datetime | None) -> list[int]:
        self.n += 1
        if self.n >= 3:
            self.owner.started.set()
        return [self.n] if self.owner.busy else []

    def snapshot(self) -> int:
        return self.n

    def close(self) -> None:
        self.owner.closed += 1


class SyncForeverSource(FixedPartitionedSource[int, int]):
    """A sync source that never ends: busy (an item per call) or idle (``[]``)."""

    def __init__(self, busy: bool) -> None:
        self.busy = busy
        self.started = anyio.Event()
        self.built = 0
        self.closed = 0

    def list_parts(self) -> list[str]:
        return ["p"]

    def build_part(self, now: datetime, for_part: str, resume_state: int | None) -> Any:
        self.built += 1
        return _SyncForeverPart(self)


class _SinkPart(StatelessSinkPartition[Any]):
    def __init__(self, owner: Sink) -> None:
        self.owner = owner

    async def write_batch(self, items: list[Any]) -> None:
        self.owner.items.extend(items)
        self.owner.writing.set()
        if self.owner.block:
            await anyio.Event().wait()  # a write that never completes
        await anyio.lowlevel.checkpoint()

    async def close(self) -> None:  # type: ignore[override]
        await anyio.lowlevel.checkpoint()
        self.owner.closed += 1


class Sink(DynamicSink[Any]):
    def __init__(self, *, block: bool = False) -> None:
        self.block = block
        self.items: list[Any] = []
        self.writing = anyio.Event()
        self.built = 0
        self.closed = 0

    def build(self, worker_index: int, worker_count: int) -> _SinkPart:
        self.built += 1
        return _SinkPart(self)


def _flow(source: Any, sink: Sink, *, mapper: Any = None) -> Dataflow:
    flow = Dataflow()
    flow.input("inp", source)
    flow.map("m", mapper or (lambda x: x))
    flow.output("out", sink)
    return flow


def _sources() -> dict[str, Any]:
    return {
        "async-idle": lambda: ForeverSource("idle"),
        "async-busy": lambda: ForeverSource("busy"),
        "sync-busy": lambda: SyncForeverSource(busy=True),
        "sync-idle": lambda: SyncForeverSource(busy=False),
    }


SOURCES = list(_sources())


def _other_tasks(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t not in before and not t.done()}


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", SOURCES)
async def test_cancel_awaiting_task(kind: str) -> None:
    source = _sources()[kind]()
    sink = Sink()
    before = asyncio.all_tasks()
    task = asyncio.ensure_future(aiowax.run(_flow(source, sink)))
    with anyio.fail_after(WATCHDOG):
        await source.started.wait()
    with anyio.fail_after(CANCEL_DEADLINE):
        task.cancel()
        await asyncio.wait([task])
    assert task.cancelled()
    assert (source.built, source.closed) == (1, 1)
    assert (sink.built, sink.closed) == (1, 1)
    assert _other_tasks(before) == set()


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", SOURCES)
async def test_cancel_scope_around_run(kind: str) -> None:
    source = _sources()[kind]()
    sink = Sink()
    done = anyio.Event()
    scope = anyio.CancelScope()

    async def runner() -> None:
        with scope:
            await aiowax.run(_flow(source, sink))
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(runner)
        with anyio.fail_after(WATCHDOG):
            await source.started.wait()
        with anyio.fail_after(CANCEL_DEADLINE):
            scope.cancel()
            await done.wait()
    assert scope.cancelled_caught
    assert (source.built, source.closed) == (1, 1)
    assert (sink.built, sink.closed) == (1, 1)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["async-idle", "async-busy"])
async def test_cancel_outer_task_group(kind: str) -> None:
    source = _sources()[kind]()
    sink = Sink()
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(aiowax.run, _flow(source, sink))
            await source.started.wait()
            cancelled_at = anyio.current_time()
            tg.cancel_scope.cancel()
        assert anyio.current_time() - cancelled_at < CANCEL_DEADLINE
    assert (source.built, source.closed) == (1, 1)
    assert (sink.built, sink.closed) == (1, 1)


@pytest.mark.asyncio
async def test_sibling_failure_in_outer_task_group_stops_the_run() -> None:
    source = ForeverSource("busy")
    sink = Sink()

    async def sibling() -> None:
        await source.started.wait()
        raise RuntimeError("sibling failed")

    with anyio.fail_after(WATCHDOG), pytest.raises(ExceptionGroup) as info:
        async with anyio.create_task_group() as tg:
            tg.start_soon(aiowax.run, _flow(source, sink))
            tg.start_soon(sibling)
    # The user's own task group reports the sibling's error, and only it.
    assert [type(e) for e in info.value.exceptions] == [RuntimeError]
    assert (source.built, source.closed) == (1, 1)
    assert (sink.built, sink.closed) == (1, 1)


@pytest.mark.asyncio
async def test_cancel_while_async_mapper_in_flight() -> None:
    source = ForeverSource("busy")
    sink = Sink()
    in_flight = anyio.Event()
    finished: list[Any] = []

    async def mapper(x: int) -> int:
        in_flight.set()
        await anyio.Event().wait()  # never returns
        finished.append(x)
        return x

    task = asyncio.ensure_future(aiowax.run(_flow(source, sink, mapper=mapper)))
    with anyio.fail_after(WATCHDOG):
        await in_flight.wait()
    with anyio.fail_after(CANCEL_DEADLINE):
        task.cancel()
        await asyncio.wait([task])
    assert task.cancelled()
    assert finished == []
    assert sink.items == []
    assert (source.closed, sink.closed) == (1, 1)


@pytest.mark.asyncio
async def test_cancel_while_write_batch_blocked() -> None:
    source = ForeverSource("busy")
    sink = Sink(block=True)
    task = asyncio.ensure_future(aiowax.run(_flow(source, sink)))
    with anyio.fail_after(WATCHDOG):
        await sink.writing.wait()
    with anyio.fail_after(CANCEL_DEADLINE):
        task.cancel()
        await asyncio.wait([task])
    assert task.cancelled()
    assert sink.items[:1] == [1]
    assert (source.closed, sink.closed) == (1, 1)


@pytest.mark.asyncio
async def test_cancel_with_three_workers_closes_every_partition() -> None:
    source = ForeverSource("idle")
    sink = Sink()
    task = asyncio.ensure_future(aiowax.run(_flow(source, sink), workers=3))
    with anyio.fail_after(WATCHDOG):
        while source.calls < 3:
            await anyio.lowlevel.checkpoint()
    with anyio.fail_after(CANCEL_DEADLINE):
        task.cancel()
        await asyncio.wait([task])
    assert task.cancelled()
    assert (source.built, source.closed) == (3, 3)
    assert (sink.built, sink.closed) == (3, 3)


@pytest.mark.asyncio
async def test_cancel_two_pipelines() -> None:
    first, second = ForeverSource("idle"), ForeverSource("busy")
    first_sink, second_sink = Sink(), Sink()
    flow = Dataflow()
    flow.input("a", first)
    flow.output("a_out", first_sink)
    flow.input("b", second)
    flow.map("b_map", lambda x: x + 1)
    flow.output("b_out", second_sink)
    task = asyncio.ensure_future(aiowax.run(flow))
    with anyio.fail_after(WATCHDOG):
        await first.started.wait()
        await second.started.wait()
    with anyio.fail_after(CANCEL_DEADLINE):
        task.cancel()
        await asyncio.wait([task])
    assert task.cancelled()
    for thing in (first, second, first_sink, second_sink):
        assert (thing.built, thing.closed) == (1, 1)


# -- move_on_after / fail_after around run, on the virtual clock -----------------


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_move_on_after_around_run_idle_source() -> None:
    source = ForeverSource("idle")
    sink = Sink()
    start = anyio.current_time()
    with anyio.move_on_after(3600) as scope:
        await aiowax.run(_flow(source, sink))
    assert scope.cancelled_caught
    assert anyio.current_time() - start == pytest.approx(3600, abs=1e-6)
    assert sink.items == []
    assert (source.built, source.closed) == (1, 1)
    assert (sink.built, sink.closed) == (1, 1)


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_move_on_after_around_run_ticking_source() -> None:
    source = ForeverSource("tick")
    sink = Sink()
    start = anyio.current_time()
    with anyio.move_on_after(5.5) as scope:
        await aiowax.run(_flow(source, sink))
    assert scope.cancelled_caught
    assert anyio.current_time() - start == pytest.approx(5.5, abs=1e-6)
    # One item per second of loop time: 1..5 were emitted and written.
    assert sink.items == [1, 2, 3, 4, 5]
    assert (source.closed, sink.closed) == (1, 1)


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_fail_after_around_run_raises_timeout() -> None:
    source = SyncForeverSource(busy=False)
    sink = Sink()
    with pytest.raises(TimeoutError), anyio.fail_after(30):
        await aiowax.run(_flow(source, sink))
    assert (source.closed, sink.closed) == (1, 1)

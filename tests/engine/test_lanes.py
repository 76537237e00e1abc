"""Source lanes (`aiowax._engine.lanes`): partitions on workers, timing, epochs.

One lane per source partition calls ``next_batch``, honours ``next_awake``
on loop time, backs off while its partition is idle, ends on
``StopIteration``, and closes epochs on time, even while a read is in flight
or another partition sleeps. Timing tests run on the virtual clock loop.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import threading
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import aiowax
from aiowax._engine.lanes import BACKOFF_MAX, BACKOFF_MIN, COALESCE_ITEMS, COALESCE_SECONDS
from aiowax.dataflow import Dataflow
from aiowax.inputs import (
    DynamicSource,
    FixedPartitionedSource,
    SimplePollingSource,
    StatefulSourcePartition,
    StatelessSourcePartition,
)
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.testing import TestingSink, TestingSource, run_main
from flow_helpers import (
    VIRTUAL_WATCHDOG,
    PartsSource,
    TimedSource,
    record_times,
    run,
    run_clock,
    simple_flow,
)

# -- fixed partitions ------------------------------------------------------------------


def _parts(count: int, size: int) -> dict[str, list[str]]:
    return {f"part{i}": [f"{i}:{j}" for j in range(size)] for i in range(count)}


@pytest.mark.asyncio
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("workers", [1, 2, 3])
async def test_fixed_partitioned_source_every_partition_once(workers: int, is_async: bool) -> None:
    parts = _parts(5, 7)
    source = PartsSource(parts, batch_size=3, is_async=is_async)
    out: list[str] = []
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", TestingSink(out))
    await run(flow, workers=workers)
    assert Counter(out) == Counter(x for items in parts.values() for x in items)
    # Items of one partition keep their order.
    for name, items in parts.items():
        prefix = name.removeprefix("part") + ":"
        assert [x for x in out if x.startswith(prefix)] == items
    assert sorted(name for _, name, _ in source.built) == sorted(parts)
    assert all(state is None for _, _, state in source.built)
    assert all(
        now.tzinfo is not None and now.utcoffset() == timedelta(0) for now, _, _ in source.built
    )
    assert sorted(source.closed) == sorted(parts)


@pytest.mark.asyncio
async def test_fixed_partitioned_source_more_workers_than_partitions() -> None:
    parts = _parts(2, 3)
    source = PartsSource(parts)
    out: list[str] = []
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", TestingSink(out))
    await run(flow, workers=4)
    assert sorted(out) == sorted(x for items in parts.values() for x in items)
    assert sorted(source.closed) == ["part0", "part1"]


@pytest.mark.asyncio
async def test_fixed_partitioned_source_with_no_partitions() -> None:
    source = PartsSource({})
    out: list[str] = []
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", TestingSink(out))
    await run(flow)
    assert out == []


class _ListPartition(StatefulSourcePartition[Any, None]):
    def __init__(self, batches: list[list[Any]]) -> None:
        self.batches = list(batches)

    def next_batch(self, sched: datetime | None) -> list[Any]:
        if not self.batches:
            raise StopIteration
        return self.batches.pop(0)

    def snapshot(self) -> None:
        return None


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
    await run(flow, workers=3)
    assert source.listed == 1
    assert sorted(out) == ["p0", "p1", "p2"]


# -- dynamic sources and sinks ---------------------------------------------------------


class _DynPart(StatelessSourcePartition[str]):
    def __init__(self, owner: PerWorkerSource, worker_index: int) -> None:
        self.owner = owner
        self.worker_index = worker_index
        self.n = 0

    async def next_batch(self, sched: datetime | None) -> list[str]:
        await anyio.lowlevel.checkpoint()
        self.n += 1
        if self.n > 3:
            raise StopAsyncIteration
        return [f"w{self.worker_index}-{self.n}"]

    async def close(self) -> None:  # type: ignore[override]
        await anyio.lowlevel.checkpoint()
        self.owner.closed.append(self.worker_index)


class PerWorkerSource(DynamicSource[str]):
    def __init__(self) -> None:
        self.built: list[tuple[int, int]] = []
        self.closed: list[int] = []

    def build(self, now: datetime, worker_index: int, worker_count: int) -> _DynPart:
        assert now.tzinfo is not None
        self.built.append((worker_index, worker_count))
        return _DynPart(self, worker_index)


class _RecSinkPart(StatelessSinkPartition[Any]):
    def __init__(self, owner: RecordingSink, worker_index: int) -> None:
        self.owner = owner
        self.worker_index = worker_index

    async def write_batch(self, items: list[Any]) -> None:
        await anyio.lowlevel.checkpoint()
        self.owner.written.extend((self.worker_index, x) for x in items)

    def close(self) -> None:
        self.owner.closed.append(self.worker_index)


class RecordingSink(DynamicSink[Any]):
    def __init__(self) -> None:
        self.built: list[tuple[int, int]] = []
        self.written: list[tuple[int, Any]] = []
        self.closed: list[int] = []

    def build(self, worker_index: int, worker_count: int) -> _RecSinkPart:
        self.built.append((worker_index, worker_count))
        return _RecSinkPart(self, worker_index)


@pytest.mark.asyncio
async def test_dynamic_source_and_sink_built_once_per_worker() -> None:
    source = PerWorkerSource()
    sink = RecordingSink()
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", sink)
    await run(flow, workers=3)
    assert sorted(source.built) == [(0, 3), (1, 3), (2, 3)]
    assert sorted(source.closed) == [0, 1, 2]
    assert sorted(sink.built) == [(0, 3), (1, 3), (2, 3)]
    assert sorted(sink.closed) == [0, 1, 2]
    # Without redistribute, each worker writes what its own partition read.
    assert sorted(sink.written) == sorted((w, f"w{w}-{n}") for w in range(3) for n in (1, 2, 3))


def test_dynamic_source_run_main() -> None:
    source = PerWorkerSource()
    sink = RecordingSink()
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", sink)
    run_main(flow)
    assert source.built == [(0, 1)]
    assert sink.written == [(0, "w0-1"), (0, "w0-2"), (0, "w0-3")]
    assert source.closed == [0]
    assert sink.closed == [0]


# -- next_awake and back-off on the virtual clock --------------------------------------


class _WakePart(StatefulSourcePartition[int, None]):
    def __init__(self, owner: WakeSource, now: datetime) -> None:
        self.owner = owner
        self.awake = now + owner.first
        self.n = 0

    def next_batch(self, sched: datetime | None) -> list[int]:
        self.owner.calls.append((anyio.current_time(), sched))
        self.n += 1
        if self.n > 3:
            raise StopIteration
        self.awake += timedelta(seconds=10)
        return [self.n]

    def next_awake(self) -> datetime:
        return self.awake

    def snapshot(self) -> None:
        return None


class WakeSource(FixedPartitionedSource[int, None]):
    """Asks to be called every 10 s, counted from the ``now`` it was built at."""

    def __init__(self, first: timedelta = timedelta(0)) -> None:
        self.first = first
        self.calls: list[tuple[float, datetime | None]] = []
        self.parts: list[_WakePart] = []

    def list_parts(self) -> list[str]:
        return ["p"]

    def build_part(self, now: datetime, for_part: str, resume_state: None) -> _WakePart:
        part = _WakePart(self, now)
        self.parts.append(part)
        return part


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("clock", ["default", "loop"])
async def test_next_awake_honoured_on_loop_time(clock: str) -> None:
    source = WakeSource()
    out: list[int] = []
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", TestingSink(out))
    start = anyio.current_time()
    with run_clock(clock):
        await run(flow, watchdog=VIRTUAL_WATCHDOG)
    times = [t - start for t, _ in source.calls]
    # First call at once; then exactly every 10 s of loop time.
    assert times == pytest.approx([0, 10, 20, 30], abs=1e-6)
    # ``sched`` is what next_awake asked for.
    assert [s for _, s in source.calls[1:]] == [
        source.parts[0].awake - timedelta(seconds=d) for d in (20, 10, 0)
    ]
    assert out == [1, 2, 3]


class _AsyncWakePart(StatelessSourcePartition[float]):
    def __init__(self, now: datetime) -> None:
        self.awake = now
        self.calls: list[tuple[float, datetime | None]] = []

    async def next_batch(self, sched: datetime | None) -> list[float]:
        await anyio.lowlevel.checkpoint()
        now = anyio.current_time()
        self.calls.append((now, sched))
        if len(self.calls) > 2:
            raise StopAsyncIteration
        self.awake += timedelta(seconds=10)
        return [now]

    def next_awake(self) -> datetime:
        return self.awake


class AsyncWakeSource(DynamicSource[float]):
    def __init__(self) -> None:
        self.parts: list[_AsyncWakePart] = []

    def build(self, now: datetime, worker_index: int, worker_count: int) -> _AsyncWakePart:
        self.parts.append(_AsyncWakePart(now))
        return self.parts[-1]


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("clock", ["default", "loop"])
async def test_async_next_batch_next_awake_on_loop_time(clock: str) -> None:
    source = AsyncWakeSource()
    out: list[float] = []
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", TestingSink(out))
    start = anyio.current_time()
    with run_clock(clock):
        await run(flow, watchdog=VIRTUAL_WATCHDOG)
    (part,) = source.parts
    assert [t - start for t, _ in part.calls] == pytest.approx([0, 10, 20], abs=1e-6)
    # ``sched`` is what next_awake asked for.
    assert [s for _, s in part.calls[1:]] == [part.awake - timedelta(seconds=10), part.awake]
    assert [t - start for t in out] == pytest.approx([0, 10], abs=1e-6)


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_next_awake_in_the_past_is_called_at_once() -> None:
    source = WakeSource(first=timedelta(hours=-1))
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", TestingSink([]))
    start = anyio.current_time()
    with run_clock("loop"):
        await run(flow, watchdog=VIRTUAL_WATCHDOG)
    # awake: -1 h, -1 h + 10 s, ...: every call is already due.
    assert [t - start for t, _ in source.calls] == [0, 0, 0, 0]


class _NaiveWakePart(StatelessSourcePartition[int]):
    def __init__(self) -> None:
        self.called = False

    def next_batch(self, sched: datetime | None) -> list[int]:
        self.called = True
        return [1]

    def next_awake(self) -> datetime | None:
        # Naive, hence ambiguous; asked for once a batch was read.
        return datetime(2024, 1, 1) if self.called else None


class NaiveWakeSource(DynamicSource[int]):
    def build(self, now: datetime, worker_index: int, worker_count: int) -> _NaiveWakePart:
        return _NaiveWakePart()


@pytest.mark.asyncio
async def test_naive_next_awake_is_a_type_error_naming_the_step() -> None:
    out: list[int] = []
    flow = Dataflow()
    flow.input("naive_in", NaiveWakeSource())
    flow.output("out", TestingSink(out))
    with pytest.raises(TypeError, match="'naive_in'"):
        await run(flow)
    assert out == [1]


class _WrongWakePart(_NaiveWakePart):
    def __init__(self, awake: Any) -> None:
        super().__init__()
        self.awake = awake

    def next_awake(self) -> Any:
        return self.awake if self.called else None


class _WrongWakeSource(DynamicSource[int]):
    def __init__(self, awake: Any) -> None:
        self.awake = awake

    def build(self, now: datetime, worker_index: int, worker_count: int) -> _WrongWakePart:
        return _WrongWakePart(self.awake)


async def _wake_at_five() -> None:
    return None


@pytest.mark.parametrize("awake", ["int", "coroutine"])
@pytest.mark.asyncio
async def test_a_next_awake_that_is_no_datetime_is_a_type_error_naming_the_step(
    awake: str,
) -> None:
    # It was a bare AttributeError ('int' object has no attribute 'tzinfo'),
    # no step named; an async next_awake added a never-awaited warning.
    out: list[int] = []
    flow = Dataflow()
    flow.input("in", _WrongWakeSource(5 if awake == "int" else _wake_at_five()))
    flow.output("out", TestingSink(out))
    with pytest.raises(TypeError, match="'in': next_awake must return an aware datetime or None"):
        await run(flow)
    assert out == [1]


class _IdlePart(StatelessSourcePartition[Any]):
    def __init__(self, owner: IdleSource) -> None:
        self.owner = owner

    def next_batch(self, sched: datetime | None) -> list[Any]:
        self.owner.calls.append(anyio.current_time())
        return []

    def close(self) -> None:
        self.owner.closed += 1


class _AsyncIdlePart(_IdlePart):
    async def next_batch(self, sched: datetime | None) -> list[Any]:  # type: ignore[override]
        return super().next_batch(sched)


class IdleSource(DynamicSource[Any]):
    def __init__(self, is_async: bool) -> None:
        self.is_async = is_async
        self.calls: list[float] = []
        self.closed = 0

    def build(self, now: datetime, worker_index: int, worker_count: int) -> _IdlePart:
        return _AsyncIdlePart(self) if self.is_async else _IdlePart(self)


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_idle_source_backs_off(is_async: bool) -> None:
    """An idle flow does not spin: few calls per second of loop time, none far apart."""
    source = IdleSource(is_async)
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", TestingSink([]))
    seconds = 60
    with anyio.move_on_after(seconds):
        await aiowax.run(flow)
    calls = source.calls
    assert len(calls) < seconds / 0.02 * 1.2
    assert len(calls) > seconds  # it is still polled
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert max(gaps) <= BACKOFF_MAX + 1e-9
    assert source.closed == 1


class _NoSchedPart(StatefulSourcePartition[int, None]):
    def __init__(self) -> None:
        self.n = 0

    def next_batch(self) -> list[int]:  # type: ignore[override]
        self.n += 1
        if self.n > 3:
            raise StopIteration
        return [self.n]

    def snapshot(self) -> None:
        return None


class _AsyncNoSchedPart(StatelessSourcePartition[int]):
    def __init__(self) -> None:
        self.n = 0

    async def next_batch(self) -> list[int]:  # type: ignore[override]
        self.n += 1
        if self.n > 3:
            raise StopAsyncIteration
        return [self.n * 10]


class NoSchedSource(FixedPartitionedSource[int, None]):
    def list_parts(self) -> list[str]:
        return ["p"]

    def build_part(self, now: datetime, for_part: str, resume_state: None) -> _NoSchedPart:
        return _NoSchedPart()


class AsyncNoSchedSource(DynamicSource[int]):
    def build(self, now: datetime, worker_index: int, worker_count: int) -> _AsyncNoSchedPart:
        return _AsyncNoSchedPart()


@pytest.mark.asyncio
async def test_next_batch_without_sched_argument() -> None:
    out: list[int] = []
    flow = Dataflow()
    flow.input("a", NoSchedSource())
    flow.output("a_out", TestingSink(out))
    flow.input("b", AsyncNoSchedSource())
    flow.output("b_out", TestingSink(out))
    await run(flow)
    assert sorted(out) == [1, 2, 3, 10, 20, 30]


class _EndPart(StatelessSourcePartition[int]):
    def __init__(self, how: str, count: int) -> None:
        self.how = how
        self.count = count
        self.n = 0
        self.calls_after_end = 0

    def _next(self) -> list[int]:
        if self.n >= self.count:
            self.calls_after_end += 1
            if self.how.endswith("StopIteration") and "Async" not in self.how:
                raise StopIteration
            raise StopAsyncIteration
        self.n += 1
        return [self.n]

    def next_batch(self, sched: datetime | None) -> list[int]:
        return self._next()


class _AsyncEndPart(_EndPart):
    async def next_batch(self, sched: datetime | None) -> list[int]:  # type: ignore[override]
        await anyio.lowlevel.checkpoint()
        return self._next()


class EndSource(DynamicSource[int]):
    def __init__(self, how: str, count: int) -> None:
        self.how = how
        self.count = count
        self.parts: list[_EndPart] = []

    def build(self, now: datetime, worker_index: int, worker_count: int) -> _EndPart:
        cls = _AsyncEndPart if self.how.startswith("async") else _EndPart
        part = cls(self.how, self.count + worker_index)
        self.parts.append(part)
        return part


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "how", ["sync-StopIteration", "sync-StopAsyncIteration", "async-StopAsyncIteration"]
)
@pytest.mark.parametrize("workers", [1, 2])
async def test_stop_iteration_ends_a_partition(how: str, workers: int) -> None:
    source = EndSource(how, 3)
    out: list[int] = []
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", TestingSink(out))
    await run(flow, workers=workers)
    expected = [n for w in range(workers) for n in range(1, 4 + w)]
    assert sorted(out) == sorted(expected)
    assert [p.calls_after_end for p in source.parts] == [1] * workers


# -- async sources and sinks -----------------------------------------------------------


@pytest.mark.asyncio
async def test_async_next_batch_and_async_write_batch() -> None:
    got = anyio.Event()
    received: list[Any] = []

    class Part(StatelessSourcePartition[int]):
        def __init__(self) -> None:
            self.n = 0

        async def next_batch(self, sched: datetime | None) -> list[int]:
            self.n += 1
            if self.n == 2:
                # Waits for the sink to have written the first batch.
                await got.wait()
            if self.n > 3:
                raise StopAsyncIteration
            return [self.n, -self.n]

    class Source(DynamicSource[int]):
        def build(self, now: datetime, worker_index: int, worker_count: int) -> Part:
            return Part()

    class SinkPart(StatelessSinkPartition[int]):
        async def write_batch(self, items: list[int]) -> None:
            await anyio.lowlevel.checkpoint()
            received.extend(items)
            got.set()

    class Sink(DynamicSink[int]):
        def build(self, worker_index: int, worker_count: int) -> SinkPart:
            return SinkPart()

    flow = Dataflow()
    flow.input("inp", Source())
    flow.map("m", lambda x: x * 2)
    flow.output("out", Sink())
    await run(flow)
    assert received == [2, -2, 4, -4, 6, -6]


# -- epochs ----------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("flavor", ["sync", "async"])
@pytest.mark.parametrize(
    ("batch_size", "expected"),
    [
        (1, [(1, 0), (2, 1), (3, 2), (4, 3), (5, 4)]),
        (2, [(1, 0), (1, 1), (2, 2), (2, 3), (3, 4)]),
        (3, [(1, 0), (1, 1), (1, 2), (2, 3), (2, 4)]),
        (5, [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4)]),
    ],
)
async def test_zero_epoch_interval_each_batch_is_an_epoch(
    batch_size: int, expected: list[tuple[int, int]], flavor: str
) -> None:
    seen: list[tuple[int, int]] = []

    def record(epoch: int, x: int) -> None:
        seen.append((epoch, x))

    async def arecord(epoch: int, x: int) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append((epoch, x))

    inspector = record if flavor == "sync" else arecord
    flow, out = simple_flow(list(range(5)), lambda f: f.inspect_epoch(inspector), batch_size)
    await run(flow, epoch_interval=timedelta(0))
    assert seen == expected
    assert out == list(range(5))


def test_zero_epoch_interval_run_main_matches_seed_example() -> None:
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", TestingSource(["a", "b", "c"]))
    flow.inspect_epoch(lambda epoch, item: out.append((epoch, item)))
    flow.output("out", TestingSink([]))
    run_main(flow, epoch_interval=timedelta(0))
    assert out == [(1, "a"), (2, "b"), (3, "c")]


@pytest.mark.asyncio
@pytest.mark.parametrize("batch_size", [1, 2, 1000])
async def test_default_epoch_interval_short_run_is_epoch_one(batch_size: int) -> None:
    seen: list[tuple[int, int]] = []
    flow, _ = simple_flow(
        list(range(50)), lambda f: f.inspect_epoch(lambda e, x: seen.append((e, x))), batch_size
    )
    await run(flow)
    assert seen == [(1, x) for x in range(50)]


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_epoch_interval_on_loop_time() -> None:
    """An async source yielding one item per second, with 2.6 s epochs."""
    from aiowax.inputs import DynamicSource, StatelessSourcePartition

    class Part(StatelessSourcePartition[int]):
        def __init__(self) -> None:
            self.n = 0

        async def next_batch(self, sched: datetime | None) -> list[int]:
            self.n += 1
            if self.n > 9:
                raise StopAsyncIteration
            await anyio.sleep(1)
            return [self.n]

    class Source(DynamicSource[int]):
        def build(self, now: datetime, worker_index: int, worker_count: int) -> Part:
            return Part()

    seen: list[tuple[int, int]] = []
    flow = Dataflow()
    flow.input("inp", Source())
    flow.inspect_epoch(lambda e, x: seen.append((e, x)))
    flow.output("out", TestingSink([]))
    # Epochs close on time, even while a read is in flight: epoch k holds
    # the items returned in [2.6 (k - 1), 2.6 k) seconds of loop time.
    await run(flow, watchdog=VIRTUAL_WATCHDOG, epoch_interval=timedelta(seconds=2.6))
    assert seen == [(1, 1), (1, 2), (2, 3), (2, 4), (2, 5), (3, 6), (3, 7), (4, 8), (4, 9)]


@pytest.mark.asyncio
async def test_zero_epoch_interval_partitions_move_in_lockstep() -> None:
    parts = {"a": ["a1", "a2", "a3"], "b": ["b1"], "c": ["c1", "c2"]}
    seen: list[tuple[int, str]] = []
    flow = Dataflow()
    flow.input("inp", PartsSource(parts, batch_size=1))
    flow.inspect_epoch(lambda e, x: seen.append((e, x)))
    flow.output("out", TestingSink([]))
    await run(flow, epoch_interval=timedelta(0))
    assert sorted(seen) == sorted((int(x[1]), x) for p in parts.values() for x in p)
    # Epochs never go backwards in the stream.
    assert [e for e, _ in seen] == sorted(e for e, _ in seen)


# -- a waiting partition does not hold the others back ---------------------------------


class _SleepyPart(StatefulSourcePartition[Any, None]):
    """Has nothing now and asks to be called again in an hour."""

    def __init__(self, now: datetime) -> None:
        self.awake = now

    def next_batch(self, sched: datetime | None) -> list[Any]:
        self.awake += timedelta(hours=1)
        return []

    def next_awake(self) -> datetime:
        return self.awake

    def snapshot(self) -> None:
        return None


class _TickPart(StatefulSourcePartition[int, None]):
    """One item per second of loop time."""

    def __init__(self) -> None:
        self.n = 0

    async def next_batch(self, sched: datetime | None) -> list[int]:
        await anyio.sleep(1)
        self.n += 1
        return [self.n]

    def snapshot(self) -> None:
        return None


class SleepyAndBusySource(FixedPartitionedSource[Any, None]):
    def list_parts(self) -> list[str]:
        return ["sleepy", "busy"]

    def build_part(self, now: datetime, for_part: str, resume_state: None) -> Any:
        return _SleepyPart(now) if for_part == "sleepy" else _TickPart()


class _TimedSinkPart(StatelessSinkPartition[Any]):
    def __init__(self, log: list[tuple[float, Any]]) -> None:
        self.log = log

    def write_batch(self, items: list[Any]) -> None:
        self.log.extend((anyio.current_time(), x) for x in items)


class TimedSink(DynamicSink[Any]):
    def __init__(self) -> None:
        self.log: list[tuple[float, Any]] = []

    def build(self, worker_index: int, worker_count: int) -> _TimedSinkPart:
        return _TimedSinkPart(self.log)


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("workers", [1, 2])
async def test_partition_waiting_for_next_awake_does_not_stall_others(workers: int) -> None:
    """Epochs close on time although one partition sleeps for an hour.

    The busy partition's items must reach the sink as they are read, not wait
    at an epoch boundary for the sleeping partition to wake up.
    """
    sink = TimedSink()
    flow = Dataflow()
    flow.input("inp", SleepyAndBusySource())
    flow.output("out", sink)
    start = anyio.current_time()
    with anyio.move_on_after(60.5):
        await aiowax.run(flow, workers=workers)
    assert [x for _, x in sink.log] == list(range(1, 61))
    assert [t - start for t, _ in sink.log] == pytest.approx(list(range(1, 61)), abs=1e-6)


class _HourlyPoller(SimplePollingSource[str]):
    def __init__(self) -> None:
        super().__init__(interval=timedelta(hours=1))

    def next_item(self) -> str:
        return "polled"


class _TickSource(FixedPartitionedSource[int, None]):
    def list_parts(self) -> list[str]:
        return ["ticks"]

    def build_part(self, now: datetime, for_part: str, resume_state: None) -> _TickPart:
        return _TickPart()


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_hourly_poller_does_not_stall_another_input() -> None:
    """A slow poller in one pipeline leaves another pipeline's items on time."""
    polled: list[Any] = []
    sink = TimedSink()
    flow = Dataflow()
    flow.input("poll", _HourlyPoller())
    flow.output("poll_out", TestingSink(polled))
    flow.input("ticks", _TickSource())
    flow.output("ticks_out", sink)
    start = anyio.current_time()
    with anyio.move_on_after(60.5):
        await aiowax.run(flow)
    assert polled == ["polled"]
    assert [x for _, x in sink.log] == list(range(1, 61))
    assert [t - start for t, _ in sink.log] == pytest.approx(list(range(1, 61)), abs=1e-6)


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("workers", [2, 3])
async def test_partition_waiting_in_async_next_batch_does_not_hold_back_others(
    workers: int,
) -> None:
    """Only worker 0's partition has data; the others wait in next_batch until 1000 s.

    Items read by worker 0 reach the keyed step when they are read, across
    several epochs (10 s each), not when the idle partitions finally return.
    """
    source = TimedSource(
        [(0, [("a", 1)]), (100, [("b", 1)]), (150, [("a", 2)]), (200, [("b", 2)])], end=1000
    )
    seen: list[tuple[float, Any]] = []
    flow = Dataflow()
    flow.input("inp", source)
    flow.stateful_map("sm", lambda: 0, lambda s, x: (s + x, s + x))
    record_times(flow, seen)
    flow.output("out", TestingSink([]))
    await run(flow, workers=workers, watchdog=VIRTUAL_WATCHDOG)
    assert seen == [(0.0, ("a", 1)), (100.0, ("b", 1)), (150.0, ("a", 3)), (200.0, ("b", 3))]
    # Worker 0's partition was asked for more as soon as it returned a batch.
    assert source.parts[0].calls == [0.0, 0.0, 100.0, 150.0, 200.0]


# -- a graceful stop while an async read waits on a thread ------------------------------------


class _ThreadReadPart(StatefulSourcePartition[Any, int]):
    """``("k", i)`` for i < 6, each read in a worker thread; the read of 3 waits for ``gate``."""

    def __init__(self, position: int | None, gate: threading.Event, reading: anyio.Event) -> None:
        self.i = position or 0
        self.gate = gate
        self.reading = reading

    async def next_batch(self, sched: datetime | None) -> list[Any]:
        if self.i >= 6:
            raise StopAsyncIteration
        i = self.i
        if i == 3:
            self.reading.set()

        def read() -> list[Any]:
            if i == 3:
                self.gate.wait(10)
            return [("k", i)]

        batch = await anyio.to_thread.run_sync(read)
        self.i += 1
        return batch

    def snapshot(self) -> int:
        return self.i


class _ThreadReadSource(FixedPartitionedSource[Any, int]):
    def __init__(self) -> None:
        self.gate = threading.Event()
        self.reading = anyio.Event()

    def list_parts(self) -> list[str]:
        return ["p"]

    def build_part(self, now: datetime, for_part: str, resume_state: int | None) -> Any:
        return _ThreadReadPart(resume_state, self.gate, self.reading)


@pytest.mark.asyncio
async def test_a_read_that_returns_after_a_graceful_stop_keeps_its_items(tmp_path: Any) -> None:
    # S1: the stop cancels the read in flight, but a thread cannot be cut
    # short: the read returns its batch. That batch goes downstream and the
    # final snapshot is taken after it; were it taken before it (the
    # position of the cancelled read), the resumed run would count 3 twice.
    from aiowax.recovery import RecoveryConfig, init_db_dir

    init_db_dir(tmp_path, 1)
    config = RecoveryConfig(tmp_path)

    def flow(source: _ThreadReadSource, out: list[Any]) -> Dataflow:
        f = Dataflow()
        f.input("inp", source)
        f.stateful_map("sum", lambda: 0, lambda s, v: (s + v, s + v))
        f.output("out", TestingSink(out))
        return f

    first: list[Any] = []
    source = _ThreadReadSource()
    with anyio.fail_after(10):
        async with aiowax.open_flow(flow(source, first), recovery_config=config) as handle:
            await source.reading.wait()
            handle.request_stop()
            await anyio.wait_all_tasks_blocked()  # the stop has reached the read
            source.gate.set()
            await handle.wait()
    second: list[Any] = []
    with anyio.fail_after(10):
        await aiowax.run(flow(_ThreadReadSource(), second), recovery_config=config)
    assert first == [("k", 0), ("k", 1), ("k", 3), ("k", 6)]
    assert second == [("k", 10), ("k", 15)]


# -- a sync source that answers at once (the lane's gathering loop) -------------------


class _ScriptedPart(StatelessSourcePartition[Any]):
    """Returns what ``script`` says, call after call: a batch, or an exception to raise."""

    def __init__(self, script: list[Any]) -> None:
        self.script = iter(script)

    def next_batch(self) -> Any:
        step = next(self.script, StopIteration())
        if isinstance(step, BaseException):
            raise step
        return step


class _ScriptedSource(DynamicSource[Any]):
    def __init__(self, script: list[Any]) -> None:
        self.script = script

    def build(self, now: datetime, worker_index: int, worker_count: int) -> _ScriptedPart:
        return _ScriptedPart(self.script)


def _scripted_flow(script: list[Any], out: list[Any]) -> Dataflow:
    flow = Dataflow()
    flow.input("reads", _ScriptedSource(script))
    flow.output("out", TestingSink(out))
    return flow


@pytest.mark.asyncio
async def test_one_item_batches_read_back_to_back_all_arrive_in_order() -> None:
    # Calls after the first are made in the lane's tight loop (no await in
    # between): tuples are taken there as on the first call.
    out: list[Any] = []
    script = [[0], (1,), [2, 3], (), [4], *[[i] for i in range(5, 3000)]]
    await run(_scripted_flow(script, out))
    assert out == list(range(3000))


async def _fetch() -> list[int]:
    return [1]


@pytest.mark.asyncio
async def test_a_plain_next_batch_returning_a_coroutine_is_told_to_be_async_def() -> None:
    # The coroutine is closed, not left to warn "never awaited" at exit.
    out: list[Any] = []
    with pytest.raises(TypeError) as info:
        await run(_scripted_flow([[0], _fetch()], out))
    said = str(info.value)
    assert "input step 'reads': next_batch must return a list, got" in said
    assert "must be declared 'async def next_batch'" in said
    assert out == [0]


@pytest.mark.asyncio
@pytest.mark.parametrize("at", [0, 1, 5])
async def test_next_batch_returning_no_list_names_the_step_on_any_call(at: int) -> None:
    out: list[Any] = []
    script: list[Any] = [[i] for i in range(at)] + [{"not": "a list"}, [99]]
    with pytest.raises(TypeError) as info:
        await run(_scripted_flow(script, out))
    assert "input step 'reads': next_batch must return a list, got" in str(info.value)
    # What was read before the bad call is not lost.
    assert out == list(range(at))


@pytest.mark.asyncio
@pytest.mark.parametrize("at", [0, 1, 5])
async def test_next_batch_raising_names_the_step_on_any_call(at: int) -> None:
    out: list[Any] = []
    script: list[Any] = [[i] for i in range(at)] + [KeyError("gone"), [99]]
    with pytest.raises(KeyError) as info:
        await run(_scripted_flow(script, out))
    notes = getattr(info.value, "__notes__", [])
    assert any("'reads'" in n and "input next_batch" in n for n in notes), notes
    assert out == list(range(at))


class _CostlyPart(StatelessSourcePartition[int]):
    """Hands out ``0, 1, ...`` one a call; call ``i`` takes ``costs[i]`` s of loop time."""

    def __init__(self, costs: list[float]) -> None:
        self.costs = costs
        self.calls = 0

    def next_batch(self) -> list[int]:
        if self.calls == len(self.costs):
            raise StopIteration
        asyncio.get_running_loop().advance(self.costs[self.calls])  # type: ignore[attr-defined]
        self.calls += 1
        return [self.calls - 1]


class _CostlySource(DynamicSource[int]):
    def __init__(self, costs: list[float]) -> None:
        self.costs = costs

    def build(self, now: datetime, worker_index: int, worker_count: int) -> _CostlyPart:
        return _CostlyPart(self.costs)


class _MessagePart(StatelessSinkPartition[int]):
    def __init__(self, messages: list[list[int]]) -> None:
        self.messages = messages

    def write_batch(self, items: list[int]) -> None:
        self.messages.append(list(items))


class _MessageSink(DynamicSink[int]):
    """Keeps each batch it is handed whole: here, each message of the lane."""

    def __init__(self) -> None:
        self.messages: list[list[int]] = []

    def build(self, worker_index: int, worker_count: int) -> _MessagePart:
        return _MessagePart(self.messages)


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("slow", [0.001, 0.005], ids=["1ms", "5ms"])
async def test_gathering_stops_on_time_when_a_quick_source_turns_slow(slow: float) -> None:
    # 100 calls that take no time (a backlog), then calls that block (a read
    # waiting for each new item). The lane reads the clock after every call:
    # what it gathered, and the event loop, wait at most one call past its
    # 2 ms (before the fix, reads only every 16 quick calls held them for up
    # to 16 slow calls: 61 ms at 5 ms a call).
    costs = [0.0] * 100 + [slow] * 60
    flow = Dataflow()
    flow.input("inp", _CostlySource(costs))
    sink = _MessageSink()
    flow.output("out", sink)
    await run(flow, watchdog=VIRTUAL_WATCHDOG)
    assert [i for message in sink.messages for i in message] == list(range(160))
    first, *rest = sink.messages
    due = math.ceil(COALESCE_SECONDS / slow - 1e-9)  # slow calls until the message is due
    assert first[:100] == list(range(100))
    assert len(first) - 100 <= due
    # The first call of a message, then one call per clock read until due.
    assert rest and all(len(message) <= 1 + due for message in rest)


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_gathering_from_a_slow_source_stops_on_time() -> None:
    slow = 0.0005
    flow = Dataflow()
    flow.input("inp", _CostlySource([slow] * 50))
    sink = _MessageSink()
    flow.output("out", sink)
    await run(flow, watchdog=VIRTUAL_WATCHDOG)
    assert [i for message in sink.messages for i in message] == list(range(50))
    assert max(map(len, sink.messages)) <= 1 + round(COALESCE_SECONDS / slow)


class _SizedPart(StatelessSourcePartition[int]):
    """Hands out ``0, 1, ...`` in batches of the given sizes, each call at once."""

    def __init__(self, sizes: list[int]) -> None:
        self.sizes = iter(sizes)
        self.next = 0

    def next_batch(self) -> list[int]:
        size = next(self.sizes, None)
        if size is None:
            raise StopIteration
        self.next += size
        return list(range(self.next - size, self.next))


class _AwakeSizedPart(_SizedPart):
    """The same, with a ``next_awake`` that says to call again at once."""

    def next_awake(self) -> datetime | None:
        return None


class _AsyncSizedPart(StatelessSourcePartition[int]):
    """The same, from an ``async def next_batch`` that never waits."""

    def __init__(self, sizes: list[int]) -> None:
        self.part = _SizedPart(sizes)

    async def next_batch(self) -> list[int]:
        try:
            return self.part.next_batch()
        except StopIteration:
            raise StopAsyncIteration from None


_SIZED_PARTS = {"sync": _SizedPart, "awake": _AwakeSizedPart, "async": _AsyncSizedPart}


class _SizedSource(DynamicSource[int]):
    def __init__(self, sizes: list[int], wake: str) -> None:
        self.sizes = sizes
        self.wake = wake

    def build(self, now: datetime, worker_index: int, worker_count: int) -> Any:
        return _SIZED_PARTS[self.wake](self.sizes)


async def _message_sizes(sizes: list[int], wake: str) -> list[int]:
    """The sizes of the messages a lane makes of a source's batch sizes (no time passes)."""
    flow = Dataflow()
    flow.input("inp", _SizedSource(sizes, wake))
    sink = _MessageSink()
    flow.output("out", sink)
    await run(flow, watchdog=VIRTUAL_WATCHDOG)
    assert [i for message in sink.messages for i in message] == list(range(sum(sizes)))
    return [len(message) for message in sink.messages]


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("wake", ["sync", "awake", "async"])
async def test_gathering_ends_once_a_live_source_has_caught_up(wake: str) -> None:
    # A live source's first read of a turn has what came in while the steps
    # ran, each later one what came in during one call. The lane kept
    # calling for 2 ms while no step ran, and an item crosses one step a
    # turn: at 900,000 items/s through 5 maps, p50 latency 6.3 ms (0.35 ms
    # now). It sends once two reads or more after the first averaged under
    # a quarter of it. The virtual clock does not move: only sizes end a
    # message here.
    sizes = [40, 3, 4]  # 3 + 4 = 7 in two reads: under 2 x 40 / 4
    sizes += [8, 9, 7, 8, 1, 1, 1, 0]  # never under: only the empty read ends it
    sizes += [2, 32, 1, 2, 0]  # a first read under 4 items: the same
    sizes += [12, 2, 3]  # two reads, 5 items: under 2 x 12 / 4
    sizes += [2, 2, 2]
    assert await _message_sizes(sizes, wake) == [47, 35, 37, 17, 6]


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("wake", ["sync", "awake", "async"])
@pytest.mark.parametrize("shape", ["steady", "alternating", "random_1_8", "random_1_100"])
async def test_gathering_keeps_a_backlog_whose_batch_sizes_vary(wake: str, shape: str) -> None:
    # A backlog hands out about the same sizes from its first read on: it is
    # gathered up to COALESCE_ITEMS (1024) items a message, however its
    # sizes vary (helper-62: a rule that stopped at any batch smaller than
    # the first made messages of 3 items of a source alternating 2 and 1,
    # 9.8x the instructions an item).
    rng = random.Random(62)
    sizes = {
        "steady": [5] * 400,
        "alternating": [2, 1] * 700,
        "random_1_8": [rng.randint(1, 8) for _ in range(450)],
        "random_1_100": [rng.randint(1, 100) for _ in range(40)],
    }[shape]
    messages = await _message_sizes(sizes, wake)
    assert all(size >= COALESCE_ITEMS for size in messages[:-1]), messages


class _TricklePart(StatelessSourcePartition[float]):
    """Without a ``next_awake``: one item every ``every`` s of loop time, ``[]`` between."""

    def __init__(self, every: float, count: int) -> None:
        self.every = every
        self.count = count
        self.sent = 0
        self.start = anyio.current_time()

    def next_batch(self) -> list[float]:
        if self.sent == self.count:
            raise StopIteration
        due = self.start + (self.sent + 1) * self.every
        if anyio.current_time() < due:
            return []
        self.sent += 1
        return [due]


class _TrickleSource(DynamicSource[float]):
    def __init__(self, every: float, count: int) -> None:
        self.every = every
        self.count = count

    def build(self, now: datetime, worker_index: int, worker_count: int) -> _TricklePart:
        return _TricklePart(self.every, self.count)


class _DelaySink(DynamicSink[float]):
    """Records how long after its due time (loop time) each item arrived."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def build(self, worker_index: int, worker_count: int) -> _DelayPart:
        return _DelayPart(self.delays)


class _DelayPart(StatelessSinkPartition[float]):
    def __init__(self, delays: list[float]) -> None:
        self.delays = delays

    def write_batch(self, items: list[float]) -> None:
        now = anyio.current_time()
        self.delays.extend(now - due for due in items)


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_a_trickling_source_is_polled_again_soon_after_items() -> None:
    # A gather ends on the empty call after an item; the back-off starts
    # short again after every round that brought items, rather than
    # doubling to BACKOFF_MAX while items keep coming (then each item
    # waited up to 20 ms: the median 9.5 ms).
    every = 0.005
    sink = _DelaySink()
    flow = Dataflow()
    flow.input("inp", _TrickleSource(every, 40))
    flow.output("out", sink)
    await run(flow, watchdog=VIRTUAL_WATCHDOG)
    assert len(sink.delays) == 40
    # After an item the waits are 1, 2, 4 ms...: the next one, 5 ms later,
    # is seen at most 2 ms late (at 7 ms).
    assert max(sink.delays) <= 2 * BACKOFF_MIN + 1e-6
    assert max(sink.delays) < BACKOFF_MAX / 4


class _Batch(list[int]):
    """A list subclass, as a user's source may return."""


@pytest.mark.asyncio
async def test_next_batch_may_return_a_list_subclass_or_a_tuple() -> None:
    # As in the reference (Bytewax 0.17.2 delivers [1, 2, 3, 4, 5] too).
    out: list[int] = []
    await run(_scripted_flow([_Batch([1, 2]), (3,), _Batch([4, 5])], out))
    assert out == [1, 2, 3, 4, 5]


class _ConvertingPart(StatelessSourcePartition[int]):
    """1, 2, 3, then a read that turns its cancellation into a ConnectionError."""

    def __init__(self, waiting: anyio.Event) -> None:
        self.n = 0
        self.waiting = waiting

    async def next_batch(self, sched: datetime | None) -> list[int]:
        self.n += 1
        if self.n <= 3:
            return [self.n]
        self.waiting.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            raise ConnectionError("read interrupted") from None
        return []


class _ConvertingSource(DynamicSource[int]):
    def __init__(self) -> None:
        self.waiting = anyio.Event()

    def build(self, now: datetime, worker_index: int, worker_count: int) -> _ConvertingPart:
        return _ConvertingPart(self.waiting)


@pytest.mark.asyncio
async def test_a_read_that_turns_the_stops_cancellation_into_an_error_still_stops() -> None:
    # Client libraries raise their own error when a read is cancelled: the
    # graceful stop came out as a failure of the input (ConnectionError,
    # "raised in step 'in' by the input next_batch").
    source = _ConvertingSource()
    out: list[int] = []
    flow = Dataflow()
    flow.input("in", source)
    flow.output("out", TestingSink(out))
    with anyio.fail_after(10):
        async with aiowax.open_flow(flow) as handle:
            await source.waiting.wait()
            await handle.stop()
    assert handle.status is aiowax.FlowStatus.FINISHED
    assert out == [1, 2, 3]


# -- async reads that do not wait (the lane runs them until they first wait) ---------


class _BacklogPart(StatefulSourcePartition[int, int]):
    """``first`` one-item reads that return at once, then reads that wait.

    The waiting read sits in an anyio scope of its own, as PushSource's and
    most clients' reads do, until ``more`` is set; then the input ends.
    """

    def __init__(self, position: int | None, first: int, more: anyio.Event) -> None:
        self.i = position or 0
        self.first = first
        self.more = more

    async def next_batch(self, sched: datetime | None) -> list[int]:
        if self.i < self.first:
            self.i += 1
            return [self.i]
        with anyio.move_on_after(3600):
            await self.more.wait()
        raise StopAsyncIteration

    def snapshot(self) -> int:
        return self.i


class _BacklogSource(FixedPartitionedSource[int, int]):
    def __init__(self, first: int) -> None:
        self.first = first
        self.more = anyio.Event()

    def list_parts(self) -> list[str]:
        return ["backlog"]

    def build_part(self, now: datetime, for_part: str, resume: int | None) -> _BacklogPart:
        return _BacklogPart(resume, self.first, self.more)


class _BatchSizes(StatelessSinkPartition[int]):
    def __init__(self, sizes: list[int], items: list[int]) -> None:
        self.sizes = sizes
        self.items = items

    def write_batch(self, items: list[int]) -> None:
        self.sizes.append(len(items))
        self.items.extend(items)


class _BatchSizesSink(DynamicSink[int]):
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.items: list[int] = []

    def build(self, worker_index: int, worker_count: int) -> _BatchSizes:
        return _BatchSizes(self.sizes, self.items)


@pytest.mark.asyncio
async def test_async_reads_that_do_not_wait_are_gathered_and_sent_when_one_waits() -> None:
    # An async source of one-item reads paid a message (a hop through every
    # step) per read, 43k items/s through 5 maps with a queue-fed source
    # (2.4M with a sync one). Reads that return without waiting are
    # gathered now, like a sync source's batches, and what was gathered goes
    # on as soon as a read waits (not when it returns), from inside the
    # read's own scope without awaiting anything there.
    source = _BacklogSource(first=50)
    sink = _BatchSizesSink()
    flow = Dataflow()
    flow.input("inp", source)
    flow.map("m", lambda x: x)
    flow.output("out", sink)
    with anyio.fail_after(10):
        async with aiowax.open_flow(flow) as handle:
            while len(sink.items) < 50:  # the read after them is waiting
                await anyio.lowlevel.checkpoint()
            assert sink.sizes == [50]
            source.more.set()
            await handle.wait()
    assert sink.items == list(range(1, 51))
    assert handle.status is aiowax.FlowStatus.FINISHED


@pytest.mark.asyncio
async def test_an_epoch_closed_while_a_read_waits_has_what_was_gathered_before_it(
    tmp_path: Any,
) -> None:
    # The watcher closes the epochs that end during a waiting read, at the
    # position from before that read: the items gathered before it must be
    # in that epoch, or a crash after its commit loses them for good.
    from aiowax.recovery import RecoveryConfig, init_db_dir

    init_db_dir(tmp_path, 1)
    config = RecoveryConfig(tmp_path)
    first = _BacklogSource(first=5)
    out: list[int] = []
    flow = Dataflow()
    flow.input("inp", first)
    flow.output("out", TestingSink(out))
    with anyio.fail_after(10):
        async with aiowax.open_flow(
            flow, recovery_config=config, epoch_interval=timedelta(milliseconds=10)
        ) as handle:
            while handle.stats().snapshots < 2:  # epochs closed by the watcher
                await anyio.sleep(0.01)
            await handle.abort()  # a crash: no final snapshot
    assert out == [1, 2, 3, 4, 5]
    again: list[int] = []
    second = _BacklogSource(first=7)  # two more items since
    second.more.set()
    flow = Dataflow()
    flow.input("inp", second)
    flow.output("out", TestingSink(again))
    with anyio.fail_after(10):
        await aiowax.run(flow, recovery_config=config)
    assert again == [6, 7]


class _BadThenWaitPart(StatelessSourcePartition[Any]):
    """Worker 0: ("k", 1), "bad" (no key), then a read that waits in a scope
    whose cleanup awaits; the other workers end at once."""

    def __init__(self, worker: int) -> None:
        self.worker = worker
        self.i = 0

    async def next_batch(self, sched: datetime | None) -> list[Any]:
        self.i += 1
        if self.worker != 0 or self.i > 3:
            raise StopAsyncIteration
        if self.i == 3:
            with anyio.move_on_after(3600):
                try:
                    await anyio.sleep_forever()
                finally:
                    await anyio.lowlevel.checkpoint()
        return [("k", 1)] if self.i == 1 else ["bad"]


class _BadThenWaitSource(DynamicSource[Any]):
    def build(self, now: datetime, worker_index: int, worker_count: int) -> _BadThenWaitPart:
        return _BadThenWaitPart(worker_index)


@pytest.mark.asyncio
async def test_a_bad_item_among_gathered_ones_fails_the_run_with_its_own_error() -> None:
    # The gathered items go on when the next read waits; a bad one among
    # them (refused on its way to a keyed step) closed that waiting read
    # without unwinding its scopes: anyio's "exit a cancel scope that isn't
    # the current task's" replaced the step's error, and a later version
    # of the fix ended the run as if stopped, silently.
    seen: list[aiowax.stats.FlowStats] = []
    flow = Dataflow()
    flow.input("inp", _BadThenWaitSource())
    flow.stateful_map("sm", lambda: 0, lambda s, v: (s + 1, v))
    flow.output("out", TestingSink([]))
    with pytest.raises(TypeError, match="step 'sm' needs \\(key, value\\)"), anyio.fail_after(10):
        await aiowax.run(flow, workers=2, on_stats=seen.append, stats_interval=3600)
    inp, sm = seen[-1].step("inp"), seen[-1].step("sm")
    assert (inp.errors, sm.errors) == (0, 1)
    assert inp.items_out == 1  # ("k", 1), handed on before the bad one


class _TickingPart(StatelessSourcePartition[int]):
    """One item a read, each read waiting a loop turn first."""

    def __init__(self) -> None:
        self.i = 0

    async def next_batch(self, sched: datetime | None) -> list[int]:
        self.i += 1
        if self.i % 2 == 0:
            await anyio.lowlevel.checkpoint()
        return [self.i]


class _TickingSource(DynamicSource[int]):
    def build(self, now: datetime, worker_index: int, worker_count: int) -> _TickingPart:
        return _TickingPart()


@pytest.mark.asyncio
async def test_an_input_is_not_blamed_when_the_steps_after_it_fail() -> None:
    # A map fails: the lane's next send finds the channel closed. Sent
    # without waiting (gathered items before a read that waits), that was
    # reported as the input's own next_batch error in its stats.
    def boom(x: int) -> int:
        if x == 30:
            raise ValueError("boom")
        return x

    seen: list[aiowax.stats.FlowStats] = []
    flow = Dataflow()
    flow.input("inp", _TickingSource())
    flow.map("m", boom)
    flow.output("out", TestingSink([]))
    with pytest.raises(ValueError, match="boom"), anyio.fail_after(10):
        await aiowax.run(flow, on_stats=seen.append, stats_interval=3600)
    assert seen[-1].step("inp").errors == 0
    assert seen[-1].step("m").errors == 1


class _EndsWithStopIteration(StatefulSourcePartition[int, int]):
    """An async partition that ends as the docs (and Bytewax's) say: StopIteration."""

    def __init__(self, start: int | None, awaits: bool) -> None:
        self.i = start or 0
        self.awaits = awaits

    async def next_batch(self, sched: datetime | None) -> list[int]:
        if self.awaits:
            await anyio.lowlevel.checkpoint()  # ends after a wait, or at once
        if self.i >= 5:
            raise StopIteration
        self.i += 1
        return [self.i]

    def snapshot(self) -> int:
        return self.i


class _StopIterationSource(FixedPartitionedSource[int, int]):
    def __init__(self, awaits: bool) -> None:
        self.awaits = awaits

    def list_parts(self) -> list[str]:
        return ["p"]

    def build_part(self, now: datetime, for_part: str, resume: int | None) -> Any:
        return _EndsWithStopIteration(resume, self.awaits)


@pytest.mark.parametrize("awaits", [False, True])
def test_an_async_next_batch_raising_stop_iteration_ends_its_partition(
    awaits: bool, tmp_path: Any
) -> None:
    # helper-56: Python turns it into "RuntimeError: coroutine raised
    # StopIteration" (PEP 479), which failed the run after its last item, and
    # every resume after it. It ends the partition, as in a plain def.
    from aiowax.recovery import RecoveryConfig, init_db_dir

    init_db_dir(tmp_path, 1)
    for expected in ([1, 2, 3, 4, 5], []):
        out: list[int] = []
        flow = Dataflow()
        flow.input("inp", _StopIterationSource(awaits))
        flow.output("out", TestingSink(out))
        run_main(flow, recovery_config=RecoveryConfig(tmp_path))
        assert out == expected


def test_an_async_next_batch_failing_with_another_runtime_error_still_fails() -> None:
    class Part(StatelessSourcePartition[int]):
        async def next_batch(self) -> list[int]:
            raise RuntimeError("coroutine raised StopIteration, said the user")

    class Source(DynamicSource[int]):
        def build(self, now: datetime, worker_index: int, worker_count: int) -> Part:
            return Part()

    flow = Dataflow()
    flow.input("inp", Source())
    flow.output("out", TestingSink([]))
    with pytest.raises(RuntimeError, match="said the user"):
        run_main(flow)

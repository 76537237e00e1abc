"""Custom sources and sinks: partitions, workers, async methods, timing on loop time."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zlib import crc32

import anyio
import anyio.lowlevel
import pytest

import aiowax
from aiowax._engine.clock import LoopClock, reset_clock, set_clock
from aiowax._engine.lanes import BACKOFF_MAX
from aiowax._testing.virtual import VIRTUAL_EPOCH
from aiowax.dataflow import Dataflow
from aiowax.inputs import (
    DynamicSource,
    FixedPartitionedSource,
    SimplePollingSource,
    StatefulSourcePartition,
    StatelessSourcePartition,
    batch,
    batch_async,
)
from aiowax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)
from aiowax.testing import TestingSink, TestingSource, run_main

WATCHDOG = 5
VIRTUAL_WATCHDOG = 24 * 3600
#: Wall time at loop time 0 on the virtual loop (its own clock and ours).
START = VIRTUAL_EPOCH


async def _run(flow: Dataflow, watchdog: float = WATCHDOG, **kwargs: Any) -> None:
    with anyio.fail_after(watchdog):
        await aiowax.run(flow, **kwargs)


#: Another start, for a clock installed explicitly.
OTHER_START = datetime(2031, 5, 17, 12, 0, 0, 250000, tzinfo=UTC)


@contextlib.contextmanager
def _clock(kind: str) -> Iterator[datetime]:
    """Yield the wall time at loop time 0 of the clock the run will use.

    ``default``: the virtual loop's own clock; ``loop``: a `LoopClock`
    installed explicitly, starting elsewhere.
    """
    if kind == "default":
        yield START
        return
    token = set_clock(LoopClock(OTHER_START))
    try:
        yield OTHER_START
    finally:
        reset_clock(token)


# -- fixed partitions ----------------------------------------------------------------


class _Part(StatefulSourcePartition[Any, int]):
    def __init__(self, owner: PartsSource, name: str, is_async: bool) -> None:
        self.owner = owner
        self.name = name
        self.items = owner.parts[name]
        self.pos = 0
        if is_async:
            self.next_batch = self._anext_batch  # type: ignore[method-assign]

    def next_batch(self, sched: datetime | None) -> list[Any]:
        if self.pos >= len(self.items):
            raise StopIteration
        out = self.items[self.pos : self.pos + self.owner.batch_size]
        self.pos += len(out)
        return out

    async def _anext_batch(self, sched: datetime | None) -> list[Any]:
        await anyio.lowlevel.checkpoint()
        if self.pos >= len(self.items):
            raise StopAsyncIteration
        out = self.items[self.pos : self.pos + self.owner.batch_size]
        self.pos += len(out)
        return out

    def snapshot(self) -> int:
        return self.pos

    def close(self) -> None:
        self.owner.closed.append(self.name)


class PartsSource(FixedPartitionedSource[Any, int]):
    def __init__(self, parts: dict[str, list[Any]], batch_size: int = 2, is_async: bool = False):
        self.parts = parts
        self.batch_size = batch_size
        self.is_async = is_async
        self.built: list[tuple[datetime, str, Any]] = []
        self.closed: list[str] = []

    def list_parts(self) -> list[str]:
        return list(self.parts)

    def build_part(self, now: datetime, for_part: str, resume_state: int | None) -> _Part:
        self.built.append((now, for_part, resume_state))
        return _Part(self, for_part, self.is_async)


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
    await _run(flow, workers=workers)
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
    await _run(flow, workers=4)
    assert sorted(out) == sorted(x for items in parts.values() for x in items)
    assert sorted(source.closed) == ["part0", "part1"]


@pytest.mark.asyncio
async def test_fixed_partitioned_source_with_no_partitions() -> None:
    source = PartsSource({})
    out: list[str] = []
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", TestingSink(out))
    await _run(flow)
    assert out == []


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
    await _run(flow, workers=3)
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


# -- fixed partitioned sinks -------------------------------------------------------------


class _KVPart(StatefulSinkPartition[Any, int]):
    def __init__(self, owner: KVSink, name: str) -> None:
        self.owner = owner
        self.name = name

    async def write_batch(self, values: list[Any]) -> None:
        await anyio.lowlevel.checkpoint()
        self.owner.written.setdefault(self.name, []).extend(values)

    def snapshot(self) -> int:
        return len(self.owner.written.get(self.name, []))

    def close(self) -> None:
        self.owner.closed.append(self.name)


class KVSink(FixedPartitionedSink[Any, int]):
    def __init__(self, names: list[str], *, route: bool = True) -> None:
        self.names = names
        self.route = route
        self.built: list[tuple[str, Any]] = []
        self.written: dict[str, list[Any]] = {}
        self.closed: list[str] = []

    def list_parts(self) -> list[str]:
        return self.names

    def part_fn(self, item_key: str) -> int:
        if not self.route:
            return super().part_fn(item_key)
        if item_key == "explode":
            raise LookupError("no route")
        return int(item_key.removeprefix("k"))

    def build_part(self, for_part: str, resume_state: int | None) -> _KVPart:
        self.built.append((for_part, resume_state))
        return _KVPart(self, for_part)


@pytest.mark.asyncio
async def test_fixed_partitioned_sink_routes_by_part_fn() -> None:
    items = [("k0", "a"), ("k1", "b"), ("k2", "c"), ("k4", "d"), ("k3", "e"), ("k0", "f")]
    sink = KVSink(["p0", "p1", "p2"])
    after: list[Any] = []
    flow = Dataflow()
    flow.input("inp", TestingSource(items, 2))
    flow.output("out", sink)
    flow.output("after", TestingSink(after))
    await _run(flow)
    # part_fn's index is taken modulo the partition count; values only are written.
    assert sink.written == {"p0": ["a", "e", "f"], "p1": ["b", "d"], "p2": ["c"]}
    assert sorted(sink.built) == [("p0", None), ("p1", None), ("p2", None)]
    assert sorted(sink.closed) == ["p0", "p1", "p2"]
    # The output passes the (key, value) items on unchanged.
    assert after == items


@pytest.mark.asyncio
async def test_fixed_partitioned_sink_default_part_fn_is_stable_crc32() -> None:
    keys = [f"key-{i}" for i in range(30)]
    sink = KVSink(["a", "b", "c", "d"], route=False)
    flow = Dataflow()
    flow.input("inp", TestingSource([(k, k) for k in keys], 7))
    flow.output("out", sink)
    await _run(flow)
    expected: dict[str, list[str]] = {}
    for k in keys:
        expected.setdefault(sink.names[crc32(k.encode()) % 4], []).append(k)
    assert sink.written == expected


@pytest.mark.asyncio
async def test_fixed_partitioned_sink_each_partition_built_once_across_workers() -> None:
    """Like a source partition, a sink partition lives on exactly one worker."""
    items = [(f"k{i % 3}", i) for i in range(12)]
    parts = {"p0": items[:6], "p1": items[6:]}

    class KVSource(PartsSource):
        pass

    sink = KVSink(["p0", "p1", "p2"])
    flow = Dataflow()
    flow.input("inp", KVSource(parts))
    flow.output("out", sink)
    await _run(flow, workers=2)
    assert {name: sorted(vs) for name, vs in sink.written.items()} == {
        "p0": [0, 3, 6, 9],
        "p1": [1, 4, 7, 10],
        "p2": [2, 5, 8, 11],
    }
    assert sorted(sink.built) == [("p0", None), ("p1", None), ("p2", None)]
    assert sorted(sink.closed) == ["p0", "p1", "p2"]


@pytest.mark.asyncio
@pytest.mark.parametrize("bad", [("k1",), ["k1", 2], (1, 2), "k1", ("k1", 2, 3)], ids=repr)
async def test_fixed_partitioned_sink_bad_item(bad: Any) -> None:
    sink = KVSink(["p0", "p1"])
    flow = Dataflow()
    flow.input("inp", TestingSource([("k0", 1), ("k1", 2), bad, ("k0", 3)], 4))
    flow.output("kv_out", sink)
    with pytest.raises(TypeError) as info:
        await _run(flow)
    assert "'kv_out'" in str(info.value)
    assert repr(bad) in str(info.value)
    # What came before the bad item was written.
    assert sink.written == {"p0": [1], "p1": [2]}
    assert sorted(sink.closed) == ["p0", "p1"]


@pytest.mark.asyncio
async def test_fixed_partitioned_sink_part_fn_raises() -> None:
    sink = KVSink(["p0", "p1"])
    flow = Dataflow()
    flow.input("inp", TestingSource([("k0", 1), ("explode", 2), ("k1", 3)], 4))
    flow.output("kv_out", sink)
    with pytest.raises(LookupError) as info:
        await _run(flow)
    assert any("'kv_out'" in n and "part_fn" in n for n in info.value.__notes__)
    assert sink.written == {"p0": [1]}
    assert sorted(sink.closed) == ["p0", "p1"]


# -- next_awake and back-off on the virtual clock -----------------------------------------


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
    with _clock(clock):
        await _run(flow, VIRTUAL_WATCHDOG)
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
    with _clock(clock):
        await _run(flow, VIRTUAL_WATCHDOG)
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
    with _clock("loop"):
        await _run(flow, VIRTUAL_WATCHDOG)
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
        await _run(flow)
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
    await _run(flow)
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
    await _run(flow, workers=workers)
    expected = [n for w in range(workers) for n in range(1, 4 + w)]
    assert sorted(out) == sorted(expected)
    assert [p.calls_after_end for p in source.parts] == [1] * workers


# -- async sources and sinks -------------------------------------------------------------


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
    await _run(flow)
    assert received == [2, -2, 4, -4, 6, -6]


# -- SimplePollingSource -------------------------------------------------------------------


class Poller(SimplePollingSource[Any]):
    def __init__(self, results: list[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.results = list(results)
        self.calls: list[float] = []

    def next_item(self) -> Any:
        self.calls.append(anyio.current_time())
        result = self.results.pop(0) if self.results else None
        if isinstance(result, Exception):
            raise result
        return result


class AsyncPoller(Poller):
    async def next_item(self) -> Any:  # type: ignore[override]
        await anyio.lowlevel.checkpoint()
        return super().next_item()


async def _poll(source: Poller, seconds: float) -> tuple[list[float], list[Any]]:
    out: list[Any] = []
    flow = Dataflow()
    flow.input("poll", source)
    flow.output("out", TestingSink(out))
    start = anyio.current_time()
    with anyio.move_on_after(seconds):
        await aiowax.run(flow)
    return [t - start for t in source.calls], out


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("cls", [Poller, AsyncPoller], ids=["sync", "async"])
@pytest.mark.parametrize("clock", ["default", "loop"])
async def test_simple_polling_source_interval(cls: type[Poller], clock: str) -> None:
    source = cls(["a", None, "b", "c"], interval=timedelta(seconds=10))
    with _clock(clock):
        times, out = await _poll(source, 35)
    assert times == pytest.approx([0, 10, 20, 30], abs=1e-6)
    assert out == ["a", "b", "c"]


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("clock", ["default", "loop"])
async def test_simple_polling_source_retry(clock: str) -> None:
    retry = SimplePollingSource.Retry
    source = Poller(
        [
            retry(timedelta(seconds=2)),
            retry(timedelta(seconds=3)),
            "a",
            retry(timedelta(seconds=1)),
            "b",
        ],
        interval=timedelta(minutes=1),
    )
    with _clock(clock):
        times, out = await _poll(source, 200)
    # 0: retry in 2 s; 2: retry in 3 s; 5: "a", next in 60 s; 65: retry in 1 s; 66: "b"; 126...
    assert times == pytest.approx([0, 2, 5, 65, 66, 126, 186], abs=1e-6)
    assert out == ["a", "b"]


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("offset", [3, -7, -3607], ids=["ahead", "behind", "long-ago"])
@pytest.mark.parametrize("clock", ["default", "loop"])
async def test_simple_polling_source_align_to(clock: str, offset: int) -> None:
    """Calls happen at ``align_to + k * interval`` only, the first one included."""
    with _clock(clock) as start:
        align_to = start + timedelta(seconds=offset)
        source = Poller(["x", "y"], interval=timedelta(seconds=10), align_to=align_to)
        times, out = await _poll(source, 30)
    assert times == pytest.approx([3, 13, 23], abs=1e-6)
    assert out == ["x", "y"]


def test_simple_polling_source_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="interval"):
        Poller([], interval=timedelta(0))
    with pytest.raises(TypeError, match="interval"):
        Poller([], interval=10)
    with pytest.raises(ValueError, match="align_to"):
        Poller([], interval=timedelta(seconds=1), align_to=datetime(2024, 1, 1))


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_simple_polling_source_error_stops_the_flow() -> None:
    source = Poller(["a", KeyError("gone")], interval=timedelta(seconds=5))
    out: list[Any] = []
    flow = Dataflow()
    flow.input("poll", source)
    flow.output("out", TestingSink(out))
    with pytest.raises(KeyError) as info:
        await _run(flow, VIRTUAL_WATCHDOG)
    assert any("'poll'" in n for n in info.value.__notes__)
    assert out == ["a"]


# -- batch helpers ---------------------------------------------------------------------------


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


@pytest.mark.asyncio
async def test_batch_async_in_a_source() -> None:
    """``batch_async`` is how an async iterator becomes a partition's batches."""

    async def numbers() -> AsyncIterator[int]:
        for i in range(10):
            await anyio.lowlevel.checkpoint()
            yield i

    class Part(StatelessSourcePartition[int]):
        def __init__(self) -> None:
            self.it = batch_async(numbers(), timedelta(seconds=1), 4)

        async def next_batch(self, sched: datetime | None) -> list[int]:
            return await self.it.__anext__()

    class Source(DynamicSource[int]):
        def build(self, now: datetime, worker_index: int, worker_count: int) -> Part:
            return Part()

    out: list[int] = []
    flow = Dataflow()
    flow.input("inp", Source())
    flow.output("out", TestingSink(out))
    await _run(flow)
    assert out == list(range(10))


# -- a partition waiting for its next_awake does not hold the others back ------------


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

"""Keyed state and workers: stateful_map, reduce, batch, redistribute, routing."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import aiowax
from aiowax._engine.context import RunContext
from aiowax._keys import key_owner
from aiowax.dataflow import Dataflow
from aiowax.inputs import (
    DynamicSource,
    FixedPartitionedSource,
    StatefulSourcePartition,
    StatelessSourcePartition,
)
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.testing import TestingSink, TestingSource, cluster_main
from observing import observe_runs

WATCHDOG = 5
#: On the virtual clock a watchdog counts loop time, which jumps.
VIRTUAL_WATCHDOG = 36_000


async def _run(flow: Dataflow, workers: int = 1, watchdog: float = WATCHDOG, **kw: Any) -> None:
    with anyio.fail_after(watchdog):
        await aiowax.run(flow, workers=workers, **kw)


def _flow(
    items: list[Any], add: Callable[[Dataflow], None], batch_size: int = 1
) -> tuple[Dataflow, list[Any]]:
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", TestingSource(items, batch_size))
    add(flow)
    flow.output("out", TestingSink(out))
    return flow, out


@contextmanager
def _observe() -> Iterator[list[RunContext]]:
    """Collect the context of every run started inside the block."""
    with observe_runs() as seen:
        yield seen


class Boom(Exception):
    pass


# -- sources and sinks for these tests -----------------------------------------------


class _TimedPart(StatelessSourcePartition[Any]):
    """Yields each batch at its loop time, then ends at ``end``."""

    def __init__(self, schedule: list[tuple[float, list[Any]]], end: float) -> None:
        self.schedule = list(schedule)
        self.end = end
        self.calls: list[float] = []

    async def next_batch(self, sched: datetime | None) -> list[Any]:
        loop = asyncio.get_running_loop()
        self.calls.append(loop.time())
        if not self.schedule:
            await anyio.sleep(self.end - loop.time())
            raise StopAsyncIteration
        at, items = self.schedule.pop(0)
        if at > loop.time():
            await anyio.sleep(at - loop.time())
        return items


class TimedSource(DynamicSource[Any]):
    """On worker 0 only: ``items`` at the given loop times (seconds)."""

    def __init__(self, schedule: list[tuple[float, list[Any]]], end: float) -> None:
        self.schedule = schedule
        self.end = end
        self.parts: list[_TimedPart] = []

    def build(self, now: datetime, worker_index: int, worker_count: int) -> _TimedPart:
        part = _TimedPart(self.schedule if worker_index == 0 else [], self.end)
        self.parts.append(part)
        return part


class _AsyncListPart(StatefulSourcePartition[Any, None]):
    def __init__(self, batches: list[list[Any]], closed: list[str]) -> None:
        self.batches = list(batches)
        self.closed = closed

    async def next_batch(self, sched: datetime | None) -> list[Any]:
        await anyio.lowlevel.checkpoint()
        if not self.batches:
            raise StopAsyncIteration
        return self.batches.pop(0)

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        self.closed.append("p")


class AsyncBatchesSource(FixedPartitionedSource[Any, None]):
    """One partition; an async next_batch returning the given batches as they are."""

    def __init__(self, batches: list[list[Any]]) -> None:
        self.batches = batches
        self.closed: list[str] = []

    def list_parts(self) -> list[str]:
        return ["p"]

    def build_part(self, now: datetime, for_part: str, resume_state: None) -> _AsyncListPart:
        return _AsyncListPart(self.batches, self.closed)


class _TrackedSinkPart(StatelessSinkPartition[Any]):
    def __init__(self, owner: TrackedSink, worker: int) -> None:
        self.owner = owner
        self.worker = worker

    def write_batch(self, items: list[Any]) -> None:
        self.owner.items.extend(items)

    def close(self) -> None:
        self.owner.closed.append(self.worker)


class TrackedSink(DynamicSink[Any]):
    def __init__(self) -> None:
        self.items: list[Any] = []
        self.built: list[int] = []
        self.closed: list[int] = []

    def build(self, worker_index: int, worker_count: int) -> _TrackedSinkPart:
        self.built.append(worker_index)
        return _TrackedSinkPart(self, worker_index)


# -- stateful_map -----------------------------------------------------------------------


SM_ITEMS = [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5), ("a", 6)]


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("flavor", ["sync", "async-builder", "async-mapper", "async-both"])
async def test_stateful_map_builder_called_without_args_once_per_new_key(
    workers: int, flavor: str
) -> None:
    built: list[tuple[Any, Any]] = []

    def builder(*args: Any, **kwargs: Any) -> int:
        built.append((args, kwargs))
        return 0  # a falsy state is still a state

    async def abuilder() -> int:
        await anyio.lowlevel.checkpoint()
        return builder()

    def mapper(total: int, x: int) -> tuple[int, int]:
        return total + x, total + x

    async def amapper(total: int, x: int) -> tuple[int, int]:
        await anyio.lowlevel.checkpoint()
        return mapper(total, x)

    b = abuilder if flavor in ("async-builder", "async-both") else builder
    m = amapper if flavor in ("async-mapper", "async-both") else mapper
    flow, out = _flow(SM_ITEMS, lambda f: f.stateful_map("sm", b, m), batch_size=2)
    await _run(flow, workers)
    assert built == [((), {})] * 3
    assert sorted(out) == sorted([("a", 1), ("b", 2), ("a", 4), ("c", 4), ("b", 7), ("a", 10)])
    if workers == 1:
        assert out == [("a", 1), ("b", 2), ("a", 4), ("c", 4), ("b", 7), ("a", 10)]


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_stateful_map_none_state_drops_the_key(workers: int, is_async: bool) -> None:
    built: list[str] = []
    items = [("a", 1), ("b", 10), ("a", "stop"), ("a", 2), ("b", "stop"), ("b", 20), ("a", 3)]

    def builder() -> list[Any]:
        built.append("new")
        return []

    def mapper(state: list[Any], x: Any) -> tuple[Any, Any]:
        if x == "stop":
            return None, ("dropped", list(state))
        state.append(x)
        return state, list(state)

    async def amapper(state: list[Any], x: Any) -> tuple[Any, Any]:
        await anyio.lowlevel.checkpoint()
        return mapper(state, x)

    flow, out = _flow(
        items, lambda f: f.stateful_map("sm", builder, amapper if is_async else mapper), 3
    )
    with _observe() as runs:
        await _run(flow, workers)
    expected = {
        "a": [[1], ("dropped", [1]), [2], [2, 3]],
        "b": [[10], ("dropped", [10]), [20]],
    }
    assert {k: [v for kk, v in out if kk == k] for k in "ab"} == expected
    # Once per key at first, and again after each drop.
    assert len(built) == 4
    (ctx,) = runs
    assert sum(ctx.graph.operators[("sm", w)].state_size() for w in range(workers)) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("bad", [42, None, ("s",), ("s", 1, 2), ["s", 1]], ids=repr)
async def test_stateful_map_mapper_must_return_a_pair(is_async: bool, bad: Any) -> None:
    def mapper(state: int, x: int) -> Any:
        return bad if x == 3 else (state + x, x)

    async def amapper(state: int, x: int) -> Any:
        await anyio.lowlevel.checkpoint()
        return mapper(state, x)

    items = [("k", 1), ("k", 2), ("k", 3), ("k", 4)]
    flow, out = _flow(
        items, lambda f: f.stateful_map("the_sm", lambda: 0, amapper if is_async else mapper), 4
    )
    with pytest.raises(TypeError) as info:
        await _run(flow)
    assert "'the_sm'" in str(info.value)
    assert repr(bad) in str(info.value)
    # What came before the bad result was written.
    assert out == [("k", 1), ("k", 2)]


BAD_ITEMS = ["abc", (1, 2), ("k", 1, 2), ("k",), ["k", 1], (b"k", 1), None, 7]


def _add_keyed(kind: str, is_async: bool = False) -> Callable[[Dataflow], None]:
    async def amapper(s: Any, x: Any) -> tuple[Any, Any]:
        await anyio.lowlevel.checkpoint()
        return s, x

    async def areducer(a: Any, b: Any) -> Any:
        await anyio.lowlevel.checkpoint()
        return a

    def add(f: Dataflow) -> None:
        if kind == "stateful_map":
            f.stateful_map("keyed", lambda: 0, amapper if is_async else (lambda s, x: (s, x)))
        elif kind == "reduce":
            f.reduce("keyed", areducer if is_async else (lambda a, b: a), lambda a: True)
        else:
            f.batch("keyed", 1, timedelta(hours=1))

    return add


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize(
    ("kind", "is_async"),
    [
        ("stateful_map", False),
        ("stateful_map", True),
        ("reduce", False),
        ("reduce", True),
        ("batch", False),
    ],
    ids=["stateful_map", "stateful_map-async", "reduce", "reduce-async", "batch"],
)
@pytest.mark.parametrize("bad", BAD_ITEMS, ids=repr)
async def test_keyed_steps_reject_items_that_are_not_str_keyed_pairs(
    workers: int, kind: str, is_async: bool, bad: Any
) -> None:
    items = [("a", 1), bad, ("b", 2)]
    flow, out = _flow(items, _add_keyed(kind, is_async), batch_size=3)
    with pytest.raises(TypeError) as info:
        await _run(flow, workers)
    message = str(info.value)
    assert "'keyed'" in message
    assert repr(bad) in message
    # The item before the bad one got through; nothing after it did.
    expected = [("a", [1])] if kind == "batch" else [("a", 1)]
    assert out == expected


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 3])
async def test_bad_item_after_a_map_names_the_keyed_step(workers: int) -> None:
    flow, out = _flow(
        ["a", "bb", "ccc"],
        lambda f: (
            f.map("to_pairs", lambda s: (s, len(s)) if s != "bb" else s),
            f.stateful_map("keyed", lambda: 0, lambda s, x: (s, x)),
        ),
        batch_size=3,
    )
    with pytest.raises(TypeError, match=r"'keyed'.*'bb'"):
        await _run(flow, workers)
    assert out == [("a", 1)]


def _check_prefixes(items: list[tuple[str, int]], out: list[tuple[str, list[int]]]) -> None:
    by_key: dict[str, list[int]] = defaultdict(list)
    for k, v in items:
        by_key[k].append(v)
    seen: dict[str, list[list[int]]] = defaultdict(list)
    for k, emitted in out:
        seen[k].append(emitted)
    assert set(seen) == set(by_key)
    for k, values in by_key.items():
        assert seen[k] == [values[: i + 1] for i in range(len(values))]


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 4])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize(
    ("batch_size", "epoch_interval"),
    [(1, None), (7, None), (500, None), (7, timedelta(0))],
    ids=["1", "7", "500", "7-epoch-per-batch"],
)
async def test_stateful_map_keeps_per_key_order(
    workers: int, is_async: bool, batch_size: int, epoch_interval: timedelta | None
) -> None:
    items = [(f"k{(i * 7) % 13}", i) for i in range(300)]

    def mapper(state: list[int], x: int) -> tuple[list[int], list[int]]:
        state.append(x)
        return state, list(state)

    async def amapper(state: list[int], x: int) -> tuple[list[int], list[int]]:
        # Later items of a batch finish first when run at once.
        for _ in range(x % 3):
            await anyio.lowlevel.checkpoint()
        return mapper(state, x)

    flow, out = _flow(
        items, lambda f: f.stateful_map("sm", list, amapper if is_async else mapper), batch_size
    )
    await _run(flow, workers, epoch_interval=epoch_interval)
    _check_prefixes(items, out)
    if workers == 1:
        # One worker: the output is in input order too.
        assert [len(v) for _, v in out] == [
            Counter(k for k, _ in items[: i + 1])[items[i][0]] for i in range(len(items))
        ]


class _KeyTracker:
    """Checks per-key sequencing of an async mapper and forces keys to overlap.

    Every call of round ``r`` waits until ``overlap`` distinct keys have a
    call of that round in flight: possible only if different keys run at once.
    """

    def __init__(self, overlap: int) -> None:
        self.overlap = overlap
        self.in_flight: Counter[str] = Counter()
        self.peak_per_key = 0
        self.calls: dict[str, list[int]] = defaultdict(list)
        self.round_keys: dict[int, set[str]] = defaultdict(set)
        self.round_events: dict[int, anyio.Event] = defaultdict(anyio.Event)

    async def mapper(self, state: list[int], value: tuple[str, int, int]) -> Any:
        key, round_, i = value
        self.in_flight[key] += 1
        self.peak_per_key = max(self.peak_per_key, self.in_flight[key])
        self.calls[key].append(i)
        self.round_keys[round_].add(key)
        if len(self.round_keys[round_]) >= self.overlap:
            self.round_events[round_].set()
        await self.round_events[round_].wait()
        await anyio.lowlevel.checkpoint()
        self.in_flight[key] -= 1
        state.append(i)
        return state, i


def _rounds(keys: int, rounds: int) -> list[tuple[str, tuple[str, int, int]]]:
    items = []
    i = 0
    for r in range(rounds):
        for k in range(keys):
            key = f"key{k}"
            items.append((key, (key, r, i)))
            i += 1
    return items


@pytest.mark.asyncio
async def test_async_stateful_map_sequential_per_key_concurrent_across_keys_in_a_batch() -> None:
    keys, rounds = 6, 5
    items = _rounds(keys, rounds)
    tracker = _KeyTracker(overlap=keys)
    flow, out = _flow(
        items, lambda f: f.stateful_map("sm", list, tracker.mapper), batch_size=len(items)
    )
    await _run(flow)
    assert tracker.peak_per_key == 1
    for k in range(keys):
        assert tracker.calls[f"key{k}"] == [r * keys + k for r in range(rounds)]
    assert out == [(k, v[2]) for k, v in items]
    assert all(event.is_set() for event in tracker.round_events.values())


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 2])
async def test_async_stateful_map_sequential_per_key_across_batches(workers: int) -> None:
    keys, rounds = 4, 6
    items = _rounds(keys, rounds)
    # Keys whose owners put them all on one worker when there are two, so
    # that they can overlap there.
    if workers == 2:
        names = [k for k in (f"n{i}" for i in range(100)) if key_owner(k, 2) == 1][:keys]
        rename = {f"key{k}": names[k] for k in range(keys)}
        items = [(rename[k], (rename[k], r, i)) for k, (_, r, i) in items]
    tracker = _KeyTracker(overlap=keys)
    # One batch per round; batches pile up while the step is busy and may be
    # taken together: per-key order must hold either way.
    batches = [items[r * keys : (r + 1) * keys] for r in range(rounds)]
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", AsyncBatchesSource(batches))
    flow.stateful_map("sm", list, tracker.mapper)
    flow.output("out", TestingSink(out))
    await _run(flow, workers)
    assert tracker.peak_per_key == 1
    for k, calls in tracker.calls.items():
        assert calls == [i for kk, (_, _, i) in items if kk == k]
    assert sorted(out) == sorted((k, v[2]) for k, v in items)


@pytest.mark.asyncio
async def test_async_stateful_map_failure_keeps_outputs_before_it() -> None:
    async def mapper(state: int, x: int) -> tuple[int, int]:
        await anyio.lowlevel.checkpoint()
        if x == 3:
            raise Boom("three")
        return state + x, state + x

    items = [("a", 1), ("b", 2), ("a", 3), ("b", 4)]
    flow, out = _flow(items, lambda f: f.stateful_map("sm", lambda: 0, mapper), 4)
    with pytest.raises(Boom) as info:
        await _run(flow)
    assert "raised in step 'sm' by the stateful_map mapper" in info.value.__notes__
    assert out == [("a", 1), ("b", 2)]


@pytest.mark.asyncio
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_stateful_map_builder_failure_note(is_async: bool) -> None:
    def builder() -> int:
        raise Boom("no state")

    async def abuilder() -> int:
        await anyio.lowlevel.checkpoint()
        raise Boom("no state")

    flow, _ = _flow(
        [("a", 1)],
        lambda f: f.stateful_map("sm", abuilder if is_async else builder, lambda s, x: (s, x)),
    )
    with pytest.raises(Boom) as info:
        await _run(flow)
    assert "raised in step 'sm' by the stateful_map builder" in info.value.__notes__


# -- reduce ---------------------------------------------------------------------------


class _Reduce:
    """Sum until the total reaches ``limit``; records every call."""

    def __init__(self, limit: int, is_async: tuple[bool, bool] = (False, False)) -> None:
        self.limit = limit
        self.reduced: list[tuple[int, int]] = []
        self.checked: list[int] = []
        self.reducer: Callable[..., Any] = self._areducer if is_async[0] else self._reducer
        self.is_complete: Callable[..., Any] = self._acomplete if is_async[1] else self._complete

    def _reducer(self, acc: int, x: int) -> int:
        self.reduced.append((acc, x))
        return acc + x

    async def _areducer(self, acc: int, x: int) -> int:
        await anyio.lowlevel.checkpoint()
        return self._reducer(acc, x)

    def _complete(self, acc: int) -> bool:
        self.checked.append(acc)
        return acc >= self.limit

    async def _acomplete(self, acc: int) -> bool:
        await anyio.lowlevel.checkpoint()
        return self._complete(acc)


REDUCE_FLAVORS = [(False, False), (True, False), (False, True), (True, True)]
REDUCE_IDS = ["sync", "async-reducer", "async-is_complete", "async-both"]


@pytest.mark.asyncio
@pytest.mark.parametrize("is_async", REDUCE_FLAVORS, ids=REDUCE_IDS)
async def test_reduce_single_value_checks_is_complete_without_reducer(
    is_async: tuple[bool, bool],
) -> None:
    r = _Reduce(5, is_async)
    flow, out = _flow([("a", 5)], lambda f: f.reduce("r", r.reducer, r.is_complete))
    await _run(flow)
    assert out == [("a", 5)]
    assert r.reduced == []
    assert r.checked == [5]


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("is_async", REDUCE_FLAVORS, ids=REDUCE_IDS)
async def test_reduce_emits_on_completion_and_forgets_the_key(
    workers: int, is_async: tuple[bool, bool]
) -> None:
    r = _Reduce(10, is_async)
    items = [("a", 4), ("a", 6), ("a", 7), ("a", 3), ("a", 12), ("a", 1)]
    flow, out = _flow(items, lambda f: f.reduce("r", r.reducer, r.is_complete), batch_size=4)
    await _run(flow, workers)
    # After an emission the next value starts a fresh accumulator.
    assert out == [("a", 10), ("a", 10), ("a", 12)]
    assert r.reduced == [(4, 6), (7, 3)]
    assert r.checked == [4, 10, 7, 10, 12, 1]


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("is_async", REDUCE_FLAVORS, ids=REDUCE_IDS)
async def test_reduce_drops_incomplete_accumulators_at_end_of_input(
    workers: int, is_async: tuple[bool, bool]
) -> None:
    r = _Reduce(10, is_async)
    items = [("a", 3), ("b", 9), ("c", 20), ("b", 1), ("a", 3)]
    flow, out = _flow(items, lambda f: f.reduce("r", r.reducer, r.is_complete), batch_size=2)
    await _run(flow, workers)
    assert sorted(out) == [("b", 10), ("c", 20)]


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("bad", [1, 0, None, "yes", [True]], ids=repr)
async def test_reduce_is_complete_must_return_a_bool(
    workers: int, is_async: bool, bad: Any
) -> None:
    def is_complete(acc: int) -> Any:
        return bad if acc == 3 else acc > 100

    async def ais_complete(acc: int) -> Any:
        await anyio.lowlevel.checkpoint()
        return is_complete(acc)

    flow, _ = _flow(
        [("a", 1), ("a", 2)],
        lambda f: f.reduce(
            "the_reduce", lambda a, b: a + b, ais_complete if is_async else is_complete
        ),
        batch_size=2,
    )
    with pytest.raises(TypeError) as info:
        await _run(flow, workers)
    assert "'the_reduce'" in str(info.value)
    assert repr(bad) in str(info.value)


@pytest.mark.asyncio
@pytest.mark.parametrize("role", ["reducer", "is_complete"])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_reduce_user_failure_note(role: str, is_async: bool) -> None:
    def reducer(a: int, b: int) -> int:
        if role == "reducer":
            raise Boom(role)
        return a + b

    def is_complete(acc: int) -> bool:
        if role == "is_complete" and acc == 3:
            raise Boom(role)
        return False

    async def areducer(a: int, b: int) -> int:
        await anyio.lowlevel.checkpoint()
        return reducer(a, b)

    async def ais_complete(acc: int) -> bool:
        await anyio.lowlevel.checkpoint()
        return is_complete(acc)

    flow, _ = _flow(
        [("a", 1), ("a", 2)],
        lambda f: f.reduce(
            "r", areducer if is_async else reducer, ais_complete if is_async else is_complete
        ),
        batch_size=2,
    )
    with pytest.raises(Boom) as info:
        await _run(flow)
    assert f"raised in step 'r' by the reduce {role}" in info.value.__notes__


@pytest.mark.asyncio
async def test_async_reduce_sequential_per_key_concurrent_across_keys() -> None:
    keys = 5
    in_flight: Counter[str] = Counter()
    peak = 0
    started: set[str] = set()
    all_started = anyio.Event()

    async def reducer(acc: tuple[str, int], x: tuple[str, int]) -> tuple[str, int]:
        nonlocal peak
        key = x[0]
        in_flight[key] += 1
        peak = max(peak, in_flight[key])
        started.add(key)
        if len(started) == keys:
            all_started.set()
        await all_started.wait()
        await anyio.lowlevel.checkpoint()
        in_flight[key] -= 1
        return key, acc[1] + x[1]

    items = [(f"k{k}", (f"k{k}", i)) for i in range(4) for k in range(keys)]
    flow, out = _flow(
        items, lambda f: f.reduce("r", reducer, lambda acc: acc[1] == 6), batch_size=len(items)
    )
    await _run(flow)
    assert peak == 1
    assert out == [(f"k{k}", (f"k{k}", 6)) for k in range(keys)]


# -- batch ----------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("batch_size", [1, 3, 100])
async def test_batch_emits_by_size_and_flushes_at_end(workers: int, batch_size: int) -> None:
    items = [("a", i) for i in range(7)] + [("b", i) for i in range(2)]
    flow, out = _flow(items, lambda f: f.batch("b", 3, timedelta(hours=1)), batch_size)
    await _run(flow, workers)
    # No waiting for the hour-long timeout: end of input flushes at once.
    assert sorted(out) == [("a", [0, 1, 2]), ("a", [3, 4, 5]), ("a", [6]), ("b", [0, 1])]
    assert [v for k, v in out if k == "a"] == [[0, 1, 2], [3, 4, 5], [6]]


def _record_times(flow: Dataflow, seen: list[tuple[float, Any]]) -> None:
    def stamp(item: Any) -> Any:
        seen.append((asyncio.get_running_loop().time(), item))
        return item

    flow.map("stamp", stamp)


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("workers", [1, 2])
async def test_batch_timeout_on_the_virtual_clock(workers: int) -> None:
    source = TimedSource([(0, [("k", 1)])], end=600)
    seen: list[tuple[float, Any]] = []
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", source)
    flow.batch("b", 100, timedelta(minutes=5))
    _record_times(flow, seen)
    flow.output("out", TestingSink(out))
    assert asyncio.get_running_loop().time() == 0
    await _run(flow, workers, VIRTUAL_WATCHDOG)
    assert source.parts[0].calls[0] == 0.0
    assert seen == [(300.0, ("k", [1]))]
    assert out == [("k", [1])]
    # The run lasted until the source ended, not longer.
    assert asyncio.get_running_loop().time() == 600.0


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_batch_timeout_counts_from_the_first_item_of_the_list() -> None:
    source = TimedSource(
        [(0, [("a", 1)]), (200, [("a", 2)]), (350, [("a", 3)]), (400, [("a", 4)])], end=1000
    )
    seen: list[tuple[float, Any]] = []
    flow = Dataflow()
    flow.input("inp", source)
    flow.batch("b", 100, timedelta(seconds=300))
    _record_times(flow, seen)
    flow.output("out", TestingSink([]))
    await _run(flow, 1, VIRTUAL_WATCHDOG)
    assert seen == [(300.0, ("a", [1, 2])), (650.0, ("a", [3, 4]))]


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("workers", [1, 3])
async def test_batch_keys_are_independent(workers: int) -> None:
    source = TimedSource(
        [
            (0, [("a", 1)]),
            (100, [("b", 1)]),
            (150, [("a", 2)]),  # a is full: out at once; b keeps waiting
            (200, [("a", 3)]),  # a new list for a, due at 500
        ],
        end=1000,
    )
    seen: list[tuple[float, Any]] = []
    flow = Dataflow()
    flow.input("inp", source)
    flow.batch("b", 2, timedelta(seconds=300))
    _record_times(flow, seen)
    flow.output("out", TestingSink([]))
    await _run(flow, workers, VIRTUAL_WATCHDOG)
    assert seen == [(150.0, ("a", [1, 2])), (400.0, ("b", [1])), (500.0, ("a", [3]))]


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_batch_end_of_input_flushes_before_timeout() -> None:
    source = TimedSource([(0, [("a", 1), ("b", 2)]), (10, [("a", 3)])], end=60)
    seen: list[tuple[float, Any]] = []
    flow = Dataflow()
    flow.input("inp", source)
    flow.batch("b", 100, timedelta(minutes=5))
    _record_times(flow, seen)
    flow.output("out", TestingSink([]))
    await _run(flow, 1, VIRTUAL_WATCHDOG)
    assert sorted(seen) == [(60.0, ("a", [1, 3])), (60.0, ("b", [2]))]


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_batch_zero_timeout_emits_each_input_batch() -> None:
    source = TimedSource([(0, [("a", 1), ("a", 2)]), (5, [("a", 3)])], end=10)
    seen: list[tuple[float, Any]] = []
    flow = Dataflow()
    flow.input("inp", source)
    flow.batch("b", 100, timedelta(0))
    _record_times(flow, seen)
    flow.output("out", TestingSink([]))
    await _run(flow, 1, VIRTUAL_WATCHDOG)
    assert seen == [(0.0, ("a", [1, 2])), (5.0, ("a", [3]))]


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
    _record_times(flow, seen)
    flow.output("out", TestingSink([]))
    await _run(flow, workers, VIRTUAL_WATCHDOG)
    assert seen == [(0.0, ("a", 1)), (100.0, ("b", 1)), (150.0, ("a", 3)), (200.0, ("b", 3))]
    # Worker 0's partition was asked for more as soon as it returned a batch.
    assert source.parts[0].calls == [0.0, 0.0, 100.0, 150.0, 200.0]


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 3])
async def test_bad_item_in_batch_step_raises_type_error_and_closes(workers: int) -> None:
    source = AsyncBatchesSource([[("a", 1), ("b", 2)], [("a", 3), 4, ("b", 5)], [("a", 6)]])
    sink = TrackedSink()
    flow = Dataflow()
    flow.input("inp", source)
    flow.batch("the_batch", 2, timedelta(hours=1))
    flow.output("out", sink)
    with pytest.raises(TypeError, match=r"'the_batch'.*got 4"):
        await _run(flow, workers)
    # a's list was full before the bad item: it was written.
    assert sink.items == [("a", [1, 3])]
    assert sorted(sink.closed) == list(range(workers))
    assert source.closed == ["p"]


class _SlowSinkPart(StatelessSinkPartition[Any]):
    def __init__(self, owner: SlowSink) -> None:
        self.owner = owner

    async def write_batch(self, items: list[Any]) -> None:
        await anyio.sleep(5)
        self.owner.items.extend(items)

    def close(self) -> None:
        self.owner.closed += 1


class SlowSink(DynamicSink[Any]):
    def __init__(self) -> None:
        self.items: list[Any] = []
        self.closed = 0

    def build(self, worker_index: int, worker_count: int) -> _SlowSinkPart:
        return _SlowSinkPart(self)


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("kind", ["stateful_map", "batch"])
async def test_failure_after_keyed_step_reaches_caller_while_sink_is_slow(kind: str) -> None:
    """The keyed step keeps sending to the failed step meanwhile: still the user's error."""

    def check(kv: tuple[str, Any]) -> tuple[str, Any]:
        if kv[1] == [3]:
            raise Boom("three")
        return kv

    sink = SlowSink()
    flow = Dataflow()
    flow.input("inp", TestingSource([("a", i) for i in range(500)]))
    if kind == "batch":
        flow.batch("keyed", 1, timedelta(hours=1))
    else:
        flow.stateful_map("keyed", lambda: 0, lambda s, x: (s, [x]))
    flow.map("check", check)
    flow.output("out", sink)
    with pytest.raises(Boom) as info:
        await _run(flow, 1, VIRTUAL_WATCHDOG, epoch_interval=timedelta(0))
    assert "raised in step 'check' by the map mapper" in info.value.__notes__
    assert sink.items == [("a", [0]), ("a", [1]), ("a", [2])]
    assert sink.closed == 1


# -- the same output for any worker count ----------------------------------------------


CHAIN_ITEMS = [(f"k{(i * 5) % 11}", i) for i in range(200)]


def _add_running_sum(f: Dataflow) -> None:
    f.stateful_map("sm", lambda: 0, lambda s, x: (s + x, s + x))


def _add_reduce(f: Dataflow) -> None:
    # (count, total), complete after every third value of a key.
    f.map("one", lambda kv: (kv[0], (1, kv[1])))
    f.reduce("r", lambda a, b: (a[0] + b[0], a[1] + b[1]), lambda acc: acc[0] == 3)


def _add_batch(f: Dataflow) -> None:
    f.batch("b", 4, timedelta(hours=1))


def _add_chain(f: Dataflow) -> None:
    _add_running_sum(f)
    f.map("parity", lambda kv: (kv[0], (1, kv[1] % 2)))
    f.reduce("r", lambda a, b: (a[0] + b[0], a[1] + b[1]), lambda acc: acc[0] == 2)
    f.batch("b", 3, timedelta(hours=1))
    f.stateful_map("last", lambda: None, lambda s, x: (None if len(x) < 3 else x, (s, x)))


def _canon(items: list[Any]) -> list[Any]:
    """Sorted, whatever the item types (None and lists do not compare)."""
    return sorted(items, key=repr)


def _expected(add: Callable[[Dataflow], None]) -> list[Any]:
    """Compute the output with a plain-Python model of the operators."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for k, v in CHAIN_ITEMS:
        by_key[k].append(v)

    def running(vs: list[int]) -> list[int]:
        out, total = [], 0
        for v in vs:
            total += v
            out.append(total)
        return out

    def chunks(vs: list[Any], n: int) -> list[list[Any]]:
        return [vs[i : i + n] for i in range(0, len(vs), n)]

    out: list[Any] = []
    for k, vs in by_key.items():
        if add is _add_running_sum:
            out += [(k, s) for s in running(vs)]
        elif add is _add_reduce:
            out += [(k, (3, sum(c))) for c in chunks(vs, 3) if len(c) == 3]
        elif add is _add_batch:
            out += [(k, c) for c in chunks(vs, 4)]
        else:
            pairs = [(2, sum(s % 2 for s in c)) for c in chunks(running(vs), 2) if len(c) == 2]
            state = None
            for c in chunks(pairs, 3):
                out.append((k, (state, c)))
                state = None if len(c) < 3 else c
    return _canon(out)


CHAINS = {
    "stateful_map": _add_running_sum,
    "reduce": _add_reduce,
    "batch": _add_batch,
    "chain": _add_chain,
}


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 2, 4])
@pytest.mark.parametrize("name", list(CHAINS))
@pytest.mark.parametrize(
    ("batch_size", "epoch_interval"),
    [(1, None), (16, None), (5, timedelta(0))],
    ids=["1", "16", "5-epoch-per-batch"],
)
async def test_same_output_for_any_worker_count_run(
    name: str, workers: int, batch_size: int, epoch_interval: timedelta | None
) -> None:
    add = CHAINS[name]
    flow, out = _flow(CHAIN_ITEMS, add, batch_size)
    await _run(flow, workers, epoch_interval=epoch_interval)
    assert _canon(out) == _expected(add)


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 2, 4])
async def test_keys_that_are_not_valid_utf8_work_with_any_worker_count(workers: int) -> None:
    keys = ["caf\udce9", "\ud800", "ok", "é"]
    items = [(k, i) for i in range(3) for k in keys]
    flow, out = _flow(items, _add_running_sum, batch_size=4)
    await _run(flow, workers)
    # Running sums of 0, 1, 2 per key, in order.
    assert {k: [s for kk, s in out if kk == k] for k in keys} == {k: [0, 1, 3] for k in keys}


@pytest.mark.parametrize("workers", [1, 2, 4])
@pytest.mark.parametrize("name", list(CHAINS))
def test_same_output_for_any_worker_count_cluster_main(name: str, workers: int) -> None:
    add = CHAINS[name]
    flow, out = _flow(CHAIN_ITEMS, add, 8)
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    assert _canon(out) == _expected(add)


def test_expected_model_is_not_trivial() -> None:
    # Guard the model itself: every chain emits something, the chain ends in
    # both kinds of state of its last step.
    for add in CHAINS.values():
        assert len(_expected(add)) > 10
    chain = _expected(_add_chain)
    assert any(s is None for _, (s, _) in chain)
    assert any(s is not None for _, (s, _) in chain)


# -- redistribute and inspect_worker ---------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("epoch_interval", [None, timedelta(0)], ids=["default", "each-batch"])
async def test_redistribute_reaches_every_worker(epoch_interval: timedelta | None) -> None:
    seen: list[tuple[int, int]] = []
    flow, out = _flow(
        list(range(30)),
        lambda f: (f.redistribute(), f.inspect_worker(lambda x, w: seen.append((x, w)))),
    )
    await _run(flow, 3, epoch_interval=epoch_interval)
    assert {w for _, w in seen} == {0, 1, 2}
    assert sorted(x for x, _ in seen) == list(range(30))
    assert sorted(out) == list(range(30))


@pytest.mark.asyncio
async def test_without_redistribute_a_single_partition_stays_on_worker_zero() -> None:
    seen: list[tuple[int, int]] = []
    flow, out = _flow(list(range(30)), lambda f: f.inspect_worker(lambda x, w: seen.append((x, w))))
    await _run(flow, 3)
    assert seen == [(x, 0) for x in range(30)]
    assert out == list(range(30))


@pytest.mark.asyncio
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_inspect_worker_gets_item_and_worker_index(is_async: bool) -> None:
    seen: list[tuple[Any, int]] = []

    def inspector(item: Any, worker: int) -> None:
        seen.append((item, worker))

    async def ainspector(item: Any, worker: int) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append((item, worker))

    flow, out = _flow(
        ["x", "y", "z"], lambda f: f.inspect_worker(ainspector if is_async else inspector)
    )
    await _run(flow)
    assert seen == [("x", 0), ("y", 0), ("z", 0)]
    assert out == ["x", "y", "z"]


@pytest.mark.asyncio
async def test_redistribute_with_one_worker_passes_through() -> None:
    seen: list[tuple[int, int]] = []
    flow, out = _flow(
        list(range(10)),
        lambda f: (f.redistribute(), f.inspect_worker(lambda x, w: seen.append((x, w)))),
        batch_size=3,
    )
    await _run(flow, 1)
    assert seen == [(x, 0) for x in range(10)]
    assert out == list(range(10))


# -- routing by the stable hash --------------------------------------------------------


ROUTED_KEYS = ["a", "b", "c", "d", "key", "user-42", "é"] + [f"k{i}" for i in range(20)]


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["stateful_map", "reduce", "batch"])
async def test_keys_routed_to_their_stable_owner(kind: str) -> None:
    seen: dict[str, set[int]] = defaultdict(set)
    items = [(k, i) for i in range(3) for k in ROUTED_KEYS]

    def add(f: Dataflow) -> None:
        f.redistribute()  # so that keys arrive from every worker
        _add_keyed(kind)(f)
        f.inspect_worker(lambda kv, w: seen[kv[0]].add(w))

    flow, _ = _flow(items, add, batch_size=5)
    await _run(flow, 4)
    assert set(seen) == set(ROUTED_KEYS)
    for k in ROUTED_KEYS:
        assert seen[k] == {key_owner(k, 4)}, k
    # Pinned owners (see test_exchange), and the keys cover every worker.
    assert (seen["a"], seen["b"], seen["d"], seen["é"]) == ({3}, {1}, {0}, {2})
    assert set().union(*seen.values()) == {0, 1, 2, 3}


# -- failures with several workers ------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("batch_size", [1, 10])
async def test_failure_in_stateful_step_with_three_workers(is_async: bool, batch_size: int) -> None:
    def mapper(state: int, x: int) -> tuple[int, int]:
        if x == 25:
            raise Boom("twenty-five")
        return state + x, x

    async def amapper(state: int, x: int) -> tuple[int, int]:
        await anyio.lowlevel.checkpoint()
        return mapper(state, x)

    source = AsyncBatchesSource(
        [[(f"k{i % 6}", i) for i in range(b, b + batch_size)] for b in range(0, 60, batch_size)]
    )
    sink = TrackedSink()
    flow = Dataflow()
    flow.input("inp", source)
    flow.stateful_map("sm", lambda: 0, amapper if is_async else mapper)
    flow.output("out", sink)
    with pytest.raises(Boom, match="twenty-five") as info:
        await _run(flow, 3)
    assert "raised in step 'sm' by the stateful_map mapper" in info.value.__notes__
    assert sorted(sink.built) == [0, 1, 2]
    assert sorted(sink.closed) == [0, 1, 2]
    assert source.closed == ["p"]
    assert all(x != 25 for _, x in sink.items)
    assert {x for _, x in sink.items} <= set(range(60))


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["reduce", "batch"])
async def test_failure_downstream_of_keyed_step_with_three_workers(kind: str) -> None:
    def check(kv: tuple[str, Any]) -> tuple[str, Any]:
        if kv[0] == "k3":
            raise Boom("k3")
        return kv

    sink = TrackedSink()
    flow = Dataflow()
    flow.input("inp", TestingSource([(f"k{i % 6}", i) for i in range(60)], 4))
    if kind == "reduce":
        flow.reduce("r", lambda a, b: a + b, lambda acc: acc > 50)
    else:
        flow.batch("b", 3, timedelta(hours=1))
    flow.map("check", check)
    flow.output("out", sink)
    with pytest.raises(Boom) as info:
        await _run(flow, 3)
    assert "raised in step 'check' by the map mapper" in info.value.__notes__
    assert sorted(sink.closed) == [0, 1, 2]


# -- state is forgotten ----------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 4])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_dropped_state_leaves_nothing_behind(workers: int, is_async: bool) -> None:
    keys = 500
    items = [(f"key{i}", v) for v in ("open", "close") for i in range(keys)]

    def mapper(state: list[str], x: str) -> tuple[Any, str]:
        if x == "close":
            return None, "closed"
        return [*state, x], "opened"

    async def amapper(state: list[str], x: str) -> tuple[Any, str]:
        await anyio.lowlevel.checkpoint()
        return mapper(state, x)

    def add(f: Dataflow) -> None:
        f.stateful_map("sm", list, amapper if is_async else mapper)
        f.map("again", lambda kv: (kv[0], 1))
        f.reduce("r", lambda a, b: a + b, lambda acc: acc == 2)
        f.batch("b", 2, timedelta(hours=1))

    flow, out = _flow(items, add, batch_size=64)
    with _observe() as runs:
        await _run(flow, workers)
    (ctx,) = runs
    assert sorted(out) == sorted((f"key{i}", [2]) for i in range(keys))
    for step_id in ("sm", "r", "b"):
        sizes = [ctx.graph.operators[(step_id, w)].state_size() for w in range(workers)]
        assert sizes == [0] * workers, step_id
    if workers > 1:
        # The keys were spread: every worker's state map was used.
        assert all(
            any(key_owner(f"key{i}", workers) == w for i in range(keys)) for w in range(workers)
        )

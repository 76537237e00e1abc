"""Keyed steps (`aiowax._engine.ops.keyed`): stateful_map and reduce, and every keyed step.

A keyed step takes ``(str key, value)`` items and runs on the worker that
owns the key; it calls an async user function for one key at a time while
different keys overlap (`run_per_key`), and forgets a key's state once it is
done with it. What holds for every keyed step is checked for `batch` too;
the batch step's own behaviour is in ``test_batch.py``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from aiowax._engine.context import RunContext
from aiowax._keys import key_owner
from aiowax.dataflow import Dataflow
from aiowax.inputs import FixedPartitionedSource, StatefulSourcePartition
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.testing import TestingSink, TestingSource, run_main
from flow_helpers import VIRTUAL_WATCHDOG, run, simple_flow
from observing import observe_runs


@contextmanager
def _observe() -> Iterator[list[RunContext]]:
    """Collect the context of every run started inside the block."""
    with observe_runs() as seen:
        yield seen


class Boom(Exception):
    pass


# -- sources and sinks for these tests -------------------------------------------------


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


# -- stateful_map ----------------------------------------------------------------------


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
    flow, out = simple_flow(SM_ITEMS, lambda f: f.stateful_map("sm", b, m), batch_size=2)
    await run(flow, workers=workers)
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

    flow, out = simple_flow(
        items, lambda f: f.stateful_map("sm", builder, amapper if is_async else mapper), 3
    )
    with _observe() as runs:
        await run(flow, workers=workers)
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
    flow, out = simple_flow(
        items, lambda f: f.stateful_map("the_sm", lambda: 0, amapper if is_async else mapper), 4
    )
    with pytest.raises(TypeError) as info:
        await run(flow)
    assert "'the_sm'" in str(info.value)
    assert repr(bad) in str(info.value)
    # What came before the bad result was written.
    assert out == [("k", 1), ("k", 2)]


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

    flow, out = simple_flow(
        items, lambda f: f.stateful_map("sm", list, amapper if is_async else mapper), batch_size
    )
    await run(flow, workers=workers, epoch_interval=epoch_interval)
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
    flow, out = simple_flow(
        items, lambda f: f.stateful_map("sm", list, tracker.mapper), batch_size=len(items)
    )
    await run(flow)
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
    await run(flow, workers=workers)
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
    flow, out = simple_flow(items, lambda f: f.stateful_map("sm", lambda: 0, mapper), 4)
    with pytest.raises(Boom) as info:
        await run(flow)
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

    flow, _ = simple_flow(
        [("a", 1)],
        lambda f: f.stateful_map("sm", abuilder if is_async else builder, lambda s, x: (s, x)),
    )
    with pytest.raises(Boom) as info:
        await run(flow)
    assert "raised in step 'sm' by the stateful_map builder" in info.value.__notes__


# -- reduce ----------------------------------------------------------------------------


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
    flow, out = simple_flow([("a", 5)], lambda f: f.reduce("r", r.reducer, r.is_complete))
    await run(flow)
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
    flow, out = simple_flow(items, lambda f: f.reduce("r", r.reducer, r.is_complete), batch_size=4)
    await run(flow, workers=workers)
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
    flow, out = simple_flow(items, lambda f: f.reduce("r", r.reducer, r.is_complete), batch_size=2)
    await run(flow, workers=workers)
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

    flow, _ = simple_flow(
        [("a", 1), ("a", 2)],
        lambda f: f.reduce(
            "the_reduce", lambda a, b: a + b, ais_complete if is_async else is_complete
        ),
        batch_size=2,
    )
    with pytest.raises(TypeError) as info:
        await run(flow, workers=workers)
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

    flow, _ = simple_flow(
        [("a", 1), ("a", 2)],
        lambda f: f.reduce(
            "r", areducer if is_async else reducer, ais_complete if is_async else is_complete
        ),
        batch_size=2,
    )
    with pytest.raises(Boom) as info:
        await run(flow)
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
    flow, out = simple_flow(
        items, lambda f: f.reduce("r", reducer, lambda acc: acc[1] == 6), batch_size=len(items)
    )
    await run(flow)
    assert peak == 1
    assert out == [(f"k{k}", (f"k{k}", 6)) for k in range(keys)]


# -- every keyed step: (str, value) items only -----------------------------------------


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
    flow, out = simple_flow(items, _add_keyed(kind, is_async), batch_size=3)
    with pytest.raises(TypeError) as info:
        await run(flow, workers=workers)
    message = str(info.value)
    assert "'keyed'" in message
    assert repr(bad) in message
    # The item before the bad one got through; nothing after it did.
    expected = [("a", [1])] if kind == "batch" else [("a", 1)]
    assert out == expected


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 3])
async def test_bad_item_after_a_map_names_the_keyed_step(workers: int) -> None:
    flow, out = simple_flow(
        ["a", "bb", "ccc"],
        lambda f: (
            f.map("to_pairs", lambda s: (s, len(s)) if s != "bb" else s),
            f.stateful_map("keyed", lambda: 0, lambda s, x: (s, x)),
        ),
        batch_size=3,
    )
    with pytest.raises(TypeError, match=r"'keyed'.*'bb'"):
        await run(flow, workers=workers)
    assert out == [("a", 1)]


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
        await run(flow, workers=workers)
    # a's list was full before the bad item: it was written.
    assert sink.items == [("a", [1, 3])]
    assert sorted(sink.closed) == list(range(workers))
    assert source.closed == ["p"]


# -- every keyed step: on the worker that owns the key ---------------------------------


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

    flow, _ = simple_flow(items, add, batch_size=5)
    await run(flow, workers=4)
    assert set(seen) == set(ROUTED_KEYS)
    for k in ROUTED_KEYS:
        assert seen[k] == {key_owner(k, 4)}, k
    # Pinned owners (see test_routing.py), and the keys cover every worker.
    assert (seen["a"], seen["b"], seen["d"], seen["é"]) == ({3}, {1}, {0}, {2})
    assert set().union(*seen.values()) == {0, 1, 2, 3}


# -- every keyed step: failures with several workers -----------------------------------


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
        await run(flow, workers=3)
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
        await run(flow, workers=3)
    assert "raised in step 'check' by the map mapper" in info.value.__notes__
    assert sorted(sink.closed) == [0, 1, 2]


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
        await run(flow, workers=1, watchdog=VIRTUAL_WATCHDOG, epoch_interval=timedelta(0))
    assert "raised in step 'check' by the map mapper" in info.value.__notes__
    assert sink.items == [("a", [0]), ("a", [1]), ("a", [2])]
    assert sink.closed == 1


# -- every keyed step: state is forgotten ----------------------------------------------


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

    flow, out = simple_flow(items, add, batch_size=64)
    with _observe() as runs:
        await run(flow, workers=workers)
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


def test_a_sync_reducer_returning_coroutines_is_refused_whatever_key_comes_last() -> None:
    # The batch ends with the first value of another key (no reducer call
    # for it): the refusal must not depend on that.
    async def add(a: int, b: int) -> int:
        return a + b

    flow = Dataflow()
    flow.input("inp", TestingSource([("a", 1), ("a", 2), ("b", 3)], 3))
    flow.reduce("r", lambda a, b: add(a, b), lambda acc: isinstance(acc, int) and acc > 100)
    flow.output("out", TestingSink([]))
    with pytest.raises(TypeError, match=r"reduce step 'r': the reducer returned an awaitable"):
        run_main(flow)

"""The stateless operators with every kind of user callable, epochs and workers."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import aiowax
from aiowax._engine.usercode import ASYNC_CONCURRENCY
from aiowax.dataflow import Dataflow
from aiowax.inputs import FixedPartitionedSource, StatefulSourcePartition
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.testing import TestingSink, TestingSource, cluster_main, run_main

WATCHDOG = 5
#: On the virtual clock a watchdog counts loop time, which jumps.
VIRTUAL_WATCHDOG = 3600


async def _run(flow: Dataflow, watchdog: float = WATCHDOG, **kwargs: Any) -> None:
    with anyio.fail_after(watchdog):
        await aiowax.run(flow, **kwargs)


def _simple(items: list[Any], add: Callable[[Dataflow], None], batch_size: int = 1) -> tuple:
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", TestingSource(items, batch_size))
    add(flow)
    flow.output("out", TestingSink(out))
    return flow, out


# -- the kinds of callables a user may hand in ------------------------------------


def double(x: int) -> int:
    return x * 2


async def adouble(x: int) -> int:
    await anyio.lowlevel.checkpoint()
    return x * 2


async def amul(factor: int, x: int) -> int:
    await anyio.lowlevel.checkpoint()
    return x * factor


class AsyncDoubler:
    async def __call__(self, x: int) -> int:
        await anyio.lowlevel.checkpoint()
        return x * 2


class SyncDoubler:
    def __call__(self, x: int) -> int:
        return x * 2


class Holder:
    factor = 2

    async def method(self, x: int) -> int:
        await anyio.lowlevel.checkpoint()
        return x * self.factor


MAPPERS: dict[str, Callable[[int], Any]] = {
    "function": double,
    "lambda": lambda x: x * 2,
    "async-def": adouble,
    "async-callable-object": AsyncDoubler(),
    "sync-callable-object": SyncDoubler(),
    "partial-of-async": functools.partial(amul, 2),
    "partial-of-partial-of-async": functools.partial(functools.partial(amul), 2),
    "bound-async-method": Holder().method,
}


@pytest.mark.asyncio
@pytest.mark.parametrize("name", list(MAPPERS))
async def test_map_callable_kinds(name: str) -> None:
    flow, out = _simple([1, 2, 3, 4, 5], lambda f: f.map("m", MAPPERS[name]), batch_size=2)
    await _run(flow)
    assert out == [2, 4, 6, 8, 10]


@pytest.mark.parametrize("name", list(MAPPERS))
def test_map_callable_kinds_run_main(name: str) -> None:
    flow, out = _simple([1, 2, 3], lambda f: f.map("m", MAPPERS[name]))
    run_main(flow)
    assert out == [2, 4, 6]


def test_map_with_builtin_type() -> None:
    flow, out = _simple([1, 2], lambda f: f.map("m", str))
    run_main(flow)
    assert out == ["1", "2"]


def test_map_result_none_is_kept() -> None:
    flow, out = _simple([1, 2], lambda f: f.map("m", lambda x: None))
    run_main(flow)
    assert out == [None, None]


def is_even(x: int) -> bool:
    return x % 2 == 0


async def ais_even(x: int) -> bool:
    await anyio.lowlevel.checkpoint()
    return x % 2 == 0


class AsyncIsEven:
    async def __call__(self, x: int) -> bool:
        await anyio.lowlevel.checkpoint()
        return x % 2 == 0


async def ais_multiple(of: int, x: int) -> bool:
    await anyio.lowlevel.checkpoint()
    return x % of == 0


PREDICATES = {
    "function": is_even,
    "async-def": ais_even,
    "async-callable-object": AsyncIsEven(),
    "partial-of-async": functools.partial(ais_multiple, 2),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("name", list(PREDICATES))
async def test_filter_callable_kinds(name: str) -> None:
    flow, out = _simple(list(range(10)), lambda f: f.filter("f", PREDICATES[name]), 3)
    await _run(flow)
    assert out == [0, 2, 4, 6, 8]


def half_if_even(x: int) -> Any:
    return x // 2 if x % 2 == 0 else None


async def ahalf_if_even(x: int) -> Any:
    await anyio.lowlevel.checkpoint()
    return x // 2 if x % 2 == 0 else None


class AsyncHalf:
    async def __call__(self, x: int) -> Any:
        return await ahalf_if_even(x)


FILTER_MAPPERS = {
    "function": half_if_even,
    "async-def": ahalf_if_even,
    "async-callable-object": AsyncHalf(),
    "partial-of-async": functools.partial(ahalf_if_even),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("name", list(FILTER_MAPPERS))
async def test_filter_map_callable_kinds(name: str) -> None:
    flow, out = _simple(list(range(7)), lambda f: f.filter_map("fm", FILTER_MAPPERS[name]), 2)
    await _run(flow)
    assert out == [0, 1, 2, 3]


def test_filter_map_drops_only_none() -> None:
    values = {1: 0, 2: False, 3: "", 4: None, 5: [], 6: "x"}
    flow, out = _simple(list(values), lambda f: f.filter_map("fm", values.__getitem__))
    run_main(flow)
    assert out == [0, False, "", [], "x"]


def split_words(s: str) -> list[str]:
    return s.split()


def gen_words(s: str) -> Iterator[str]:
    yield from s.split()


async def asplit_words(s: str) -> list[str]:
    await anyio.lowlevel.checkpoint()
    return s.split()


async def agen_words(s: str) -> AsyncIterator[str]:
    for word in s.split():
        await anyio.lowlevel.checkpoint()
        yield word


async def agen_words_sep(sep: str, s: str) -> AsyncIterator[str]:
    for word in s.split(sep):
        if word:
            yield word


class AsyncSplitter:
    async def __call__(self, s: str) -> tuple[str, ...]:
        await anyio.lowlevel.checkpoint()
        return tuple(s.split())


FLAT_MAPPERS = {
    "function-list": split_words,
    "generator-function": gen_words,
    "async-def": asplit_words,
    "async-generator-function": agen_words,
    "partial-of-async-generator": functools.partial(agen_words_sep, " "),
    "async-callable-object": AsyncSplitter(),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("name", list(FLAT_MAPPERS))
async def test_flat_map_callable_kinds(name: str) -> None:
    lines = ["a b", "c", "", "d e f"]
    flow, out = _simple(lines, lambda f: f.flat_map("fm", FLAT_MAPPERS[name]), 2)
    await _run(flow)
    assert out == ["a", "b", "c", "d", "e", "f"]


def test_flat_map_with_async_generator_run_main() -> None:
    flow, out = _simple(["x y", "z"], lambda f: f.flat_map("fm", agen_words))
    run_main(flow)
    assert out == ["x", "y", "z"]


def test_flat_map_non_iterable_result_fails_naming_step() -> None:
    flow, out = _simple([1, 2], lambda f: f.flat_map("explode", lambda x: x))
    with pytest.raises(TypeError) as info:
        run_main(flow)
    assert any("'explode'" in n and "flat_map mapper" in n for n in info.value.__notes__)
    assert out == []


@pytest.mark.asyncio
@pytest.mark.parametrize("flavor", ["sync", "async", "async-object", "partial"])
async def test_inspectors(flavor: str) -> None:
    seen: list[Any] = []
    seen_epoch: list[Any] = []
    seen_worker: list[Any] = []

    def insp(x: Any) -> Any:
        seen.append(x)
        return "ignored"

    def insp_epoch(epoch: int, x: Any) -> None:
        seen_epoch.append((epoch, x))

    def insp_worker(x: Any, worker: int) -> None:
        seen_worker.append((x, worker))

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        async def afn(*args: Any) -> Any:
            await anyio.lowlevel.checkpoint()
            return fn(*args)

        class Obj:
            async def __call__(self, *args: Any) -> Any:
                return await afn(*args)

        if flavor == "sync":
            return fn
        if flavor == "async":
            return afn
        if flavor == "async-object":
            return Obj()
        return functools.partial(afn)

    def add(f: Dataflow) -> None:
        f.inspect(wrap(insp))
        f.inspect_epoch(wrap(insp_epoch))
        f.inspect_worker(wrap(insp_worker))

    flow, out = _simple(["a", "b", "c"], add, batch_size=2)
    await _run(flow)
    assert out == ["a", "b", "c"]
    assert seen == ["a", "b", "c"]
    assert seen_epoch == [(1, "a"), (1, "b"), (1, "c")]
    assert seen_worker == [("a", 0), ("b", 0), ("c", 0)]


# -- output passes items on --------------------------------------------------------


class _ClearingPart(StatelessSinkPartition[Any]):
    def __init__(self, ls: list[Any]) -> None:
        self.ls = ls

    def write_batch(self, items: list[Any]) -> None:
        self.ls.extend(items)
        items.clear()  # a sink may reuse the list it was handed


class ClearingSink(DynamicSink[Any]):
    def __init__(self, ls: list[Any]) -> None:
        self.ls = ls

    def build(self, worker_index: int, worker_count: int) -> _ClearingPart:
        return _ClearingPart(self.ls)


@pytest.mark.asyncio
@pytest.mark.parametrize("batch_size", [1, 3, 100])
async def test_chained_outputs(batch_size: int) -> None:
    first: list[Any] = []
    second: list[Any] = []
    third: list[Any] = []
    flow = Dataflow()
    flow.input("inp", TestingSource(range(5), batch_size))
    flow.output("first", ClearingSink(first))
    flow.map("m", lambda x: x + 100)
    flow.output("second", TestingSink(second))
    flow.output("third", TestingSink(third))
    await _run(flow)
    assert first == [0, 1, 2, 3, 4]
    assert second == [100, 101, 102, 103, 104]
    assert third == second


# -- async mappers: order and concurrency ------------------------------------------


@pytest.mark.asyncio
async def test_async_map_order_preserved_when_calls_finish_in_reverse() -> None:
    n = 10
    done = [anyio.Event() for _ in range(n + 1)]
    done[n].set()
    finish_order: list[int] = []

    async def mapper(x: int) -> int:
        await done[x + 1].wait()  # item x finishes only after item x + 1
        finish_order.append(x)
        done[x].set()
        return x * x

    flow, out = _simple(list(range(n)), lambda f: f.map("m", mapper), batch_size=n)
    await _run(flow)
    assert finish_order == list(reversed(range(n)))
    assert out == [x * x for x in range(n)]


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("batch_size", [1, 4, 50])
async def test_async_order_preserved_with_varying_delays(batch_size: int) -> None:
    delays = [(7 * i) % 11 for i in range(40)]

    async def mapper(i: int) -> int:
        await anyio.sleep(delays[i])
        return i

    async def predicate(i: int) -> bool:
        await anyio.sleep(delays[-1 - i])
        return i % 3 != 0

    async def flat(i: int) -> AsyncIterator[int]:
        await anyio.sleep(delays[i] / 2)
        yield i
        await anyio.sleep(1)
        yield -i

    def add(f: Dataflow) -> None:
        f.map("m", mapper)
        f.filter("f", predicate)
        f.flat_map("fm", flat)

    flow, out = _simple(list(range(40)), add, batch_size)
    await _run(flow, VIRTUAL_WATCHDOG)
    expected = [y for i in range(40) if i % 3 != 0 for y in (i, -i)]
    assert out == expected


@pytest.mark.asyncio
async def test_async_mapper_calls_in_a_batch_overlap() -> None:
    n = 10
    in_flight = 0
    all_in = anyio.Event()

    async def mapper(x: int) -> int:
        nonlocal in_flight
        in_flight += 1
        if in_flight == n:
            all_in.set()
        # Returns only once every call of the batch has started: possible
        # only if they run concurrently.
        await all_in.wait()
        return x + 1

    flow, out = _simple(list(range(n)), lambda f: f.map("m", mapper), batch_size=n)
    await _run(flow)
    assert out == list(range(1, n + 1))


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["map", "filter", "filter_map", "flat_map", "inspect"])
async def test_async_concurrency_limit_holds(kind: str) -> None:
    n = ASYNC_CONCURRENCY * 3 + 5
    in_flight = 0
    peak = 0
    limit_reached = anyio.Event()

    async def call(*args: Any) -> Any:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight >= ASYNC_CONCURRENCY:
            limit_reached.set()
        # The first wave waits until the limit is reached: calls really overlap.
        await limit_reached.wait()
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        in_flight -= 1
        x = args[-1]
        return {"map": x, "filter": True, "filter_map": x, "flat_map": [x]}.get(kind)

    def add(f: Dataflow) -> None:
        if kind == "inspect":
            f.inspect(call)
        else:
            getattr(f, kind)("step", call)

    flow, out = _simple(list(range(n)), add, batch_size=n)
    await _run(flow)
    assert out == list(range(n))
    assert peak == ASYNC_CONCURRENCY


# -- epochs ------------------------------------------------------------------------


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
    flow, out = _simple(list(range(5)), lambda f: f.inspect_epoch(inspector), batch_size)
    await _run(flow, epoch_interval=timedelta(0))
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
    flow, _ = _simple(
        list(range(50)), lambda f: f.inspect_epoch(lambda e, x: seen.append((e, x))), batch_size
    )
    await _run(flow)
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
    await _run(flow, VIRTUAL_WATCHDOG, epoch_interval=timedelta(seconds=2.6))
    assert seen == [(1, 1), (1, 2), (2, 3), (2, 4), (2, 5), (3, 6), (3, 7), (4, 8), (4, 9)]


class _ListPart(StatefulSourcePartition[Any, int]):
    def __init__(self, items: list[Any], batch_size: int) -> None:
        self.items = items
        self.batch_size = batch_size
        self.pos = 0

    def next_batch(self, sched: datetime | None) -> list[Any]:
        if self.pos >= len(self.items):
            raise StopIteration
        out = self.items[self.pos : self.pos + self.batch_size]
        self.pos += len(out)
        return out

    def snapshot(self) -> int:
        return self.pos


class MultiSource(FixedPartitionedSource[Any, int]):
    def __init__(self, parts: dict[str, list[Any]], batch_size: int = 1) -> None:
        self.parts = parts
        self.batch_size = batch_size

    def list_parts(self) -> list[str]:
        return list(self.parts)

    def build_part(self, now: datetime, for_part: str, resume_state: int | None) -> _ListPart:
        return _ListPart(self.parts[for_part], self.batch_size)


@pytest.mark.asyncio
async def test_zero_epoch_interval_partitions_move_in_lockstep() -> None:
    parts = {"a": ["a1", "a2", "a3"], "b": ["b1"], "c": ["c1", "c2"]}
    seen: list[tuple[int, str]] = []
    flow = Dataflow()
    flow.input("inp", MultiSource(parts))
    flow.inspect_epoch(lambda e, x: seen.append((e, x)))
    flow.output("out", TestingSink([]))
    await _run(flow, epoch_interval=timedelta(0))
    assert sorted(seen) == sorted((int(x[1]), x) for p in parts.values() for x in p)
    # Epochs never go backwards in the stream.
    assert [e for e, _ in seen] == sorted(e for e, _ in seen)


# -- pipelines and workers ---------------------------------------------------------


@pytest.mark.asyncio
async def test_multiple_pipelines_in_one_flow() -> None:
    nums: list[Any] = []
    words: list[Any] = []
    both: list[Any] = []
    flow = Dataflow()
    flow.input("nums", TestingSource(range(6), 4))
    flow.filter("even", lambda x: x % 2 == 0)
    flow.map("sq", adouble)
    flow.output("nums_out", TestingSink(nums))
    flow.output("nums_both", TestingSink(both))
    flow.input("words", TestingSource(["a b", "c"]))
    flow.flat_map("split", agen_words)
    flow.map("upper", str.upper)
    flow.output("words_out", TestingSink(words))
    flow.output("words_both", TestingSink(both))
    flow.input("unused_tail", TestingSource([1, 2]))  # an input with no steps
    await _run(flow)
    assert nums == [0, 4, 8]
    assert words == ["A", "B", "C"]
    assert Counter(both) == Counter([0, 4, 8, "A", "B", "C"])


def _worker_flow(out: list[Any], seen: list[tuple[Any, int]]) -> Dataflow:
    parts = {f"p{i}": [f"p{i}-{j}" for j in range(25)] for i in range(4)}
    flow = Dataflow()
    flow.input("inp", MultiSource(parts, batch_size=3))
    flow.inspect_worker(lambda x, w: seen.append((x, w)))
    flow.map("tag", lambda x: x.upper())
    flow.filter("drop_some", lambda x: not x.endswith("-7"))
    flow.flat_map("twice", agen_words_twice)
    flow.output("out", TestingSink(out))
    return flow


async def agen_words_twice(x: str) -> AsyncIterator[str]:
    yield x
    yield x.lower()


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [2, 3])
async def test_workers_give_same_multiset(workers: int) -> None:
    single: list[Any] = []
    await _run(_worker_flow(single, []))
    multi: list[Any] = []
    seen: list[tuple[Any, int]] = []
    await _run(_worker_flow(multi, seen), workers=workers)
    assert len(single) == 4 * 24 * 2
    assert Counter(multi) == Counter(single)
    by_part: dict[str, set[int]] = {}
    for item, worker in seen:
        by_part.setdefault(item.split("-")[0], set()).add(worker)
    # Every partition is read by exactly one worker; both workers get work.
    assert all(len(ws) == 1 for ws in by_part.values())
    assert {w for ws in by_part.values() for w in ws} == set(range(min(workers, 4)))


def test_cluster_main_two_workers_same_multiset() -> None:
    single: list[Any] = []
    run_main(_worker_flow(single, []))
    multi: list[Any] = []
    seen: list[tuple[Any, int]] = []
    cluster_main(_worker_flow(multi, seen), [], 0, worker_count_per_proc=2)
    assert Counter(multi) == Counter(single)
    assert {w for _, w in seen} == {0, 1}

"""The stateless steps: map, filter, filter_map, flat_map and the inspectors.

Each with every kind of callable a user may hand in, sync or async, then in
several pipelines of one flow and on several workers
(`aiowax._engine.ops.stateless`). How the async calls of a batch overlap and
keep their order is in ``tests/engine/test_usercode.py``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from aiowax.dataflow import Dataflow
from aiowax.testing import TestingSink, TestingSource, cluster_main, run_main
from flow_helpers import PartsSource, run, simple_flow

# -- the kinds of callables a user may hand in -----------------------------------------


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
    flow, out = simple_flow([1, 2, 3, 4, 5], lambda f: f.map("m", MAPPERS[name]), batch_size=2)
    await run(flow)
    assert out == [2, 4, 6, 8, 10]


@pytest.mark.parametrize("name", list(MAPPERS))
def test_map_callable_kinds_run_main(name: str) -> None:
    flow, out = simple_flow([1, 2, 3], lambda f: f.map("m", MAPPERS[name]))
    run_main(flow)
    assert out == [2, 4, 6]


def test_map_with_builtin_type() -> None:
    flow, out = simple_flow([1, 2], lambda f: f.map("m", str))
    run_main(flow)
    assert out == ["1", "2"]


def test_map_result_none_is_kept() -> None:
    flow, out = simple_flow([1, 2], lambda f: f.map("m", lambda x: None))
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
    flow, out = simple_flow(list(range(10)), lambda f: f.filter("f", PREDICATES[name]), 3)
    await run(flow)
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
    flow, out = simple_flow(list(range(7)), lambda f: f.filter_map("fm", FILTER_MAPPERS[name]), 2)
    await run(flow)
    assert out == [0, 1, 2, 3]


def test_filter_map_drops_only_none() -> None:
    values = {1: 0, 2: False, 3: "", 4: None, 5: [], 6: "x"}
    flow, out = simple_flow(list(values), lambda f: f.filter_map("fm", values.__getitem__))
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
    flow, out = simple_flow(lines, lambda f: f.flat_map("fm", FLAT_MAPPERS[name]), 2)
    await run(flow)
    assert out == ["a", "b", "c", "d", "e", "f"]


def test_flat_map_with_async_generator_run_main() -> None:
    flow, out = simple_flow(["x y", "z"], lambda f: f.flat_map("fm", agen_words))
    run_main(flow)
    assert out == ["x", "y", "z"]


def test_flat_map_non_iterable_result_fails_naming_step() -> None:
    flow, out = simple_flow([1, 2], lambda f: f.flat_map("explode", lambda x: x))
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

    flow, out = simple_flow(["a", "b", "c"], add, batch_size=2)
    await run(flow)
    assert out == ["a", "b", "c"]
    assert seen == ["a", "b", "c"]
    assert seen_epoch == [(1, "a"), (1, "b"), (1, "c")]
    assert seen_worker == [("a", 0), ("b", 0), ("c", 0)]


@pytest.mark.asyncio
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_inspect_worker_gets_item_and_worker_index(is_async: bool) -> None:
    seen: list[tuple[Any, int]] = []

    def inspector(item: Any, worker: int) -> None:
        seen.append((item, worker))

    async def ainspector(item: Any, worker: int) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append((item, worker))

    flow, out = simple_flow(
        ["x", "y", "z"], lambda f: f.inspect_worker(ainspector if is_async else inspector)
    )
    await run(flow)
    assert seen == [("x", 0), ("y", 0), ("z", 0)]
    assert out == ["x", "y", "z"]


# -- pipelines and workers -------------------------------------------------------------


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
    await run(flow)
    assert nums == [0, 4, 8]
    assert words == ["A", "B", "C"]
    assert Counter(both) == Counter([0, 4, 8, "A", "B", "C"])


def _worker_flow(out: list[Any], seen: list[tuple[Any, int]]) -> Dataflow:
    parts = {f"p{i}": [f"p{i}-{j}" for j in range(25)] for i in range(4)}
    flow = Dataflow()
    flow.input("inp", PartsSource(parts, batch_size=3))
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
    await run(_worker_flow(single, []))
    multi: list[Any] = []
    seen: list[tuple[Any, int]] = []
    await run(_worker_flow(multi, seen), workers=workers)
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


# -- W2: a sync callable that returns an awaitable ---------------------------------------------


async def _enrich(x: int, client: dict[int, str]) -> str:
    await anyio.sleep(0)
    return client[x]


_CLIENT = {1: "ada", 2: "bob", 3: "cy", 4: "dee"}


@pytest.mark.parametrize("batch_size", [1, 2, 4])
@pytest.mark.parametrize(
    "add",
    [
        pytest.param(lambda f: f.map("m", lambda x: _enrich(x, _CLIENT)), id="map"),
        pytest.param(
            lambda f: f.filter_map(
                "m",
                lambda x: _enrich(x, {**_CLIENT, 2: None}),  # type: ignore[dict-item]
            ),
            id="filter_map",
        ),
        pytest.param(lambda f: f.flat_map("m", lambda x: _pairs(x)), id="flat_map"),
        pytest.param(lambda f: f.filter("m", lambda x: _is_odd(x)), id="filter"),
    ],
)
def test_a_sync_callable_returning_a_coroutine_is_awaited(batch_size: int, add: Any) -> None:
    # The usual way to pass an extra argument to an async function: the
    # coroutines it returns are awaited, never passed on as items.
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", TestingSource([1, 2, 3, 4], batch_size))
    add(flow)
    flow.output("out", TestingSink(out))
    run_main(flow)
    assert not [x for x in out if inspect.isawaitable(x)]
    assert out in (
        ["ada", "bob", "cy", "dee"],
        ["ada", "cy", "dee"],
        [1, 1, 2, 2, 3, 3, 4, 4],
        [1, 3],
    )


async def _pairs(x: int) -> list[int]:
    return [x, x]


async def _is_odd(x: int) -> bool:
    return x % 2 == 1


def test_a_flat_map_returning_a_coroutine_for_some_items_only_is_served() -> None:
    # Once the step has switched to its async path (a coroutine came), the
    # mapper's plain lists went to `await` there: "object list can't be used
    # in 'await' expression". One-item epochs put each item in a batch.
    async def fetch(x: int) -> list[int]:
        await asyncio.sleep(0)
        return [x, x]

    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", TestingSource(range(4)))
    flow.flat_map("m", lambda x: fetch(x) if x % 2 else [x])
    flow.output("out", TestingSink(out))
    run_main(flow, epoch_interval=timedelta(0))
    assert out == [0, 1, 1, 2, 3, 3]


def test_a_sync_inspector_returning_a_coroutine_is_awaited() -> None:
    seen: list[int] = []

    async def record(x: int) -> None:
        seen.append(x)

    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", TestingSource([1, 2, 3], 2))
    flow.inspect(lambda x: record(x))
    flow.output("out", TestingSink(out))
    run_main(flow)
    assert seen == out == [1, 2, 3]


def test_a_coroutine_failing_after_others_keeps_the_output_before_it() -> None:
    async def check(x: int) -> int:
        if x == 3:
            raise ValueError("three")
        return x

    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", TestingSource([1, 2, 3, 4], 4))
    flow.map("m", lambda x: check(x))
    flow.output("out", TestingSink(out))
    with pytest.raises(ValueError, match="three") as raised:
        run_main(flow)
    assert raised.value.__notes__ == ["raised in step 'm' by the map mapper"]
    assert out == [1, 2]

"""Calling async user code (`aiowax._engine.usercode`): overlap, order, limits.

The async calls of a batch run at once, at most `ASYNC_CONCURRENCY` of them,
and their results keep the input order whatever order they finish in
(`call_ordered`, here through the stateless steps). Both stateless and
keyed steps hand on the output from the start of a batch while its later
calls run. A ``CancelledError`` that
user code raises without being cancelled is the user's error. The keyed
steps' order per key (`run_per_key`) is tested with them, in
``tests/engine/ops/test_keyed.py``.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import aiowax
from aiowax._engine.usercode import (
    ASYNC_CONCURRENCY,
    EARLY_EVERY_S,
    call_ordered,
    run_per_key,
)
from aiowax.dataflow import Dataflow
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.testing import TestingSink, TestingSource
from flow_helpers import VIRTUAL_WATCHDOG, run, simple_flow

# -- results in input order, calls at once up to the limit -----------------------------


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

    flow, out = simple_flow(list(range(n)), lambda f: f.map("m", mapper), batch_size=n)
    await run(flow)
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

    flow, out = simple_flow(list(range(40)), add, batch_size)
    await run(flow, watchdog=VIRTUAL_WATCHDOG)
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

    flow, out = simple_flow(list(range(n)), lambda f: f.map("m", mapper), batch_size=n)
    await run(flow)
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

    flow, out = simple_flow(list(range(n)), add, batch_size=n)
    await run(flow)
    assert out == list(range(n))
    assert peak == ASYNC_CONCURRENCY


# -- results go on from the start of a batch, not at its end -------------------------


class _TimedSink(DynamicSink[Any]):
    """Records ``(loop time, items)`` for every list it is handed."""

    def __init__(self) -> None:
        self.writes: list[tuple[float, list[Any]]] = []

    def build(self, worker_index: int, worker_count: int) -> StatelessSinkPartition[Any]:
        writes = self.writes

        class _Part(StatelessSinkPartition[Any]):
            def write_batch(self, items: list[Any]) -> None:
                writes.append((anyio.current_time(), list(items)))

        return _Part()


async def _one_second(x: int) -> int:
    await anyio.sleep(1)
    if x == 6:
        raise ValueError("six")
    return x


async def _kept(x: int) -> bool:
    return await _one_second(x) % 2 == 0


async def _twice(x: int) -> list[int]:
    return [await _one_second(x)] * 2


async def _one_second_on_worker(x: int, _worker: int) -> int:
    return await _one_second(x)


async def _counted(count: int, x: int) -> tuple[int, int]:
    return count + 1, await _one_second(x)


async def _complete_when_odd(acc: int) -> bool:
    return await _one_second(acc) % 2 == 1


def _keyed(xs: Any) -> list[tuple[str, int]]:
    return [(str(x // 2), x) for x in xs]  # keys of two items each


_EARLY_STEPS: dict[str, tuple[Any, Any, list[int]]] = {
    # kind: (adds the step, the output of items 0..k-1, the seconds at which
    # the output of 6 items is written)
    "map": (
        lambda f: f.map("step", _one_second, max_concurrency=2),
        lambda k: list(range(k)),
        [1, 2, 3],
    ),
    "filter": (
        lambda f: f.filter("step", _kept, max_concurrency=2),
        lambda k: [x for x in range(k) if x % 2 == 0],
        [1, 2, 3],
    ),
    "flat_map": (
        lambda f: f.flat_map("step", _twice, max_concurrency=2),
        lambda k: [x for x in range(k) for _ in range(2)],
        [1, 2, 3],
    ),
    "inspect": (
        lambda f: f.inspect(_one_second, max_concurrency=2),
        lambda k: list(range(k)),
        [1, 2, 3],
    ),
    "inspect_worker": (
        lambda f: f.inspect_worker(_one_second_on_worker, max_concurrency=2),
        lambda k: list(range(k)),
        [1, 2, 3],
    ),
    # Keys of two items, one key's calls one after the other, two keys at
    # once: items 0 and 2 are done at 1 s, 1 and 3 at 2 s, 4 at 3 s, 5 at
    # 4 s. Item 2 waits for item 1, before it in the batch.
    "stateful_map": (
        lambda f: f.stateful_map("step", lambda: 0, _counted, max_concurrency=2),
        lambda k: _keyed(range(k)),
        [1, 2, 3, 4],
    ),
    # Each key's accumulator is its first value (even: not complete), then
    # the sum of its two (odd: complete), at 2 s for keys 0 and 1, 4 s for 2.
    "reduce": (
        lambda f: f.reduce("step", operator.add, _complete_when_odd, max_concurrency=2),
        lambda k: [(str(x // 2), 2 * x - 1) for x in range(1, k, 2)],
        [2, 4],
    ),
}


def _early_flow(kind: str, n: int) -> tuple[Dataflow, _TimedSink, Any]:
    """One batch of ``n`` items through the ``kind`` step, 2 calls (or keys) at once."""
    add, output, _ = _EARLY_STEPS[kind]
    sink = _TimedSink()
    flow = Dataflow()
    flow.input("inp", TestingSource(range(n), batch_size=n))
    if kind in ("stateful_map", "reduce"):
        flow.map("key", lambda x: (str(x // 2), x))
    add(flow)
    flow.output("out", sink)
    return flow, sink, output


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("kind", list(_EARLY_STEPS))
async def test_an_async_step_hands_on_the_first_results_while_later_calls_run(kind: str) -> None:
    # A batch of 6 calls of 1 s, 2 at a time: its first results went out
    # with its last, at 3 s (1,024 calls of 20 ms one at a time: 20 s before
    # the first item came out of a `map`); keyed steps' at 4 s.
    flow, sink, output = _early_flow(kind, 6)
    start = anyio.current_time()
    await run(flow, watchdog=VIRTUAL_WATCHDOG)
    # Each pair within EARLY_EVERY_S of its calls' end (the last with the batch).
    times = [t - start for t, _ in sink.writes]
    assert [round(t) for t in times] == _EARLY_STEPS[kind][2]
    assert all(-1e-9 <= t - round(t) <= EARLY_EVERY_S + 1e-9 for t in times), times
    assert [x for _, items in sink.writes for x in items] == output(6)


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("kind", list(_EARLY_STEPS))
async def test_a_failure_after_results_went_on_early_writes_each_once(kind: str) -> None:
    # Items 0-5 went out early (at 1, 2 and 3 s); the call of item 6 fails
    # at 4 s: the output before it is written once, not again as the partial
    # output of the failure.
    flow, sink, output = _early_flow(kind, 10)
    with pytest.raises(ValueError, match="six"):
        await run(flow, watchdog=VIRTUAL_WATCHDOG)
    assert [x for _, items in sink.writes for x in items] == output(6)


async def _says_yes_for_3(x: int) -> Any:
    await anyio.sleep(1)
    return "yes" if x == 3 else x % 2 == 0


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_a_bad_predicate_result_met_while_handing_over_early_is_the_same_type_error() -> None:
    # The hand-over's own refusal (not a bool) was taken for a failed call's
    # and its output for flags: a second, wrong error.
    sink = _TimedSink()
    flow = Dataflow()
    flow.input("inp", TestingSource(range(10), batch_size=10))
    flow.filter("keep", _says_yes_for_3, max_concurrency=2)
    flow.output("out", sink)
    with pytest.raises(TypeError, match="filter step 'keep': the predicate must return a bool"):
        await run(flow, watchdog=VIRTUAL_WATCHDOG)
    # What came before item 3 is written, once: as without the hand-over.
    assert [x for _, items in sink.writes for x in items] == [0, 2]


@pytest.mark.asyncio
async def test_call_ordered_raises_what_early_raised_and_cancels_the_calls() -> None:
    started: list[int] = []

    async def call(x: int) -> int:
        started.append(x)
        if x > 0:
            await anyio.sleep(3600)
        return x

    async def early(results: list[Any], start: int) -> None:
        raise ConnectionError(f"downstream gone at {start}: {results}")

    with anyio.fail_after(10), pytest.raises(ConnectionError, match=r"at 0: \[0\]"):
        await call_ordered(call, [0, 1, 2], 3, early)
    assert started == [0, 1, 2]


@pytest.mark.asyncio
async def test_run_per_key_raises_what_early_raised_and_cancels_the_calls() -> None:
    started: list[str] = []

    async def call(key: str, value: int) -> tuple[str, int]:
        started.append(key)
        if value > 0:
            await anyio.sleep(3600)
        return key, value

    async def early(out: list[Any]) -> None:
        raise ConnectionError(f"downstream gone: {out}")

    batch = [("a", 0), ("b", 1), ("c", 2)]
    with anyio.fail_after(10), pytest.raises(ConnectionError, match=r"gone: \[\('a', 0\)\]"):
        await run_per_key("step", batch, call, 3, early)
    assert started == ["a", "b", "c"]


# -- a stray CancelledError is an error ------------------------------------------------


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
        await run(flow, epoch_interval=timedelta(0))
    assert raised.value.__notes__ == ["raised in step 'm' by the map mapper"]
    assert out == [1]


@pytest.mark.asyncio
async def test_call_ordered_reports_a_stray_cancelled_error() -> None:
    from aiowax._engine.errors import StepFailed

    with pytest.raises(StepFailed) as raised:
        await call_ordered(_stray_cancel, [1, 2, 3])
    assert raised.value.partial == [1]
    assert isinstance(raised.value.error, RuntimeError)


# -- max_concurrency: a per-step limit on async calls in flight --------------------------------


class _Gauge:
    """Counts async calls in flight; the most at once is ``peak``."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    async def __call__(self, value: Any) -> Any:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await anyio.sleep(0.001 * (value % 3))
            return value
        finally:
            self.now -= 1


@pytest.mark.asyncio
@pytest.mark.parametrize("limit", [1, 3, None])
async def test_max_concurrency_bounds_the_calls_in_flight_and_keeps_the_order(
    limit: int | None,
) -> None:
    gauge = _Gauge()
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", TestingSource(range(40), 40))
    flow.map("m", gauge, max_concurrency=limit)
    flow.output("out", TestingSink(out))
    with anyio.fail_after(10):
        await aiowax.run(flow)
    assert out == list(range(40))
    assert gauge.peak == (limit if limit is not None else 40)


@pytest.mark.asyncio
async def test_max_concurrency_bounds_a_keyed_step_across_keys() -> None:
    gauge = _Gauge()

    async def mapper(state: Any, value: Any) -> tuple[Any, Any]:
        return None, await gauge(value)

    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", TestingSource([(f"k{i % 10}", i) for i in range(40)], 40))
    flow.stateful_map("s", lambda: None, mapper, max_concurrency=2)
    flow.output("out", TestingSink(out))
    with anyio.fail_after(10):
        await aiowax.run(flow)
    assert sorted(v for _, v in out) == list(range(40))
    assert gauge.peak == 2


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (-1, ValueError), (2.0, TypeError)])
def test_max_concurrency_must_be_a_positive_int(value: Any, error: type[Exception]) -> None:
    flow = Dataflow()
    with pytest.raises(error, match=r"map step 'm': max_concurrency must be"):
        flow.map("m", lambda x: x, max_concurrency=value)


@pytest.mark.asyncio(loop_factories=["virtual"])
@pytest.mark.parametrize("keyed", [False, True], ids=["call_ordered", "run_per_key"])
async def test_an_empty_batch_with_early_returns_at_once(keyed: bool) -> None:
    # With no worker to say the batch is done, the hand-over waited a period.
    async def nothing(*_: Any) -> None:
        raise AssertionError("no call for an empty batch")

    async def early(*_: Any) -> None:
        raise AssertionError("nothing to hand over")

    start = anyio.current_time()
    if keyed:
        assert await run_per_key("step", [], nothing, 2, early) == []
    else:
        assert await call_ordered(nothing, [], 2, early) == []
    assert anyio.current_time() == start

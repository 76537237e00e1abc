"""A failing user function stops the flow cleanly and reaches the caller as-is.

Acceptance of the failure semantics of the API contract: the original
exception (same type, never an ``ExceptionGroup``) reaches ``run_main`` and
``await aiowax.run(flow)`` with a note naming the step id and the operator
role; output written before the failure stays written; every source and sink
partition that was built is closed; nothing hangs.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import aiowax
from aiowax.dataflow import Dataflow
from aiowax.inputs import (
    DynamicSource,
    FixedPartitionedSource,
    StatefulSourcePartition,
    StatelessSourcePartition,
)
from aiowax.outputs import DynamicSink, FixedPartitionedSink, StatelessSinkPartition
from aiowax.testing import TestingSink, TestingSource, run_main
from flow_helpers import VIRTUAL_WATCHDOG, run

BATCH_SIZES = [1, 2, 3, 4, 5, 1000]
ITEMS = list(range(1, 10))
WATCHDOG = 5  # seconds; a healthy run of these flows takes milliseconds


# -- tracked sources and sinks --------------------------------------------------


class _Part(StatefulSourcePartition[Any, int]):
    def __init__(self, owner: TrackedSource) -> None:
        self.owner = owner
        self.pos = 0

    def next_batch(self, sched: datetime | None) -> Any:
        owner = self.owner
        if self.pos >= len(owner.items):
            if owner.end_with is not None:
                raise owner.end_with
            raise StopIteration
        batch = owner.items[self.pos : self.pos + owner.batch_size]
        self.pos += len(batch)
        return batch

    def snapshot(self) -> int:
        return self.pos

    def close(self) -> None:
        self.owner.closed += 1
        if self.owner.close_error is not None:
            raise self.owner.close_error


class TrackedSource(FixedPartitionedSource[Any, int]):
    """One partition over ``items``; counts builds and closes.

    ``end_with``: raised by ``next_batch`` once the items are exhausted
    (instead of ``StopIteration``).
    """

    def __init__(
        self,
        items: list[Any],
        batch_size: int = 1,
        *,
        end_with: BaseException | None = None,
        close_error: Exception | None = None,
        list_parts_error: Exception | None = None,
        build_error: Exception | None = None,
    ) -> None:
        self.items = items
        self.batch_size = batch_size
        self.end_with = end_with
        self.close_error = close_error
        self.list_parts_error = list_parts_error
        self.build_error = build_error
        self.built = 0
        self.closed = 0

    def list_parts(self) -> list[str]:
        if self.list_parts_error is not None:
            raise self.list_parts_error
        return ["only"]

    def build_part(self, now: datetime, for_part: str, resume_state: int | None) -> _Part:
        if self.build_error is not None:
            raise self.build_error
        self.built += 1
        return _Part(self)


class _NeverPart(StatelessSourcePartition[Any]):
    def __init__(self, owner: NeverEndingSource) -> None:
        self.owner = owner

    async def next_batch(self, sched: datetime | None) -> list[Any]:
        self.owner.calls += 1
        self.owner.started.set()
        if self.owner.busy:
            await anyio.sleep(0)
            return [self.owner.calls]
        await anyio.Event().wait()  # never fires
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.owner.closed += 1


class NeverEndingSource(DynamicSource[Any]):
    """An async source that never ends: idle forever, or busy forever."""

    def __init__(self, *, busy: bool = False) -> None:
        self.busy = busy
        self.started = anyio.Event()
        self.calls = 0
        self.built = 0
        self.closed = 0

    def build(self, now: datetime, worker_index: int, worker_count: int) -> _NeverPart:
        self.built += 1
        return _NeverPart(self)


class _SinkPart(StatelessSinkPartition[Any]):
    def __init__(self, owner: TrackedSink) -> None:
        self.owner = owner

    def write_batch(self, items: list[Any]) -> None:
        for x in items:
            if self.owner.fail_on is not None and x == self.owner.fail_on:
                msg = f"cannot write {x!r}"
                raise OSError(msg)
            self.owner.items.append(x)

    def close(self) -> None:
        self.owner.closed += 1
        if self.owner.close_error is not None:
            raise self.owner.close_error


class _AsyncSinkPart(_SinkPart):
    async def write_batch(self, items: list[Any]) -> None:  # type: ignore[override]
        await anyio.lowlevel.checkpoint()
        super().write_batch(items)


class TrackedSink(DynamicSink[Any]):
    """Collects items; counts builds and closes; can fail on one item."""

    def __init__(
        self,
        *,
        fail_on: Any = None,
        close_error: Exception | None = None,
        build_error: Exception | None = None,
        is_async: bool = False,
    ) -> None:
        self.items: list[Any] = []
        self.fail_on = fail_on
        self.close_error = close_error
        self.build_error = build_error
        self.is_async = is_async
        self.built = 0
        self.closed = 0

    def build(self, worker_index: int, worker_count: int) -> _SinkPart:
        if self.build_error is not None:
            raise self.build_error
        self.built += 1
        return _AsyncSinkPart(self) if self.is_async else _SinkPart(self)


# -- user functions that fail on the third item ---------------------------------


class Boom(Exception):
    """The user's own exception type."""


def _check(x: int) -> None:
    if x == 3:
        msg = f"bad item {x}"
        raise Boom(msg)


def bad_mapper(x: int) -> int:
    _check(x)
    return x * 10


async def abad_mapper(x: int) -> int:
    await anyio.lowlevel.checkpoint()
    _check(x)
    return x * 10


def bad_predicate(x: int) -> bool:
    _check(x)
    return x % 2 == 1


async def abad_predicate(x: int) -> bool:
    await anyio.lowlevel.checkpoint()
    _check(x)
    return x % 2 == 1


def nonbool_predicate(x: int) -> Any:
    return "yes" if x == 3 else x < 5


async def anonbool_predicate(x: int) -> Any:
    await anyio.lowlevel.checkpoint()
    return "yes" if x == 3 else x < 5


def bad_filter_mapper(x: int) -> int | None:
    _check(x)
    return None if x == 1 else x * 10


async def abad_filter_mapper(x: int) -> int | None:
    await anyio.lowlevel.checkpoint()
    _check(x)
    return None if x == 1 else x * 10


def bad_flat_mapper(x: int) -> list[int]:
    _check(x)
    return [x, -x]


async def abad_flat_mapper(x: int) -> list[int]:
    await anyio.lowlevel.checkpoint()
    _check(x)
    return [x, -x]


def bad_inspector(x: int) -> None:
    _check(x)


async def abad_inspector(x: int) -> None:
    await anyio.lowlevel.checkpoint()
    _check(x)


def bad_epoch_inspector(epoch: int, x: int) -> None:
    assert epoch == 1
    _check(x)


async def abad_epoch_inspector(epoch: int, x: int) -> None:
    await anyio.lowlevel.checkpoint()
    assert epoch == 1
    _check(x)


def bad_worker_inspector(x: int, worker: int) -> None:
    assert worker == 0
    _check(x)


async def abad_worker_inspector(x: int, worker: int) -> None:
    await anyio.lowlevel.checkpoint()
    assert worker == 0
    _check(x)


@dataclass(frozen=True)
class Case:
    add: Callable[[Dataflow, Callable[..., Any]], None]
    sync_fn: Callable[..., Any]
    async_fn: Callable[..., Any]
    expected: list[Any]
    step_id: str
    role: str | None  # None: the engine's own TypeError, no user frame
    exc_type: type[Exception] = Boom


CASES: dict[str, Case] = {
    "map": Case(
        lambda f, fn: f.map("step", fn), bad_mapper, abad_mapper, [10, 20], "step", "map mapper"
    ),
    "filter": Case(
        lambda f, fn: f.filter("step", fn),
        bad_predicate,
        abad_predicate,
        [1],
        "step",
        "filter predicate",
    ),
    "filter-nonbool": Case(
        lambda f, fn: f.filter("step", fn),
        nonbool_predicate,
        anonbool_predicate,
        [1, 2],
        "step",
        None,
        TypeError,
    ),
    "filter_map": Case(
        lambda f, fn: f.filter_map("step", fn),
        bad_filter_mapper,
        abad_filter_mapper,
        [20],
        "step",
        "filter_map mapper",
    ),
    "flat_map": Case(
        lambda f, fn: f.flat_map("step", fn),
        bad_flat_mapper,
        abad_flat_mapper,
        [1, -1, 2, -2],
        "step",
        "flat_map mapper",
    ),
    "inspect": Case(
        lambda f, fn: f.inspect(fn),
        bad_inspector,
        abad_inspector,
        [1, 2],
        "inspect#1",
        "inspect inspector",
    ),
    "inspect_epoch": Case(
        lambda f, fn: f.inspect_epoch(fn),
        bad_epoch_inspector,
        abad_epoch_inspector,
        [1, 2],
        "inspect_epoch#1",
        "inspect_epoch inspector",
    ),
    "inspect_worker": Case(
        lambda f, fn: f.inspect_worker(fn),
        bad_worker_inspector,
        abad_worker_inspector,
        [1, 2],
        "inspect_worker#1",
        "inspect_worker inspector",
    ),
}


def _build(
    case: Case, flavor: str, batch_size: int
) -> tuple[Dataflow, TrackedSource, TrackedSink, Callable[..., Any]]:
    fn = case.sync_fn if flavor == "sync" else case.async_fn
    source = TrackedSource(ITEMS, batch_size)
    sink = TrackedSink()
    flow = Dataflow()
    flow.input("inp", source)
    case.add(flow, fn)
    flow.output("out", sink)
    return flow, source, sink, fn


def _has_note(exc: BaseException, step_id: str, role: str) -> bool:
    return any(repr(step_id) in n and role in n for n in getattr(exc, "__notes__", ()))


def _frames(exc: BaseException) -> list[str]:
    return [fr.name for fr in traceback.extract_tb(exc.__traceback__)]


def _check_failure(
    exc: BaseException,
    case: Case,
    fn: Callable[..., Any],
    source: TrackedSource,
    sink: TrackedSink,
) -> None:
    assert type(exc) is case.exc_type
    assert not isinstance(exc, BaseExceptionGroup)
    if case.role is None:
        # The engine's own check: the message names the step and the value.
        assert repr(case.step_id) in str(exc)
        assert "'yes'" in str(exc)
        assert "bool" in str(exc)
    else:
        assert str(exc) == "bad item 3"
        assert _has_note(exc, case.step_id, case.role), getattr(exc, "__notes__", None)
        frames = _frames(exc)
        assert fn.__name__ in frames
        assert frames[-1] == "_check"
    assert sink.items == case.expected
    assert (source.built, source.closed) == (1, 1)
    assert (sink.built, sink.closed) == (1, 1)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("flavor", ["sync", "async"])
@pytest.mark.parametrize("kind", list(CASES))
def test_user_function_failure_run_main(kind: str, flavor: str, batch_size: int) -> None:
    case = CASES[kind]
    flow, source, sink, fn = _build(case, flavor, batch_size)
    with pytest.raises(case.exc_type) as info:
        run_main(flow)
    _check_failure(info.value, case, fn, source, sink)


@pytest.mark.asyncio
@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("flavor", ["sync", "async"])
@pytest.mark.parametrize("kind", list(CASES))
async def test_user_function_failure_run(kind: str, flavor: str, batch_size: int) -> None:
    case = CASES[kind]
    flow, source, sink, fn = _build(case, flavor, batch_size)
    with anyio.fail_after(WATCHDOG), pytest.raises(case.exc_type) as info:
        await aiowax.run(flow)
    _check_failure(info.value, case, fn, source, sink)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_testing_source_mapper_failure_keeps_first_two(batch_size: int) -> None:
    """The issue's own reproduction, with the stock TestingSource and TestingSink."""
    out: list[int] = []
    flow = Dataflow()
    flow.input("inp", TestingSource(ITEMS, batch_size))
    flow.map("double", bad_mapper)
    flow.output("out", TestingSink(out))
    with pytest.raises(Boom) as info:
        run_main(flow)
    assert info.value.__notes__ == ["raised in step 'double' by the map mapper"]
    assert out == [10, 20]


# -- async mapper: concurrency inside a batch does not change what is kept ------


def _concurrent_failure_flow() -> tuple[Dataflow, TrackedSource, TrackedSink, list[int]]:
    failed = anyio.Event()
    finished: list[int] = []

    async def mapper(x: int) -> int:
        if x == 3:
            failed.set()
            raise Boom("bad item 3")
        if x < 3:
            # Earlier calls are slower: they end only after the third failed.
            await failed.wait()
        finished.append(x)
        return x * 10

    source = TrackedSource(list(range(1, 11)), batch_size=10)
    sink = TrackedSink()
    flow = Dataflow()
    flow.input("inp", source)
    flow.map("slow_map", mapper)
    flow.output("out", sink)
    return flow, source, sink, finished


def _check_concurrent(
    exc: Boom, source: TrackedSource, sink: TrackedSink, finished: list[int]
) -> None:
    assert _has_note(exc, "slow_map", "map mapper")
    assert "mapper" in _frames(exc)
    assert sink.items == [10, 20]
    # The calls for 1 and 2 were in flight when 3 failed, and still finished.
    assert {1, 2} <= set(finished)
    assert (source.closed, sink.closed) == (1, 1)


@pytest.mark.asyncio
async def test_async_mapper_failure_with_slower_earlier_calls() -> None:
    flow, source, sink, finished = _concurrent_failure_flow()
    with anyio.fail_after(WATCHDOG), pytest.raises(Boom) as info:
        await aiowax.run(flow)
    _check_concurrent(info.value, source, sink, finished)


def test_async_mapper_failure_with_slower_earlier_calls_run_main() -> None:
    flow, source, sink, finished = _concurrent_failure_flow()
    with pytest.raises(Boom) as info:
        run_main(flow)
    _check_concurrent(info.value, source, sink, finished)


# -- sources and sinks that fail -------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("batch_size", [1, 2, 1000])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_sink_write_batch_raises(is_async: bool, batch_size: int) -> None:
    source = TrackedSource(ITEMS, batch_size)
    sink = TrackedSink(fail_on=3, is_async=is_async)
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", sink)
    with anyio.fail_after(WATCHDOG), pytest.raises(OSError, match="cannot write 3") as info:
        await aiowax.run(flow)
    assert _has_note(info.value, "out", "output write_batch")
    assert "write_batch" in _frames(info.value)
    assert sink.items == [1, 2]
    assert (source.built, source.closed) == (1, 1)
    assert (sink.built, sink.closed) == (1, 1)


def test_sink_write_batch_raises_run_main() -> None:
    source = TrackedSource(ITEMS, 2)
    sink = TrackedSink(fail_on=3)
    flow = Dataflow()
    flow.input("inp", source)
    flow.map("id", lambda x: x)
    flow.output("out", sink)
    with pytest.raises(OSError, match="cannot write 3") as info:
        run_main(flow)
    assert _has_note(info.value, "out", "output write_batch")
    assert sink.items == [1, 2]
    assert (source.closed, sink.closed) == (1, 1)


@pytest.mark.asyncio
@pytest.mark.parametrize("batch_size", [1, 2, 1000])
async def test_source_next_batch_raises_after_items(batch_size: int) -> None:
    source = TrackedSource([1, 2, 3, 4, 5], batch_size, end_with=ConnectionError("lost"))
    sink = TrackedSink()
    flow = Dataflow()
    flow.input("inp", source)
    flow.map("double", lambda x: x * 2)
    flow.output("out", sink)
    with anyio.fail_after(WATCHDOG), pytest.raises(ConnectionError, match="lost") as info:
        await aiowax.run(flow)
    assert _has_note(info.value, "inp", "input next_batch")
    assert "next_batch" in _frames(info.value)
    # Everything read before the failure reached the sink.
    assert sink.items == [2, 4, 6, 8, 10]
    assert (source.built, source.closed) == (1, 1)
    assert (sink.built, sink.closed) == (1, 1)


class _AsyncFailingPart(StatelessSourcePartition[int]):
    def __init__(self, owner: AsyncFailingSource) -> None:
        self.owner = owner
        self.calls = 0

    async def next_batch(self, sched: datetime | None) -> list[int]:
        await anyio.lowlevel.checkpoint()
        self.calls += 1
        if self.calls > 2:
            raise ConnectionResetError("peer reset")
        return [self.calls]

    def close(self) -> None:
        self.owner.closed += 1


class AsyncFailingSource(DynamicSource[int]):
    def __init__(self) -> None:
        self.closed = 0

    def build(self, now: datetime, worker_index: int, worker_count: int) -> _AsyncFailingPart:
        return _AsyncFailingPart(self)


@pytest.mark.asyncio
async def test_async_source_next_batch_raises_after_items() -> None:
    source = AsyncFailingSource()
    sink = TrackedSink()
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", sink)
    with anyio.fail_after(WATCHDOG), pytest.raises(ConnectionResetError) as info:
        await aiowax.run(flow)
    assert _has_note(info.value, "inp", "input next_batch")
    assert sink.items == [1, 2]
    assert (source.closed, sink.closed) == (1, 1)


class _BadReturnPart(StatefulSourcePartition[Any, None]):
    def __init__(self, owner: BadReturnSource) -> None:
        self.owner = owner
        self.calls = 0

    def next_batch(self, sched: datetime | None) -> Any:
        self.calls += 1
        return [1, 2] if self.calls == 1 else self.owner.bad

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        self.owner.closed += 1


class BadReturnSource(FixedPartitionedSource[Any, None]):
    def __init__(self, bad: object) -> None:
        self.bad = bad
        self.closed = 0

    def list_parts(self) -> list[str]:
        return ["p"]

    def build_part(self, now: datetime, for_part: str, resume_state: None) -> _BadReturnPart:
        return _BadReturnPart(self)


@pytest.mark.asyncio
@pytest.mark.parametrize("bad", [None, {3}, "ab", 7, iter([3])], ids=repr)
async def test_source_returning_non_list(bad: object) -> None:
    source = BadReturnSource(bad)
    sink = TrackedSink()
    flow = Dataflow()
    flow.input("my_input", source)
    flow.output("out", sink)
    with anyio.fail_after(WATCHDOG), pytest.raises(TypeError) as info:
        await aiowax.run(flow)
    message = str(info.value)
    assert "'my_input'" in message
    assert "list" in message
    assert repr(bad) in message
    assert sink.items == [1, 2]
    assert (source.closed, sink.closed) == (1, 1)


@pytest.mark.asyncio
async def test_list_parts_raises() -> None:
    source = TrackedSource(ITEMS, list_parts_error=KeyError("no such topic"))
    sink = TrackedSink()
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", sink)
    with anyio.fail_after(WATCHDOG), pytest.raises(KeyError) as info:
        await aiowax.run(flow)
    assert _has_note(info.value, "inp", "input list_parts")
    assert "list_parts" in _frames(info.value)
    assert source.built == 0
    assert sink.closed == sink.built


@pytest.mark.asyncio
async def test_list_parts_raises_in_second_pipeline() -> None:
    first = TrackedSource(ITEMS)
    first_sink = TrackedSink()
    second = TrackedSource(ITEMS, list_parts_error=KeyError("no such topic"))
    flow = Dataflow()
    flow.input("one", first)
    flow.output("one_out", first_sink)
    flow.input("two", second)
    flow.output("two_out", TrackedSink())
    with anyio.fail_after(WATCHDOG), pytest.raises(KeyError) as info:
        await aiowax.run(flow)
    assert _has_note(info.value, "two", "input list_parts")
    assert first.closed == first.built
    assert first_sink.closed == first_sink.built


@pytest.mark.asyncio
async def test_build_part_raises() -> None:
    source = TrackedSource(ITEMS, build_error=PermissionError("denied"))
    sink = TrackedSink()
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", sink)
    with anyio.fail_after(WATCHDOG), pytest.raises(PermissionError, match="denied") as info:
        await aiowax.run(flow)
    assert _has_note(info.value, "inp", "input build_part")
    assert "build_part" in _frames(info.value)
    assert sink.items == []
    assert sink.closed == sink.built


def test_build_part_raises_run_main() -> None:
    source = TrackedSource(ITEMS, build_error=PermissionError("denied"))
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", TrackedSink())
    with pytest.raises(PermissionError) as info:
        run_main(flow)
    assert _has_note(info.value, "inp", "input build_part")


class _FailingBuildSource(DynamicSource[Any]):
    def build(self, now: datetime, worker_index: int, worker_count: int) -> Any:
        raise LookupError("no partition for this worker")


@pytest.mark.asyncio
async def test_dynamic_source_build_raises() -> None:
    sink = TrackedSink()
    flow = Dataflow()
    flow.input("inp", _FailingBuildSource())
    flow.output("out", sink)
    with anyio.fail_after(WATCHDOG), pytest.raises(LookupError) as info:
        await aiowax.run(flow)
    assert _has_note(info.value, "inp", "input build")
    assert sink.closed == sink.built


@pytest.mark.asyncio
async def test_sink_build_raises() -> None:
    source = NeverEndingSource(busy=True)
    sink = TrackedSink(build_error=ConnectionRefusedError("refused"))
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", sink)
    with anyio.fail_after(WATCHDOG), pytest.raises(ConnectionRefusedError) as info:
        await aiowax.run(flow)
    assert _has_note(info.value, "out", "output build")
    assert source.closed == source.built


@pytest.mark.asyncio
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_sink_close_raises_after_clean_run(is_async: bool) -> None:
    source = TrackedSource(ITEMS, 4)
    sink = TrackedSink(close_error=BrokenPipeError("flush failed"), is_async=is_async)
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", sink)
    with anyio.fail_after(WATCHDOG), pytest.raises(BrokenPipeError) as info:
        await aiowax.run(flow)
    assert _has_note(info.value, "out", "output close")
    assert "close" in _frames(info.value)
    assert sink.items == ITEMS
    assert (source.closed, sink.closed) == (1, 1)


def test_sink_close_raises_after_clean_run_main() -> None:
    sink = TrackedSink(close_error=BrokenPipeError("flush failed"))
    flow = Dataflow()
    flow.input("inp", TrackedSource(ITEMS))
    flow.output("out", sink)
    with pytest.raises(BrokenPipeError) as info:
        run_main(flow)
    assert _has_note(info.value, "out", "output close")
    assert sink.items == ITEMS


@pytest.mark.asyncio
async def test_source_close_raises_after_clean_run() -> None:
    source = TrackedSource(ITEMS, close_error=OSError("close failed"))
    sink = TrackedSink()
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("out", sink)
    with anyio.fail_after(WATCHDOG), pytest.raises(OSError, match="close failed") as info:
        await aiowax.run(flow)
    assert _has_note(info.value, "inp", "input close")
    assert sink.items == ITEMS
    assert (source.closed, sink.closed) == (1, 1)


# -- one pipeline fails: the others stop too --------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
async def test_failure_stops_independent_pipeline(busy: bool) -> None:
    other = NeverEndingSource(busy=busy)
    other_sink = TrackedSink()
    source = TrackedSource(ITEMS, 2)
    sink = TrackedSink()
    flow = Dataflow()
    flow.input("forever", other)
    flow.map("forever_map", lambda x: x)
    flow.output("forever_out", other_sink)
    flow.input("inp", source)
    flow.map("step", bad_mapper)
    flow.output("out", sink)
    with anyio.fail_after(WATCHDOG), pytest.raises(Boom) as info:
        await aiowax.run(flow)
    assert _has_note(info.value, "step", "map mapper")
    assert sink.items == [10, 20]
    assert (source.closed, sink.closed) == (1, 1)
    assert (other.built, other.closed) == (1, 1)
    assert (other_sink.built, other_sink.closed) == (1, 1)


def test_failure_stops_independent_pipeline_run_main() -> None:
    other = NeverEndingSource()
    other_sink = TrackedSink()
    flow = Dataflow()
    flow.input("forever", other)
    flow.output("forever_out", other_sink)
    flow.input("inp", TrackedSource(ITEMS))
    flow.map("step", bad_mapper)
    flow.output("out", TrackedSink())
    with pytest.raises(Boom):
        run_main(flow)
    assert (other.built, other.closed) == (1, 1)
    assert (other_sink.built, other_sink.closed) == (1, 1)


@pytest.mark.asyncio
async def test_failure_with_two_workers_stops_both() -> None:
    source = TrackedSource(ITEMS, 2)
    other = NeverEndingSource()
    sink = TrackedSink()
    flow = Dataflow()
    flow.input("forever", other)
    flow.output("forever_out", TrackedSink())
    flow.input("inp", source)
    flow.map("step", bad_mapper)
    flow.output("out", sink)
    with anyio.fail_after(WATCHDOG), pytest.raises(Boom):
        await aiowax.run(flow, workers=2)
    assert sink.items == [10, 20]
    # The dynamic source is built on both workers, and both are closed.
    assert (other.built, other.closed) == (2, 2)
    assert (sink.built, sink.closed) == (2, 2)


# -- a sync user function raising StopIteration is a failure, not an end ------------


def _stop_on_3(x: int) -> None:
    if x == 3:
        next(iter(()))  # StopIteration, as from an exhausted iterator


def stop_mapper(x: int) -> int:
    _stop_on_3(x)
    return x * 10


def stop_predicate(x: int) -> bool:
    _stop_on_3(x)
    return x % 2 == 1


def stop_filter_mapper(x: int) -> int | None:
    _stop_on_3(x)
    return None if x == 1 else x * 10


def stop_flat_mapper(x: int) -> list[int]:
    _stop_on_3(x)
    return [x, -x]


def stop_inspector(x: int) -> None:
    _stop_on_3(x)


STOP_CASES: dict[str, tuple[Callable[[Dataflow], None], list[Any], str, str]] = {
    "map": (lambda f: f.map("step", stop_mapper), [10, 20], "step", "map mapper"),
    "filter": (lambda f: f.filter("step", stop_predicate), [1], "step", "filter predicate"),
    "filter_map": (
        lambda f: f.filter_map("step", stop_filter_mapper),
        [20],
        "step",
        "filter_map mapper",
    ),
    "flat_map": (
        lambda f: f.flat_map("step", stop_flat_mapper),
        [1, -1, 2, -2],
        "step",
        "flat_map mapper",
    ),
    "inspect": (lambda f: f.inspect(stop_inspector), [1, 2], "inspect#1", "inspect inspector"),
    "inspect_epoch": (
        lambda f: f.inspect_epoch(lambda e, x: stop_inspector(x)),
        [1, 2],
        "inspect_epoch#1",
        "inspect_epoch inspector",
    ),
    "inspect_worker": (
        lambda f: f.inspect_worker(lambda x, w: stop_inspector(x)),
        [1, 2],
        "inspect_worker#1",
        "inspect_worker inspector",
    ),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("batch_size", [1, 1000])
@pytest.mark.parametrize("kind", list(STOP_CASES))
async def test_stop_iteration_from_user_function_is_a_failure(kind: str, batch_size: int) -> None:
    """``StopIteration`` must not silently end the batch and drop what follows.

    Crossing a coroutine it may surface as ``RuntimeError`` (PEP 479); either
    way the run fails, with the step named, and nothing after item 3 is emitted.
    """
    add, expected, step_id, role = STOP_CASES[kind]
    source = TrackedSource(ITEMS, batch_size)
    sink = TrackedSink()
    flow = Dataflow()
    flow.input("inp", source)
    add(flow)
    flow.output("out", sink)
    with anyio.fail_after(WATCHDOG), pytest.raises((StopIteration, RuntimeError)) as info:
        await aiowax.run(flow)
    chain = [info.value, info.value.__cause__, info.value.__context__]
    assert any(e is not None and _has_note(e, step_id, role) for e in chain)
    assert sink.items == expected
    assert (source.closed, sink.closed) == (1, 1)


def test_stop_iteration_from_mapper_run_main() -> None:
    sink = TrackedSink()
    flow = Dataflow()
    flow.input("inp", TrackedSource(ITEMS, 1000))
    flow.map("step", stop_mapper)
    flow.output("out", sink)
    with pytest.raises((StopIteration, RuntimeError)):
        run_main(flow)
    assert sink.items == [10, 20]


# -- a failing async call does not wait for slow calls of later items ---------------


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_async_failure_does_not_wait_for_later_slow_calls() -> None:
    """The flow stops at once: calls for items after the failing one are cancelled.

    Calls for earlier items still finish (their results are the output); calls
    for later items are not needed for anything and must not delay the stop.
    """
    later_started = anyio.Event()
    failed = anyio.Event()
    later_finished: list[int] = []

    async def mapper(x: int) -> int:
        if x == 3:
            await later_started.wait()  # fail while later calls are in flight
            failed.set()
            raise Boom("bad item 3")
        if x < 3:
            await failed.wait()
            return x * 10
        if x == 10:
            later_started.set()
        await anyio.sleep(3600)  # e.g. a slow request
        later_finished.append(x)
        return x * 10

    source = TrackedSource(list(range(1, 11)), batch_size=10)
    sink = TrackedSink()
    flow = Dataflow()
    flow.input("inp", source)
    flow.map("slow_map", mapper)
    flow.output("out", sink)
    start = anyio.current_time()
    with anyio.fail_after(24 * 3600), pytest.raises(Boom):
        await aiowax.run(flow)
    assert sink.items == [10, 20]
    assert anyio.current_time() - start < 1
    assert later_finished == []
    assert (source.closed, sink.closed) == (1, 1)


# -- more source and sink failures -------------------------------------------------------


class _AwakeFailsPart(StatelessSourcePartition[int]):
    def __init__(self) -> None:
        self.n = 0

    def next_batch(self, sched: datetime | None) -> list[int]:
        self.n += 1
        return [self.n]

    def next_awake(self) -> datetime | None:
        if self.n >= 2:
            raise ArithmeticError("cannot schedule")
        return None


class _AwakeFailsSource(DynamicSource[int]):
    def build(self, now: datetime, worker_index: int, worker_count: int) -> _AwakeFailsPart:
        return _AwakeFailsPart()


@pytest.mark.asyncio
async def test_next_awake_raises() -> None:
    sink = TrackedSink()
    flow = Dataflow()
    flow.input("inp", _AwakeFailsSource())
    flow.output("out", sink)
    with anyio.fail_after(WATCHDOG), pytest.raises(ArithmeticError) as info:
        await aiowax.run(flow)
    assert _has_note(info.value, "inp", "input next_awake")
    assert sink.items == [1, 2]
    assert sink.closed == 1


class _OddSource(FixedPartitionedSource[Any, None]):
    def __init__(self, parts: Any, part: Any = None) -> None:
        self.parts = parts
        self.part = part

    def list_parts(self) -> Any:
        return self.parts

    def build_part(self, now: datetime, for_part: str, resume_state: None) -> Any:
        return self.part


class _OddSink(DynamicSink[Any]):
    def build(self, worker_index: int, worker_count: int) -> Any:
        return [1, 2]  # not a sink partition


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("source", "exc", "words"),
    [
        (_OddSource(["a", 1]), TypeError, ["'src'", "list_parts", "1"]),
        (_OddSource(["a", "a"]), ValueError, ["'src'", "duplicate", "'a'"]),
        (_OddSource(["a"], part="nope"), TypeError, ["'src'", "partition", "'nope'"]),
    ],
    ids=["non-str-part", "duplicate-parts", "not-a-partition"],
)
async def test_bad_source_definitions(source: Any, exc: type[Exception], words: list[str]) -> None:
    sink = TrackedSink()
    flow = Dataflow()
    flow.input("src", source)
    flow.output("out", sink)
    with anyio.fail_after(WATCHDOG), pytest.raises(exc) as info:
        await aiowax.run(flow)
    for word in words:
        assert word in str(info.value)
    assert sink.closed == sink.built


@pytest.mark.asyncio
async def test_sink_build_returning_non_partition() -> None:
    source = TrackedSource(ITEMS)
    flow = Dataflow()
    flow.input("inp", source)
    flow.output("snk", _OddSink())
    with anyio.fail_after(WATCHDOG), pytest.raises(TypeError) as info:
        await aiowax.run(flow)
    assert "'snk'" in str(info.value)
    assert "[1, 2]" in str(info.value)
    assert source.closed == source.built


@pytest.mark.asyncio
async def test_no_task_left_after_failure() -> None:
    before = asyncio.all_tasks()
    flow = Dataflow()
    flow.input("forever", NeverEndingSource(busy=True))
    flow.output("forever_out", TrackedSink())
    flow.input("inp", TrackedSource(ITEMS, 2))
    flow.map("step", abad_mapper)
    flow.output("out", TrackedSink(is_async=True))
    with anyio.fail_after(WATCHDOG), pytest.raises(Boom):
        await aiowax.run(flow)
    assert {t for t in asyncio.all_tasks() if t not in before and not t.done()} == set()


# -- the user's error wins, and nothing before it is dropped ---------------------------
#
# Scenarios in which an earlier version of the engine lost output, hung, or
# let an internal exception reach the caller instead of the user's error.


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
        await run(flow, workers=2)
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


@pytest.mark.asyncio(loop_factories=["virtual"])
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
        await run(flow, watchdog=VIRTUAL_WATCHDOG, epoch_interval=timedelta(milliseconds=10))


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


@pytest.mark.asyncio(loop_factories=["virtual"])
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
        await run(flow, watchdog=VIRTUAL_WATCHDOG)
    assert raised.value.__notes__ == ["raised in step 'inp' by the input close"]
    assert out == list(range(20))


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
        await run(flow, workers=workers)
    assert raised.value.__notes__ == ["raised in step 'out' by the output list_parts"]


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


@pytest.mark.asyncio(loop_factories=["virtual"])
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
        await run(flow, watchdog=VIRTUAL_WATCHDOG, workers=2)
    assert (k0, 1) in written


# -- BaseException from user code (D7, U3, U8) -------------------------------------------------


class _Fatal(BaseException):
    pass


class _ClosingSink(DynamicSink[Any]):
    def __init__(self) -> None:
        self.written: list[Any] = []
        self.closed = 0

    def build(self, worker_index: int, worker_count: int) -> StatelessSinkPartition[Any]:
        sink = self

        class Part(StatelessSinkPartition[Any]):
            def write_batch(self, items: list[Any]) -> None:
                sink.written.extend(items)

            def close(self) -> None:
                sink.closed += 1

        return Part()


def _raising_on(three: BaseException) -> Callable[[Any], Any]:
    def mapper(x: Any) -> Any:
        if x == 3:
            raise three
        return x

    return mapper


@pytest.mark.parametrize("batch_size", [1, 5])
@pytest.mark.parametrize(
    "error",
    [SystemExit(3), KeyboardInterrupt(), GeneratorExit(), _Fatal("fatal")],
    ids=lambda e: type(e).__name__,
)
def test_a_base_exception_from_user_code_reaches_the_caller_after_an_orderly_stop(
    error: BaseException, batch_size: int
) -> None:
    # The user's exception itself, with the step named; the output before
    # it written; the sink closed (no ExceptionGroup, no lost batch).
    sink = _ClosingSink()
    flow = Dataflow()
    flow.input("inp", TestingSource(range(6), batch_size))
    flow.map("m", _raising_on(error))
    flow.output("out", sink)
    with pytest.raises(type(error)) as raised:
        run_main(flow)
    assert raised.value is error
    assert error.__notes__ == ["raised in step 'm' by the map mapper"]
    assert sink.written == [0, 1, 2]
    assert sink.closed == 1


@pytest.mark.parametrize(
    "error", [StopIteration(), StopAsyncIteration(), asyncio.CancelledError()], ids=repr
)
@pytest.mark.parametrize(
    "add",
    [
        pytest.param(lambda f, fn: f.map("s", fn), id="map"),
        pytest.param(
            lambda f, fn: f.stateful_map("s", lambda: 0, lambda st, v: (st, fn(v))),
            id="stateful_map",
        ),
        pytest.param(lambda f, fn: f.reduce("s", lambda a, v: fn(v), lambda a: False), id="reduce"),
    ],
)
def test_a_stop_or_a_sync_cancel_from_user_code_is_a_runtime_error_naming_the_step(
    error: BaseException, add: Any
) -> None:
    # These cannot travel as they are: a StopIteration leaving a coroutine
    # becomes an anonymous RuntimeError, and a CancelledError would pass for
    # a cancellation. They come back as a RuntimeError caused by them.
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", TestingSource([("k", 1), ("k", 2), ("k", 3)], 3))
    add(flow, _raising_on_three(error))
    flow.output("out", TestingSink(out))
    with pytest.raises(RuntimeError, match=f"raised {type(error).__name__}") as raised:
        run_main(flow)
    assert raised.value.__notes__[0].startswith("raised in step 's' by the ")
    if "on item ('k', 3)" not in str(raised.value):
        # (C-level map swallows a StopIteration: map's message names the
        # item instead, and there is no exception left to chain.)
        assert isinstance(raised.value.__cause__, type(error))


def _raising_on_three(error: BaseException) -> Callable[[Any], Any]:
    def fn(x: Any) -> Any:
        if x in (3, ("k", 3)):
            raise error
        return x

    return fn


def test_a_step_failure_stays_the_error_when_the_commit_after_it_fails_too(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After a step fails, the epochs done before it are committed; a commit
    # that failed then replaced the step's error (in cluster mode, a lost-
    # partitions error was even taken for a rebalance, and the step's error
    # dropped). The step's error is raised, the commit's is a note on it.
    from aiowax._recovery.runtime import Recovery
    from aiowax.recovery import RecoveryConfig, init_db_dir

    async def commit_fails(self: Any, tails: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(Recovery, "commit_done", commit_fails)
    init_db_dir(tmp_path, 1)

    def boom(x: int) -> int:
        if x == 2:
            raise ValueError("bad item")
        return x

    flow = Dataflow()
    flow.input("inp", TestingSource([1, 2, 3]))
    flow.map("boom", boom)
    flow.output("out", TestingSink([]))
    with pytest.raises(ValueError, match="bad item") as info:
        run_main(flow, recovery_config=RecoveryConfig(tmp_path))
    assert any("OSError: disk gone" in note for note in info.value.__notes__)

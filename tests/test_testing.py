"""aiowax.testing: TestingSource, TestingSink, run_main, cluster_main and helpers."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

import aiowax
from aiowax.dataflow import Dataflow
from aiowax.inputs import (
    AbortExecution,
    FixedPartitionedSource,
    StatefulSourcePartition,
    StatelessSourcePartition,
)
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.testing import (
    TestingSink,
    TestingSource,
    cluster_main,
    ffwd_iter,
    poll_next_batch,
    run_main,
)

NOW = datetime(2024, 1, 1, tzinfo=UTC)


def _drain(part: Any) -> list[list[Any]]:
    batches = []
    while True:
        try:
            batches.append(part.next_batch(None))
        except StopIteration:
            return batches


# -- TestingSource ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch_size", "expected"),
    [
        (1, [[0], [1], [2], [3], [4], [5], [6]]),
        (2, [[0, 1], [2, 3], [4, 5], [6]]),
        (3, [[0, 1, 2], [3, 4, 5], [6]]),
        (7, [[0, 1, 2, 3, 4, 5, 6]]),
        (100, [[0, 1, 2, 3, 4, 5, 6]]),
    ],
)
def test_testing_source_batch_sizes(batch_size: int, expected: list[list[int]]) -> None:
    source = TestingSource(range(7), batch_size)
    assert source.list_parts() == ["iterable"]
    part = source.build_part(NOW, "iterable", None)
    assert _drain(part) == expected


def test_testing_source_default_batch_size_is_one() -> None:
    part = TestingSource("abc").build_part(NOW, "iterable", None)
    assert _drain(part) == [["a"], ["b"], ["c"]]


def test_testing_source_empty() -> None:
    part = TestingSource([]).build_part(NOW, "iterable", None)
    assert _drain(part) == []
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", TestingSource([]))
    flow.output("out", TestingSink(out))
    run_main(flow)
    assert out == []


@pytest.mark.parametrize(
    ("batch_size", "epochs"),
    [(1, [1, 2, 3, 4, 5, 6, 7]), (3, [1, 1, 1, 2, 2, 2, 3]), (10, [1] * 7)],
)
def test_testing_source_batches_in_a_flow(batch_size: int, epochs: list[int]) -> None:
    seen: list[tuple[int, int]] = []
    out: list[int] = []
    flow = Dataflow()
    flow.input("inp", TestingSource(range(7), batch_size))
    flow.inspect_epoch(lambda e, x: seen.append((e, x)))
    flow.output("out", TestingSink(out))
    run_main(flow, epoch_interval=timedelta(0))
    assert out == list(range(7))
    assert seen == list(zip(epochs, range(7), strict=True))


def test_testing_source_reads_a_generator_once() -> None:
    def gen() -> Iterator[int]:
        yield from range(5)

    out: list[int] = []
    flow = Dataflow()
    flow.input("inp", TestingSource(gen(), 2))
    flow.output("out", TestingSink(out))
    run_main(flow)
    assert out == [0, 1, 2, 3, 4]


def test_a_second_run_of_a_testing_source_over_a_generator_is_refused() -> None:
    # Improves on the reference on purpose: Bytewax 0.17.2's second run reads
    # the spent generator and gives nothing, silently (and a resume would
    # skip from wherever the first run left it). A list runs again.
    out: list[int] = []
    flow = Dataflow()
    flow.input("inp", TestingSource(iter(range(3))))
    flow.output("out", TestingSink(out))
    run_main(flow)
    with pytest.raises(ValueError, match=r"an iterator \(range_iterator\).*earlier run") as info:
        run_main(flow)
    assert "'inp'" in str(info.value) + "".join(getattr(info.value, "__notes__", []))
    assert out == [0, 1, 2]
    again = Dataflow()
    again.input("inp", TestingSource([0, 1, 2]))
    again.output("out", TestingSink(out))
    run_main(again)
    run_main(again)
    assert out == [0, 1, 2] * 3


@pytest.mark.parametrize("bad", [0, -1])
def test_testing_source_rejects_non_positive_batch_size(bad: int) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        TestingSource([1], bad)


@pytest.mark.parametrize("bad", [1.5, "2", None, True])
def test_testing_source_rejects_non_int_batch_size(bad: Any) -> None:
    with pytest.raises(TypeError, match="batch_size"):
        TestingSource([1], bad)


# -- EOF and ABORT -----------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2, 3, 10])
def test_eof_ends_the_run_cleanly(batch_size: int) -> None:
    items = [1, 2, TestingSource.EOF(), 3, 4]
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", TestingSource(items, batch_size))
    flow.map("m", lambda x: x * 10)
    flow.output("out", TestingSink(out))
    run_main(flow)
    assert out == [10, 20]


@pytest.mark.asyncio
@pytest.mark.parametrize("batch_size", [1, 4])
async def test_eof_first_item(batch_size: int) -> None:
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", TestingSource([TestingSource.EOF(), 1, 2], batch_size))
    flow.output("out", TestingSink(out))
    with anyio.fail_after(5):
        await aiowax.run(flow)
    assert out == []


def test_eof_partition_stops_after_marker() -> None:
    part = TestingSource([1, 2, TestingSource.EOF(), 3], 10).build_part(NOW, "iterable", None)
    assert part.next_batch(None) == [1, 2]
    with pytest.raises(StopIteration):
        part.next_batch(None)
    # The marker counts as read: a resume would start after it.
    assert part.snapshot() == 3


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("marker", ["EOF", "ABORT", "EOF copied", "ABORT pickled"])
def test_a_marker_made_after_the_run_started_is_still_seen(
    batch_size: int, marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reading skips the type scan until the process has made a marker; a
    # generator that makes its marker mid-run (or a copy, or an unpickled
    # one) must switch the scan on before that marker is read.
    import copy
    import pickle

    from aiowax._testing import sources

    monkeypatch.setattr(sources, "_markers_made", False)

    def items() -> Iterator[Any]:
        yield from (1, 2, 3)
        made = getattr(TestingSource, marker.split()[0])()
        if marker.endswith("copied"):
            sources._markers_made = False
            made = copy.copy(made)
        elif marker.endswith("pickled"):
            data = pickle.dumps(made)
            sources._markers_made = False
            made = pickle.loads(data)
        yield made
        yield 4

    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", TestingSource(items(), batch_size))
    flow.output("out", TestingSink(out))
    run_main(flow)
    assert out == [1, 2, 3]
    assert sources._markers_made


def test_markers_repr() -> None:
    assert repr(TestingSource.EOF()) == "TestingSource.EOF()"
    assert repr(TestingSource.ABORT()) == "TestingSource.ABORT()"


class _CountingSinkPart(StatelessSinkPartition[Any]):
    def __init__(self, owner: CountingSink) -> None:
        self.owner = owner

    def write_batch(self, items: list[Any]) -> None:
        self.owner.items.extend(items)

    def close(self) -> None:
        self.owner.closed += 1


class CountingSink(DynamicSink[Any]):
    def __init__(self) -> None:
        self.items: list[Any] = []
        self.closed = 0

    def build(self, worker_index: int, worker_count: int) -> _CountingSinkPart:
        return _CountingSinkPart(self)


@pytest.mark.parametrize("batch_size", [1, 2, 10])
def test_abort_ends_the_run_abruptly_without_raising(batch_size: int) -> None:
    # As in the reference: the execution ends as a crash would, and
    # run_main returns (AbortExecution is how the source ends it).
    items = [1, 2, TestingSource.ABORT(), 3]
    sink = CountingSink()
    flow = Dataflow()
    flow.input("inp", TestingSource(items, batch_size))
    flow.output("out", sink)
    run_main(flow)
    assert AbortExecution is aiowax.AbortExecution
    assert issubclass(AbortExecution, RuntimeError)
    # Abrupt: items after the marker never come, and nothing is closed.
    assert 3 not in sink.items
    assert sink.items == [1, 2][: len(sink.items)]
    assert sink.closed == 0


@pytest.mark.asyncio
async def test_abort_in_async_run_returns() -> None:
    flow = Dataflow()
    flow.input("inp", TestingSource([TestingSource.ABORT()]))
    flow.output("out", TestingSink([]))
    with anyio.fail_after(5):
        assert await aiowax.run(flow) is None


def test_abort_fires_once() -> None:
    items = [1, TestingSource.ABORT(), 2]
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", TestingSource(items))
    flow.output("out", TestingSink(out))
    run_main(flow)
    assert out == [1]
    # The same marker is skipped by a later execution.
    out.clear()
    run_main(flow)
    assert out == [1, 2]


def test_a_triggered_abort_takes_no_position_and_a_batch_continues_across_it() -> None:
    # The reference's example: [0, 1, 2, ABORT, 3, 4] in batches of 2,
    # resumed from the snapshot after [0, 1], reads [2, 3] then [4].
    items = [0, 1, 2, TestingSource.ABORT(), 3, 4]
    source = TestingSource(items, 2)
    now = datetime.now(UTC)
    part = source.build_part(now, "iterable", None)
    assert part.next_batch(None) == [0, 1]
    after_first = part.snapshot()
    assert part.next_batch(None) == [2]
    assert part.snapshot() == 3  # the marker itself is not counted as read
    with pytest.raises(AbortExecution):
        part.next_batch(None)
    resumed = source.build_part(now, "iterable", after_first)
    assert resumed.next_batch(None) == [2, 3]
    assert resumed.next_batch(None) == [4]
    with pytest.raises(StopIteration):
        resumed.next_batch(None)


def test_eof_counts_as_read() -> None:
    items = [0, TestingSource.EOF(), 1]
    source = TestingSource(items, 5)
    now = datetime.now(UTC)
    part = source.build_part(now, "iterable", None)
    assert part.next_batch(None) == [0]
    with pytest.raises(StopIteration):
        part.next_batch(None)
    assert source.build_part(now, "iterable", part.snapshot()).next_batch(None) == [1]


# -- TestingSink ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [(), None, "abc", iter([]), {1}])
def test_testing_sink_rejects_non_list(bad: Any) -> None:
    with pytest.raises(TypeError, match="list"):
        TestingSink(bad)


def test_testing_sink_appends_to_the_given_list() -> None:
    out: list[Any] = ["already"]
    flow = Dataflow()
    flow.input("inp", TestingSource([1, 2]))
    flow.output("out", TestingSink(out))
    run_main(flow)
    assert out == ["already", 1, 2]


# -- ffwd_iter and poll_next_batch ----------------------------------------------------------


def test_ffwd_iter() -> None:
    it = iter(range(10))
    assert ffwd_iter(it, 3) is it
    assert next(it) == 3
    assert list(ffwd_iter(iter(range(3)), 0)) == [0, 1, 2]
    assert list(ffwd_iter(iter(range(3)), 5)) == []
    assert list(ffwd_iter((x * 2 for x in range(5)), 2)) == [4, 6, 8]


def test_poll_next_batch_on_testing_source() -> None:
    part = TestingSource(range(5), 2).build_part(NOW, "iterable", None)
    assert poll_next_batch(part) == [0, 1]
    assert poll_next_batch(part) == [2, 3]


class _SlowPart(StatefulSourcePartition[int, None]):
    def __init__(self, empties: int) -> None:
        self.empties = empties
        self.calls = 0

    def next_batch(self, sched: datetime | None) -> list[int]:
        self.calls += 1
        return [] if self.calls <= self.empties else [self.calls]

    def snapshot(self) -> None:
        return None


def test_poll_next_batch_skips_empty_batches() -> None:
    part = _SlowPart(empties=3)
    assert poll_next_batch(part) == [4]
    assert part.calls == 4


def test_poll_next_batch_times_out() -> None:
    part = _SlowPart(empties=10**9)
    with pytest.raises(TimeoutError):
        poll_next_batch(part, timeout=timedelta(milliseconds=20))
    assert part.calls >= 2


class _AsyncPart(StatelessSourcePartition[int]):
    async def next_batch(self, sched: datetime | None) -> list[int]:
        return [1]


def test_poll_next_batch_rejects_async_next_batch() -> None:
    # The coroutine it made is closed: no "never awaited" warning (an error here).
    with pytest.raises(TypeError, match="async"):
        poll_next_batch(_AsyncPart())


# -- run_main and cluster_main -------------------------------------------------------------


class _ListPart(StatefulSourcePartition[Any, int]):
    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.pos = 0

    def next_batch(self, sched: datetime | None) -> list[Any]:
        if self.pos >= len(self.items):
            raise StopIteration
        self.pos += 2
        return self.items[self.pos - 2 : self.pos]

    def snapshot(self) -> int:
        return self.pos


class MultiSource(FixedPartitionedSource[Any, int]):
    def __init__(self, parts: dict[str, list[Any]]) -> None:
        self.parts = parts

    def list_parts(self) -> list[str]:
        return list(self.parts)

    def build_part(self, now: datetime, for_part: str, resume_state: int | None) -> _ListPart:
        return _ListPart(self.parts[for_part])


def _multi_flow(out: list[Any], workers_seen: list[int]) -> Dataflow:
    parts = {f"p{i}": list(range(i * 100, i * 100 + 9)) for i in range(4)}
    flow = Dataflow()
    flow.input("inp", MultiSource(parts))
    flow.inspect_worker(lambda x, w: workers_seen.append(w))
    flow.map("m", lambda x: x + 1)
    flow.filter("f", lambda x: x % 3 != 0)
    flow.output("out", TestingSink(out))
    return flow


def test_cluster_main_two_workers_per_proc() -> None:
    expected: list[Any] = []
    run_main(_multi_flow(expected, []))
    out: list[Any] = []
    seen: list[int] = []
    cluster_main(_multi_flow(out, seen), [], 0, worker_count_per_proc=2)
    assert Counter(out) == Counter(expected)
    assert len(expected) == 24
    assert set(seen) == {0, 1}


def test_cluster_main_default_is_one_worker() -> None:
    out: list[Any] = []
    seen: list[int] = []
    cluster_main(_multi_flow(out, seen), [], 0)
    assert set(seen) == {0}
    assert len(out) == 24


def test_cluster_main_epoch_interval() -> None:
    seen: list[tuple[int, str]] = []
    flow = Dataflow()
    flow.input("inp", TestingSource(["a", "b"]))
    flow.inspect_epoch(lambda e, x: seen.append((e, x)))
    flow.output("out", TestingSink([]))
    cluster_main(flow, [], 0, epoch_interval=timedelta(0), worker_count_per_proc=2)
    assert seen == [(1, "a"), (2, "b")]


def test_cluster_main_rejects_addresses_and_proc_id() -> None:
    flow = _multi_flow([], [])
    with pytest.raises(NotImplementedError):
        cluster_main(flow, ["localhost:2101", "localhost:2102"], 0)
    with pytest.raises(ValueError, match="proc_id"):
        cluster_main(flow, [], 1)


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"worker_count_per_proc": 0}, ValueError),
        ({"worker_count_per_proc": True}, TypeError),
        ({"worker_count_per_proc": 2.0}, TypeError),
        ({"epoch_interval": timedelta(seconds=-1)}, ValueError),
        ({"epoch_interval": 5}, TypeError),
    ],
)
def test_cluster_main_checks_arguments(kwargs: dict[str, Any], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        cluster_main(_multi_flow([], []), [], 0, **kwargs)


@pytest.mark.parametrize("bad", [None, "flow", Dataflow])
def test_run_main_rejects_non_dataflow(bad: Any) -> None:
    with pytest.raises(TypeError):
        run_main(bad)


@pytest.mark.asyncio
async def test_run_main_inside_a_running_loop_is_refused() -> None:
    flow = Dataflow()
    flow.input("inp", TestingSource([1]))
    flow.output("out", TestingSink([]))
    with pytest.raises(RuntimeError, match=r"await aiowax\.run"):
        run_main(flow)
    # No coroutine was left unawaited (that warning would be an error here).
    assert asyncio.get_running_loop().is_running()


def test_run_main_runs_on_uvloop() -> None:
    loops: list[str] = []

    async def record(x: int) -> int:
        loops.append(type(asyncio.get_running_loop()).__module__.split(".")[0])
        return x

    flow = Dataflow()
    flow.input("inp", TestingSource([1]))
    flow.map("m", record)
    flow.output("out", TestingSink([]))
    run_main(flow)
    assert loops == ["uvloop"]


def test_run_main_leaves_an_applications_gc_freeze_alone() -> None:
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

"""Outputs (`aiowax._engine.ops.output`): writing to sinks, passing items on.

A fixed partitioned sink writes each item's value to the partition its
``part_fn`` picks, each partition built on one worker only; an output step
passes the items on, unchanged, to the steps after it.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any
from zlib import crc32

import anyio
import anyio.lowlevel
import pytest

from aiowax.dataflow import Dataflow
from aiowax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)
from aiowax.recovery import RecoveryConfig, init_db_dir
from aiowax.testing import TestingSink, TestingSource, run_main
from flow_helpers import VIRTUAL_WATCHDOG, PartsSource, TimedSource, run

# -- fixed partitioned sinks -----------------------------------------------------------


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


class _Index:
    """An int-like of another type, as numpy's integers are: it has ``__index__``."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


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
        if item_key == "as text":
            return "1"  # type: ignore[return-value]
        if item_key.startswith("index"):
            return _Index(int(item_key.removeprefix("index")))  # type: ignore[return-value]
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
    await run(flow)
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
    await run(flow)
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
    await run(flow, workers=2)
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
        await run(flow)
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
        await run(flow)
    assert any("'kv_out'" in n and "part_fn" in n for n in info.value.__notes__)
    assert sink.written == {"p0": [1]}
    assert sorted(sink.closed) == ["p0", "p1"]


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 2])
async def test_fixed_partitioned_sink_part_fn_must_return_an_int(workers: int) -> None:
    # A str result failed with Python's "not all arguments converted during
    # string formatting" (the `%` of the partition count on a str).
    sink = KVSink(["p0", "p1"])
    flow = Dataflow()
    flow.input("inp", TestingSource([("k0", 1), ("as text", 2), ("k1", 3)], 4))
    flow.output("kv_out", sink)
    with pytest.raises(TypeError, match=r"^output step 'kv_out': the sink's part_fn") as info:
        await run(flow, workers=workers)
    assert "for key 'as text' it returned '1' (str)" in str(info.value)
    assert sink.written == {"p0": [1]}


@pytest.mark.asyncio
async def test_fixed_partitioned_sink_part_fn_may_return_an_int_like() -> None:
    sink = KVSink(["p0", "p1"])
    flow = Dataflow()
    flow.input("inp", TestingSource([("index1", "a"), ("index2", "b")], 2))
    flow.output("kv_out", sink)
    await run(flow)
    assert sink.written == {"p1": ["a"], "p0": ["b"]}


# -- an output passes items on ---------------------------------------------------------


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
    await run(flow)
    assert first == [0, 1, 2, 3, 4]
    assert second == [100, 101, 102, 103, 104]
    assert third == second


# -- writes left in flight (the private hooks KafkaSink uses) ------------------------


class _InFlightPart(StatelessSinkPartition[Any]):
    """Keeps written items pending until the engine confirms them, as KafkaSink does."""

    def __init__(self, owner: InFlightSink) -> None:
        self.owner = owner
        self.pending: list[Any] = []

    def write_batch(self, items: list[Any]) -> None:
        raise AssertionError("the engine calls _aiowax_awrite_batch")

    async def _aiowax_awrite_batch(self, items: list[Any]) -> None:
        self.pending.extend(items)
        self.owner.log.append((asyncio.get_running_loop().time(), "write", list(items)))

    async def _aiowax_aflush(self) -> None:
        now = asyncio.get_running_loop().time()
        if self.owner.fail_flush:
            raise OSError("the broker did not acknowledge")
        self.owner.log.append((now, "flush", self.pending))
        self.owner.confirmed.extend(self.pending)
        self.pending = []

    async def _aiowax_aclose(self) -> None:
        self.owner.log.append((asyncio.get_running_loop().time(), "close", self.pending))


class InFlightSink(DynamicSink[Any]):
    def __init__(self, fail_flush: bool = False) -> None:
        self.fail_flush = fail_flush
        self.log: list[tuple[float, str, list[Any]]] = []
        self.confirmed: list[Any] = []

    def build(self, worker_index: int, worker_count: int) -> _InFlightPart:
        return _InFlightPart(self)


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_writes_in_flight_are_confirmed_a_second_later_while_input_is_idle() -> None:
    # Epochs far apart: only the output step's own timer confirms in between.
    sink = InFlightSink()
    flow = Dataflow()
    flow.input("inp", TimedSource([(0, [1, 2]), (0.5, [3]), (100, [4])], end=600))
    flow.output("out", sink)
    await run(flow, epoch_interval=timedelta(hours=1), watchdog=VIRTUAL_WATCHDOG)
    assert sink.log == [
        (0.0, "write", [1, 2]),
        (0.5, "write", [3]),
        (1.0, "flush", [1, 2, 3]),  # one second after the first unconfirmed write
        (100.0, "write", [4]),
        (101.0, "flush", [4]),
        (600.0, "flush", []),  # the end of the input
        (600.0, "close", []),
    ]
    assert sink.confirmed == [1, 2, 3, 4]


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_writes_in_flight_are_confirmed_before_each_epoch_end() -> None:
    sink = InFlightSink()
    flow = Dataflow()
    flow.input("inp", TimedSource([(0, [1]), (0.25, [2]), (0.5, [3])], end=0.75))
    flow.output("out", sink)
    await run(flow, epoch_interval=timedelta(seconds=0.3), watchdog=VIRTUAL_WATCHDOG)
    flushes = [(t, items) for t, what, items in sink.log if what == "flush"]
    # Epochs end every 0.3 s: each confirms what was written before it,
    # well before the one-second timer would.
    assert flushes == [(0.3, [1, 2]), (0.6, [3]), (0.75, [])]


def test_an_epoch_is_not_committed_before_its_writes_are_confirmed(tmp_path: Path) -> None:
    db_dir = tmp_path / "db"
    init_db_dir(db_dir, 1)
    config = RecoveryConfig(db_dir)

    def flow_to(sink: DynamicSink[Any]) -> Dataflow:
        flow = Dataflow()
        flow.input("inp", TestingSource(range(6), batch_size=2))
        flow.output("out", sink)
        return flow

    broken = InFlightSink(fail_flush=True)
    with pytest.raises(OSError, match="did not acknowledge") as info:
        run_main(flow_to(broken), epoch_interval=timedelta(0), recovery_config=config)
    assert info.value.__notes__ == ["raised in step 'out' by the output sink confirming its writes"]
    assert broken.confirmed == []
    # The first epoch's writes were never confirmed, so it was never
    # committed: the next run writes everything again (at least once).
    healthy = InFlightSink()
    run_main(flow_to(healthy), epoch_interval=timedelta(0), recovery_config=config)
    assert healthy.confirmed == [0, 1, 2, 3, 4, 5]


def test_a_sync_write_batch_returning_a_coroutine_is_awaited() -> None:
    # A sync write_batch handing over to an async client (``return
    # client.send(items)``): the coroutine was dropped, so nothing was
    # written, and the run reported success. Awaited now, as a map's is.
    written: list[int] = []

    async def send(items: list[int]) -> None:
        await asyncio.sleep(0)
        written.extend(items)

    class Part(StatelessSinkPartition[int]):
        def write_batch(self, items: list[int]) -> Any:
            return send(items)

    class Sink(DynamicSink[int]):
        def build(self, worker_index: int, worker_count: int) -> Part:
            return Part()

    flow = Dataflow()
    flow.input("inp", TestingSource(range(5), 2))
    flow.output("out", Sink())
    run_main(flow)
    assert written == [0, 1, 2, 3, 4]

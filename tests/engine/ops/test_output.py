"""Outputs (`aiowax._engine.ops.output`): writing to sinks, passing items on.

A fixed partitioned sink writes each item's value to the partition its
``part_fn`` picks, each partition built on one worker only; an output step
passes the items on, unchanged, to the steps after it.
"""

from __future__ import annotations

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
from aiowax.testing import TestingSink, TestingSource
from flow_helpers import PartsSource, run

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

"""Keyed state gives its memory back when keys end (issue 16).

CPython never shrinks a dict when entries go: a step that held a million
keys would keep a million-slot table after they all ended. The keyed steps
rebuild their tables once they fall well below their peak
(`aiowax._engine.ops.keyed.compacted`), and the window steps bound the memo
of forgotten watermarks. Each test sends a burst of keys that all end, looks
at the step while they are open and after they ended, and checks both its
tables (``sys.getsizeof``) and what the process holds (``tracemalloc``).

Also here: what an open one-item session costs, so that a change making it
dearer is seen (the session-memory benchmark holds ~100,000 such keys).
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from test_windows import Script

import aiowax
from aiowax._engine.ops import batch as batch_op
from aiowax._engine.ops.keyed import COMPACT_FROM, compacted
from aiowax._engine.ops.windows import op as window_op
from aiowax._engine.ops.windows.state import NO_SESSIONS, NO_WINDOWS
from aiowax._testing.virtual import VIRTUAL_EPOCH
from aiowax.dataflow import Dataflow
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.window import EventClockConfig, SessionWindow, TumblingWindow, WindowConfig
from observing import observe_runs, operators_of

KEYS = 20_000
#: The most a table may keep once its keys ended: one a quarter of a
#: `COMPACT_FROM`-entry peak is not rebuilt again.
SMALL = sys.getsizeof(dict.fromkeys(range(COMPACT_FROM)))
#: The memo of forgotten watermarks, made small here so that it overflows.
MEMO = 1000
virtual = pytest.mark.asyncio(loop_factories=["virtual"])


# -- a counting sink (the scripted source is test_windows' `Script`) --------------------


class _Counting(StatelessSinkPartition[Any]):
    def __init__(self) -> None:
        self.count = 0

    def write_batch(self, items: list[Any]) -> None:
        self.count += len(items)


class CountingSink(DynamicSink[Any]):
    """Keeps a count only: a list of the output would hide what the step frees."""

    def __init__(self) -> None:
        self.part = _Counting()

    def build(self, worker_index: int, worker_count: int) -> _Counting:
        return self.part


#: Where the steps allocate: what is traced elsewhere (the lanes, the channels,
#: the event loop) is not theirs to give back.
OPS_FILES = tracemalloc.Filter(True, "*/aiowax/_engine/ops/*")


class Looks:
    """Looks at the step: the size of its tables, and the memory the steps hold.

    ``traced``: the bytes allocated by the steps' code and still held
    (`tracemalloc`), their state and the output batches in flight.
    """

    def __init__(self, ops: list[Any], tables: tuple[str, ...]) -> None:
        self.ops, self.tables = ops, tables
        self.seen: list[dict[str, int]] = []

    def __call__(self) -> None:
        gc.collect()
        [op] = self.ops
        look = {name: sys.getsizeof(getattr(op, name)) for name in self.tables}
        look["count"] = len(getattr(op, self.tables[0]))
        held = tracemalloc.take_snapshot().filter_traces([OPS_FILES])
        look["traced"] = sum(stat.size for stat in held.statistics("filename"))
        self.seen.append(look)


async def traced_run(
    flow_of: Callable[[Script], Dataflow], step_id: str, tables: tuple[str, ...], *script: Any
) -> tuple[list[dict[str, int]], list[Any]]:
    """Run the flow over ``script`` tracing memory; each ``"look"`` in it looks at the step."""
    ops: list[Any] = []
    looks = Looks(ops, tables)
    flow = flow_of(Script(*(looks if entry == "look" else entry for entry in script)))
    gc.collect()
    tracemalloc.start()
    try:
        with observe_runs(lambda ctx: ops.extend(operators_of([ctx], step_id))):
            await aiowax.run(flow)
    finally:
        tracemalloc.stop()
    return looks.seen, ops


def at(seconds: float) -> datetime:
    return VIRTUAL_EPOCH + timedelta(seconds=seconds)


def get_time(value: tuple[float, int]) -> datetime:
    return at(value[0])


def add(a: tuple[float, int], b: tuple[float, int]) -> tuple[float, int]:
    return (b[0], a[1] + b[1])


@pytest.fixture
def small_memo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(window_op, "FORGOTTEN_WATERMARKS", MEMO)
    yield
    # The shared empties of `KeyState` were never written.
    assert NO_WINDOWS == {}
    assert NO_SESSIONS == []


def burst(seconds_apart: float = 1e-5) -> list[tuple[str, tuple[float, int]]]:
    """One item for each of `KEYS` new keys, times ``seconds_apart`` apart."""
    return [(f"k{i}", (i * seconds_apart, i)) for i in range(KEYS)]


# -- window steps ------------------------------------------------------------------


@virtual
@pytest.mark.usefixtures("small_memo")
@pytest.mark.parametrize(
    "window",
    [SessionWindow(timedelta(seconds=1)), TumblingWindow(timedelta(seconds=1), VIRTUAL_EPOCH)],
    ids=["session", "tumbling"],
)
async def test_a_window_step_gives_back_the_memory_of_keys_that_ended(
    window: WindowConfig,
) -> None:
    sink = CountingSink()

    def flow_of(source: Script) -> Dataflow:
        flow = Dataflow()
        flow.input("inp", source)
        flow.reduce_window("win", EventClockConfig(get_time, timedelta(0)), window, add)
        flow.output("out", sink)
        return flow

    tables = ("keys", "forgotten", "timers", "heap")
    # Looks: before, with every key open, after every window closed (and
    # one more key's window, so the last output batch is not in flight).
    script = ("look", burst(), 0.5, "look", 5.0, [("end", (10.0, 0))], 5.0, "look")
    seen, [op] = await traced_run(flow_of, "win", tables, *script)
    before, peak, after = seen
    assert (peak["count"], after["count"], sink.part.count) == (KEYS, 0, KEYS + 1)
    # The tables are back to a small size, the memo to its bound.
    assert after["keys"] <= SMALL < peak["keys"] / 10
    assert after["timers"] <= SMALL and op.heap == []
    assert len(op.forgotten) <= MEMO
    assert after["forgotten"] <= sys.getsizeof(dict.fromkeys(range(MEMO)))
    # And so is what the process holds: less than a tenth of the growth is left.
    assert after["traced"] - before["traced"] < (peak["traced"] - before["traced"]) / 10


@virtual
@pytest.mark.parametrize(
    ("window", "bound"),
    [
        (SessionWindow(timedelta(seconds=1)), 200),
        (TumblingWindow(timedelta(seconds=1), VIRTUAL_EPOCH), 250),
    ],
    ids=["session", "tumbling"],
)
async def test_what_an_open_one_item_window_costs(window: WindowConfig, bound: int) -> None:
    # What the step allocates for it (the items were made before tracing),
    # on CPython 3.11. A session: a `KeyState` (96 bytes, the item in its
    # slots) and the key's entries in the step's dict and timers, 125 bytes
    # in all; 640 before issue 16 (a state, a dict of windows, three lists,
    # two tuples, two ints and a heap entry). A tumbling window: the same
    # with the window in the slots, and a timer entry of its own (a key's
    # deadline depends on its watermark: its float, a dict entry holding
    # the key alone, a heap entry): 215 bytes; 503 while a key's lone window
    # was in a dict of its own, and its timer entry a list.
    def flow_of(source: Script) -> Dataflow:
        flow = Dataflow()
        flow.input("inp", source)
        clock = EventClockConfig(get_time, timedelta(0))
        flow.reduce_window("win", clock, window, add)
        flow.output("out", CountingSink())
        return flow

    seen, _ = await traced_run(flow_of, "win", ("keys",), "look", burst(), 0.5, "look")
    before, peak = seen
    assert peak["count"] == KEYS
    assert (peak["traced"] - before["traced"]) / KEYS < bound


# -- stateful_map and reduce ---------------------------------------------------------


def keep_once(state: int, value: Any) -> tuple[int | None, Any]:
    """Keeps the key's state after its first item, drops it after the second."""
    return (None if state else 1), value


@virtual
@pytest.mark.parametrize("step", ["stateful_map", "reduce", "batch"])
async def test_a_keyed_step_gives_back_the_memory_of_keys_that_ended(step: str) -> None:
    # batch: each list goes out full at the second item, long before its
    # timeout; its deadline and its entry in the step's queue go too.
    def flow_of(source: Script) -> Dataflow:
        flow = Dataflow()
        flow.input("inp", source)
        if step == "stateful_map":
            flow.stateful_map("keyed", lambda: 0, keep_once)
        elif step == "batch":
            flow.batch("keyed", 2, timedelta(hours=1))
        else:
            flow.reduce("keyed", lambda a, b: a + b, lambda acc: acc >= 2)
        flow.output("out", CountingSink())
        return flow

    # Every key twice: the first item makes its state, the second ends it
    # (then one more key, ending at once: the last output batch in flight,
    # which the next steps hold until another comes, is not the big one).
    first = [(f"k{i}", 1) for i in range(KEYS)]
    second = [(f"k{i}", 1) for i in range(KEYS)]
    script = ("look", first, 0.1, "look", second, 0.1, [("end", 1), ("end", 1)], 0.1, "look")
    tables = ("state", "deadlines", "queue") if step == "batch" else ("state",)
    seen, [op] = await traced_run(flow_of, "keyed", tables, *script)
    before, peak, after = seen
    assert (peak["count"], after["count"]) == (KEYS, 0)
    assert after["state"] <= SMALL < peak["state"] / 10
    if step == "batch":
        assert after["deadlines"] <= SMALL < peak["deadlines"] / 10
        # The entries of lists gone out full are swept (see BatchOp.__init__).
        assert len(op.queue) <= batch_op.STALE_SLACK < KEYS
    assert after["traced"] - before["traced"] < (peak["traced"] - before["traced"]) / 10


# -- the rule ----------------------------------------------------------------------------


def test_a_table_is_rebuilt_once_under_a_quarter_of_its_peak() -> None:
    table = dict.fromkeys(range(COMPACT_FROM))
    same, peak = compacted(table, 0)
    assert same is table and peak == COMPACT_FROM
    for key in range(COMPACT_FROM // 4):
        del table[key]
    same, peak = compacted(table, peak)  # three quarters left: kept
    assert same is table and peak == COMPACT_FROM
    for key in range(COMPACT_FROM // 4, COMPACT_FROM - COMPACT_FROM // 4 + 1):
        del table[key]
    rebuilt, peak = compacted(table, peak)  # under a quarter: a copy, sized for it
    assert rebuilt is not table and rebuilt == table and peak == len(table)
    assert list(rebuilt) == list(table)  # in the same order
    assert sys.getsizeof(rebuilt) * 3 < sys.getsizeof(table)
    # A small table is left alone: rebuilding it would save next to nothing.
    small = dict.fromkeys(range(COMPACT_FROM - 1))
    small.clear()
    assert compacted(small, COMPACT_FROM - 1)[0] is small

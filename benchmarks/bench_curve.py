"""aiowax: one point of a cost curve (see `curvelib` for the families).

Runs in the aiowax interpreter; ``curves.py`` calls it once per point. The
flow reads `curvelib.CurveItems` (or ``range(items)``) from a
``TestingSource`` in batches of 1000 and writes to a counting null sink:

- ``--family keys --op stateful_map --x K``: K keys, ``stateful_map(zero,
  running_sum)``; ``--op fold_window``: ``fold_window`` on
  ``EventClockConfig(event_time, 0)`` with ``TumblingWindow(10 s)``.
- ``--family steps --x N``: ``range(items)`` -> N x ``map(add_one)``.
- ``--family windows --x W``: ``reduce_window(add_timed)`` with
  ``SlidingWindow(W s, 1 s)``: each item is in W windows.
- ``--family workers --x N``: ``cluster_main(flow, [], 0,
  worker_count_per_proc=N)`` (N task sets on one event loop) over
  ``map_filter`` or ``stateful_map``.
- ``--family async --x L``: ``map`` with ``async def`` mapper awaiting
  ``asyncio.sleep(L ms)``, ``max_concurrency=100``.

Times the whole ``run_main`` / ``cluster_main`` call, best of ``--repeat``;
peak RSS above the pre-run RSS of the first timed run.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import benchlib
import curvelib
from benchlib import ALIGN, add_one, add_timed, event_time, is_even, running_sum, zero
from curvelib import CONCURRENCY, SLIDE, TUMBLE, CurveItems, fold_add, fold_zero

import aiowax
from aiowax.dataflow import Dataflow
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.testing import TestingSource, cluster_main, run_main
from aiowax.window import EventClockConfig, SlidingWindow, TumblingWindow


class CountingPartition(StatelessSinkPartition[Any]):
    def __init__(self) -> None:
        self.count = 0

    def write_batch(self, items: list[Any]) -> None:
        self.count += len(items)


class CountingSink(DynamicSink[Any]):
    def __init__(self) -> None:
        self.parts: list[CountingPartition] = []

    def build(self, worker_index: int, worker_count: int) -> CountingPartition:
        part = CountingPartition()
        self.parts.append(part)
        return part

    @property
    def count(self) -> int:
        return sum(p.count for p in self.parts)


def async_mapper(latency_s: float) -> Any:
    async def mapper(x: Any) -> Any:
        await asyncio.sleep(latency_s)
        return x

    return mapper


def build(args: Any, items: int, sink: CountingSink, data: dict[int, Any]) -> Dataflow:
    """The flow of one point; ``data`` caches the inputs by item count."""
    fam, op, x = args.family, args.op, args.x
    flow = Dataflow()
    clock = EventClockConfig(event_time, wait_for_system_duration=timedelta(0))
    if fam in ("keys", "windows") or (fam == "workers" and op == "stateful_map"):
        keys = curvelib.keys_of(args)
        kind = "int" if op == "stateful_map" else "timed"
        if items not in data:
            data[items] = CurveItems(items, keys, kind)
        flow.input("inp", TestingSource(data[items], batch_size=curvelib.BATCH))
    else:
        flow.input("inp", TestingSource(range(items), batch_size=curvelib.BATCH))
    if op == "stateful_map":
        flow.stateful_map("running_sum", zero, running_sum)
    elif op == "fold_window":
        tumbling = TumblingWindow(length=TUMBLE, align_to=ALIGN)
        flow.fold_window("fold", clock, tumbling, fold_zero, fold_add)
    elif fam == "windows":
        sliding = SlidingWindow(length=SLIDE * x, offset=SLIDE, align_to=ALIGN)
        flow.reduce_window("add_timed", clock, sliding, add_timed)
    elif fam == "steps":
        for i in range(x):
            flow.map(f"add_one_{i}", add_one)
    elif fam == "async":
        flow.map("sleep", async_mapper(x / 1000), max_concurrency=CONCURRENCY)
    else:  # workers, map_filter
        flow.map("add_one", add_one)
        flow.filter("is_even", is_even)
    flow.output("out", sink)
    return flow


def main() -> None:
    args = curvelib.point_parser(__doc__ or "").parse_args()
    data: dict[int, Any] = {}
    # The timed runs' input (key strings and all) is made here, outside the timing.
    if args.family in ("keys", "windows") or args.op == "stateful_map":
        kind = "int" if args.op == "stateful_map" else "timed"
        data[args.items] = CurveItems(args.items, curvelib.keys_of(args), kind)

    def run_once(items: int) -> int:
        sink = CountingSink()
        flow = build(args, items, sink, data)
        if args.family == "workers":
            cluster_main(flow, [], 0, worker_count_per_proc=args.x)
        else:
            run_main(flow)
        return sink.count

    result = curvelib.measure_point(run_once, args, "aiowax")
    result["versions"] = {
        "aiowax": aiowax.__version__,
        "uvloop": benchlib.package_version("uvloop"),
    }
    benchlib.emit(result)


if __name__ == "__main__":
    main()

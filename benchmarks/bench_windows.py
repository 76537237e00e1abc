"""aiowax windows: TestingSource of timed (key, value) -> reduce_window -> null sink.

Runs in the aiowax interpreter. The input is `benchlib.KeyedItems` of kind
``timed``: item ``i`` has key ``k{i % 100}`` and value ``(ALIGN + i ms,
i)``, read in source batches of ``--batch-size`` (1000); event times
increase, 1 ms apart, so 1,000,000 items span 1,000 s and many windows close
during the run. ``reduce_window`` on ``EventClockConfig(benchlib.event_time,
wait_for_system_duration=0)`` with reducer `benchlib.add_timed`, over
``--window tumbling`` (``TumblingWindow(10 s, align_to=ALIGN)``) or
``--window sliding`` (``SlidingWindow(60 s, 10 s, align_to=ALIGN)``: each
item is in 6 windows). Times ``aiowax.testing.run_main(flow)`` (uvloop).

A small run first collects its output and compares the accumulators, key by
key, with `benchlib.plain_windows` (``check_ok``); the timed runs count the
emitted windows (``kept_ok``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import benchlib
from benchlib import ALIGN, KeyedItems, add_timed, event_time

import aiowax
from aiowax.dataflow import Dataflow
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.testing import TestingSink, TestingSource, run_main
from aiowax.window import EventClockConfig, SlidingWindow, TumblingWindow


class CountingPartition(StatelessSinkPartition[Any]):
    """A null sink: counts what it is handed and keeps nothing."""

    def __init__(self) -> None:
        self.count = 0

    def write_batch(self, items: list[Any]) -> None:
        self.count += len(items)


class CountingSink(DynamicSink[Any]):
    def __init__(self) -> None:
        self.partition = CountingPartition()

    def build(self, worker_index: int, worker_count: int) -> CountingPartition:
        return self.partition


def window_sizes(window: str) -> tuple[timedelta, timedelta]:
    """``(length, offset)`` of the benchmark's windows."""
    if window == "tumbling":
        return timedelta(seconds=10), timedelta(seconds=10)
    return timedelta(seconds=60), timedelta(seconds=10)


def run_once(args: Any, items: int, sink: Any) -> None:
    length, offset = window_sizes(args.window)
    if args.window == "tumbling":
        windower: Any = TumblingWindow(length=length, align_to=ALIGN)
    else:
        windower = SlidingWindow(length=length, offset=offset, align_to=ALIGN)
    flow = Dataflow()
    flow.input("inp", TestingSource(KeyedItems(items, "timed"), batch_size=args.batch_size))
    clock = EventClockConfig(event_time, wait_for_system_duration=timedelta(0))
    flow.reduce_window("add_timed", clock, windower, add_timed)
    flow.output("out", sink)
    run_main(flow)


def main() -> None:
    p = benchlib.parser(__doc__ or "", items=1_000_000)
    p.add_argument("--window", choices=["tumbling", "sliding"], default="tumbling")
    p.add_argument("--batch-size", type=int, default=1000, help="source batch size")
    p.add_argument("--check-items", type=int, default=50_000, help="items of the output check")
    args = p.parse_args()
    length, offset = window_sizes(args.window)
    check_items = min(args.items, args.check_items)
    got: list[Any] = []
    run_once(args, check_items, TestingSink(got))  # warm-up and output check
    ref = benchlib.plain_windows(KeyedItems(check_items, "timed"), length, offset)
    check_ok = benchlib.window_accs(got) == benchlib.window_accs(ref)
    expected = len(benchlib.plain_windows(KeyedItems(args.items, "timed"), length, offset))
    counts: list[int] = []

    def timed() -> None:
        sink = CountingSink()
        run_once(args, args.items, sink)
        counts.append(sink.partition.count)

    times, _ = benchlib.time_runs(timed, args.repeat)
    result = benchlib.rate_result(
        "windows",
        "aiowax",
        args.items,
        times,
        counts,
        expected,
        window=args.window,
        batch_size=args.batch_size,
        check_items=check_items,
        check_ok=check_ok,
    )
    result["versions"] = {
        "aiowax": aiowax.__version__,
        "uvloop": benchlib.package_version("uvloop"),
    }
    benchlib.emit(result)


if __name__ == "__main__":
    main()

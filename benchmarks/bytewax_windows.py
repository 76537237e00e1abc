"""Bytewax 0.17.2 windows: TestingInput of timed (key, value) -> reduce_window -> null sink.

Runs in the Bytewax 0.17.2 interpreter; the same input, functions and
windows as `bench_windows.py`, in that release's names: ``TestingInput``,
``reduce_window(step_id, clock_config, window_config, reducer)`` with
``bytewax.window.EventClockConfig`` / ``TumblingWindow`` /
``SlidingWindow``. Bytewax 0.17.2 emits ``(key, acc)`` (no window
metadata), which the output check unwraps accordingly. Times
``bytewax.testing.run_main(flow)``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import benchlib
from benchlib import ALIGN, KeyedItems, add_timed, event_time
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicOutput, StatelessSink
from bytewax.testing import TestingInput, TestingOutput, run_main
from bytewax.window import EventClockConfig, SlidingWindow, TumblingWindow


class CountingSink(StatelessSink):  # type: ignore[misc]
    """A null sink: counts what it is handed and keeps nothing."""

    def __init__(self) -> None:
        self.count = 0

    def write_batch(self, items: list[Any]) -> None:
        self.count += len(items)


class CountingOutput(DynamicOutput):  # type: ignore[misc]
    def __init__(self) -> None:
        self.sink = CountingSink()

    def build(self, worker_index: int, worker_count: int) -> CountingSink:
        return self.sink


def window_sizes(window: str) -> tuple[timedelta, timedelta]:
    """``(length, offset)`` of the benchmark's windows."""
    if window == "tumbling":
        return timedelta(seconds=10), timedelta(seconds=10)
    return timedelta(seconds=60), timedelta(seconds=10)


def run_once(args: Any, items: int, out: Any) -> None:
    length, offset = window_sizes(args.window)
    if args.window == "tumbling":
        windower: Any = TumblingWindow(length=length, align_to=ALIGN)
    else:
        windower = SlidingWindow(length=length, offset=offset, align_to=ALIGN)
    flow = Dataflow()
    flow.input("inp", TestingInput(KeyedItems(items, "timed"), batch_size=args.batch_size))
    clock = EventClockConfig(event_time, wait_for_system_duration=timedelta(0))
    flow.reduce_window("add_timed", clock, windower, add_timed)
    flow.output("out", out)
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
    run_once(args, check_items, TestingOutput(got))  # warm-up and output check
    ref = benchlib.plain_windows(KeyedItems(check_items, "timed"), length, offset)
    check_ok = benchlib.window_accs(got) == benchlib.window_accs(ref)
    expected = len(benchlib.plain_windows(KeyedItems(args.items, "timed"), length, offset))
    counts: list[int] = []

    def timed() -> None:
        out = CountingOutput()
        run_once(args, args.items, out)
        counts.append(out.sink.count)

    times, _ = benchlib.time_runs(timed, args.repeat)
    result = benchlib.rate_result(
        "windows",
        "bytewax",
        args.items,
        times,
        counts,
        expected,
        window=args.window,
        batch_size=args.batch_size,
        check_items=check_items,
        check_ok=check_ok,
    )
    result["versions"] = {"bytewax": benchlib.package_version("bytewax")}
    benchlib.emit(result)


if __name__ == "__main__":
    main()

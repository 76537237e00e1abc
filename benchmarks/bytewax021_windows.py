"""Bytewax 0.21.1 windows: TestingSource of timed (key, value) -> reduce_window -> null sink.

Runs in the Bytewax 0.21.1 interpreter; the same input, functions and
windows as `bench_windows.py` (aiowax) and `bytewax_windows.py` (0.17.2), in
that release's functional API: ``win.reduce_window(step_id, up, clock,
windower, reducer)`` (``import bytewax.operators.windowing as win``) with
``EventClock(benchlib.event_time, wait_for_system_duration=0)`` (0.17.2's
``EventClockConfig``) and ``TumblingWindower(10 s, align_to=ALIGN)`` /
``SlidingWindower(60 s, 10 s, align_to=ALIGN)`` (0.17.2's
``TumblingWindow`` / ``SlidingWindow``). The operator returns a
``WindowOut``; its ``down`` stream, ``(key, (window_id, acc))``, goes to the
sink (the ``late`` and ``meta`` streams are left unconnected).
`benchlib.window_accs` unwraps the window id for the output check. Times
``bytewax.testing.run_main(flow)``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import benchlib
import bytewax.operators as op
import bytewax.operators.windowing as win
from benchlib import ALIGN, KeyedItems, add_timed, event_time
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSink, TestingSource, run_main


class CountingPartition(StatelessSinkPartition):  # type: ignore[misc]
    """A null sink: counts what it is handed and keeps nothing."""

    def __init__(self) -> None:
        self.count = 0

    def write_batch(self, items: list[Any]) -> None:
        self.count += len(items)


class CountingSink(DynamicSink):  # type: ignore[misc]
    def __init__(self) -> None:
        self.partition = CountingPartition()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> CountingPartition:
        return self.partition


def window_sizes(window: str) -> tuple[timedelta, timedelta]:
    """``(length, offset)`` of the benchmark's windows."""
    if window == "tumbling":
        return timedelta(seconds=10), timedelta(seconds=10)
    return timedelta(seconds=60), timedelta(seconds=10)


def run_once(args: Any, items: int, sink: Any) -> None:
    length, offset = window_sizes(args.window)
    if args.window == "tumbling":
        windower: Any = win.TumblingWindower(length=length, align_to=ALIGN)
    else:
        windower = win.SlidingWindower(length=length, offset=offset, align_to=ALIGN)
    flow = Dataflow("windows")
    s = op.input("inp", flow, TestingSource(KeyedItems(items, "timed"), batch_size=args.batch_size))
    clock = win.EventClock(event_time, wait_for_system_duration=timedelta(0))
    out = win.reduce_window("add_timed", s, clock, windower, add_timed)
    op.output("out", out.down, sink)
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

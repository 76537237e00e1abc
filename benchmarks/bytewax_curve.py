"""Bytewax 0.17.2: one point of a cost curve (see `curvelib` for the families).

Runs in the Bytewax 0.17.2 interpreter; the flows of `bench_curve.py` in
that release's method API: ``TestingInput(items, batch_size=1000)``,
``stateful_map(step_id, zero, running_sum)``, ``fold_window(step_id,
EventClockConfig(event_time, 0), TumblingWindow(10 s), fold_zero,
fold_add)``, ``reduce_window(step_id, clock, SlidingWindow(W s, 1 s),
add_timed)``, ``map(add_one)`` (no step id in 0.17.2) and, for the
workers family, ``cluster_main(flow, [], 0, worker_count_per_proc=N)``
(N worker threads in this process, exchanging through timely).

``--family async``: Bytewax cannot await, so the mapper is a plain
function calling ``time.sleep(L ms)``: one call at a time per worker.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import benchlib
import curvelib
from benchlib import ALIGN, add_one, add_timed, event_time, is_even, running_sum, zero
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicOutput, StatelessSink
from bytewax.testing import TestingInput, cluster_main, run_main
from bytewax.window import EventClockConfig, SlidingWindow, TumblingWindow
from curvelib import SLIDE, TUMBLE, CurveItems, fold_add, fold_zero, sleep_mapper


class CountingSink(StatelessSink):  # type: ignore[misc]
    def __init__(self) -> None:
        self.count = 0

    def write_batch(self, items: list[Any]) -> None:
        self.count += len(items)


class CountingOutput(DynamicOutput):  # type: ignore[misc]
    def __init__(self) -> None:
        self.sinks: list[CountingSink] = []

    def build(self, worker_index: int, worker_count: int) -> CountingSink:
        sink = CountingSink()
        self.sinks.append(sink)
        return sink

    @property
    def count(self) -> int:
        return sum(s.count for s in self.sinks)


def build(args: Any, items: int, out: CountingOutput, data: dict[int, Any]) -> Dataflow:
    fam, op, x = args.family, args.op, args.x
    flow = Dataflow()
    clock = EventClockConfig(event_time, wait_for_system_duration=timedelta(0))
    if fam in ("keys", "windows") or op == "stateful_map":
        kind = "int" if op == "stateful_map" else "timed"
        if items not in data:
            data[items] = CurveItems(items, curvelib.keys_of(args), kind)
        flow.input("inp", TestingInput(data[items], batch_size=curvelib.BATCH))
    else:
        flow.input("inp", TestingInput(range(items), batch_size=curvelib.BATCH))
    if op == "stateful_map":
        flow.stateful_map("running_sum", zero, running_sum)
    elif op == "fold_window":
        tumbling = TumblingWindow(length=TUMBLE, align_to=ALIGN)
        flow.fold_window("fold", clock, tumbling, fold_zero, fold_add)
    elif fam == "windows":
        sliding = SlidingWindow(length=SLIDE * x, offset=SLIDE, align_to=ALIGN)
        flow.reduce_window("add_timed", clock, sliding, add_timed)
    elif fam == "steps":
        for _ in range(x):
            flow.map(add_one)
    elif fam == "async":
        flow.map(sleep_mapper(x / 1000))
    else:  # workers, map_filter
        flow.map(add_one)
        flow.filter(is_even)
    flow.output("out", out)
    return flow


def main() -> None:
    args = curvelib.point_parser(__doc__ or "").parse_args()
    data: dict[int, Any] = {}
    # The timed runs' input (key strings and all) is made here, outside the timing.
    if args.family in ("keys", "windows") or args.op == "stateful_map":
        kind = "int" if args.op == "stateful_map" else "timed"
        data[args.items] = CurveItems(args.items, curvelib.keys_of(args), kind)

    def run_once(items: int) -> int:
        out = CountingOutput()
        flow = build(args, items, out, data)
        if args.family == "workers":
            cluster_main(flow, [], 0, worker_count_per_proc=args.x)
        else:
            run_main(flow)
        return out.count

    result = curvelib.measure_point(run_once, args, "bytewax")
    result["versions"] = {"bytewax": benchlib.package_version("bytewax")}
    benchlib.emit(result)


if __name__ == "__main__":
    main()

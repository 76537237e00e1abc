"""Bytewax 0.21.1: one point of a cost curve (see `curvelib` for the families).

Runs in the Bytewax 0.21.1 interpreter; the flows of `bench_curve.py` in
that release's functional API: ``op.input(TestingSource(items, 1000))``,
``op.stateful_map(s, sm_mapper)`` (no builder in 0.21.1: `sm_mapper` calls
`benchlib.zero` on ``None``, as in `bytewax021_keyed.py`),
``win.fold_window(s, EventClock(event_time, 0), TumblingWindower(10 s),
fold_zero, fold_add, fold_merge)`` (0.21.1 requires a merger; tumbling
windows never merge), ``win.reduce_window(s, clock, SlidingWindower(W s,
1 s), add_timed)`` (their ``down`` stream to the sink),
``op.map(f"add_one_{i}", s, add_one)`` and, for the workers family,
``cluster_main(flow, [], 0, worker_count_per_proc=N)`` (N worker threads).

``--family async``: a plain mapper calling ``time.sleep(L ms)`` (Bytewax
cannot await), or with ``--variant threads`` ``op.flat_map_batch`` handing
each source batch to a 100-thread ``ThreadPoolExecutor`` (the sleeps of a
batch overlap, 100 at a time: the same concurrency as aiowax's
``max_concurrency=100``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import benchlib
import bytewax.operators as op
import bytewax.operators.windowing as win
import curvelib
from benchlib import ALIGN, add_one, add_timed, event_time, is_even, running_sum, zero
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, cluster_main, run_main
from curvelib import (
    CONCURRENCY,
    SLIDE,
    TUMBLE,
    CurveItems,
    fold_add,
    fold_merge,
    fold_zero,
    sleep_mapper,
)


def sm_mapper(state: int | None, value: int) -> tuple[int, int]:
    """`benchlib.running_sum` with 0.21.1's ``None`` for a new key's state."""
    return running_sum(zero() if state is None else state, value)


class CountingPartition(StatelessSinkPartition):  # type: ignore[misc]
    def __init__(self) -> None:
        self.count = 0

    def write_batch(self, items: list[Any]) -> None:
        self.count += len(items)


class CountingSink(DynamicSink):  # type: ignore[misc]
    def __init__(self) -> None:
        self.parts: list[CountingPartition] = []

    def build(self, step_id: str, worker_index: int, worker_count: int) -> CountingPartition:
        part = CountingPartition()
        self.parts.append(part)
        return part

    @property
    def count(self) -> int:
        return sum(p.count for p in self.parts)


def build(
    args: Any, items: int, sink: CountingSink, data: dict[int, Any], pool: ThreadPoolExecutor | None
) -> Dataflow:
    fam, kind_op, x = args.family, args.op, args.x
    flow = Dataflow("curve")
    clock = win.EventClock(event_time, wait_for_system_duration=timedelta(0))
    if fam in ("keys", "windows") or kind_op == "stateful_map":
        kind = "int" if kind_op == "stateful_map" else "timed"
        if items not in data:
            data[items] = CurveItems(items, curvelib.keys_of(args), kind)
        s = op.input("inp", flow, TestingSource(data[items], batch_size=curvelib.BATCH))
    else:
        s = op.input("inp", flow, TestingSource(range(items), batch_size=curvelib.BATCH))
    if kind_op == "stateful_map":
        s = op.stateful_map("running_sum", s, sm_mapper)
    elif kind_op == "fold_window":
        tumbling = win.TumblingWindower(length=TUMBLE, align_to=ALIGN)
        s = win.fold_window("fold", s, clock, tumbling, fold_zero, fold_add, fold_merge).down
    elif fam == "windows":
        sliding = win.SlidingWindower(length=SLIDE * x, offset=SLIDE, align_to=ALIGN)
        s = win.reduce_window("add_timed", s, clock, sliding, add_timed).down
    elif fam == "steps":
        for i in range(x):
            s = op.map(f"add_one_{i}", s, add_one)
    elif fam == "async" and pool is not None:
        mapper = sleep_mapper(x / 1000)
        s = op.flat_map_batch("sleep", s, lambda batch: list(pool.map(mapper, batch)))
    elif fam == "async":
        s = op.map("sleep", s, sleep_mapper(x / 1000))
    else:  # workers, map_filter
        s = op.map("add_one", s, add_one)
        s = op.filter("is_even", s, is_even)
    op.output("out", s, sink)
    return flow


def main() -> None:
    args = curvelib.point_parser(__doc__ or "").parse_args()
    data: dict[int, Any] = {}
    # The timed runs' input (key strings and all) is made here, outside the timing.
    if args.family in ("keys", "windows") or args.op == "stateful_map":
        kind = "int" if args.op == "stateful_map" else "timed"
        data[args.items] = CurveItems(args.items, curvelib.keys_of(args), kind)
    pool = ThreadPoolExecutor(CONCURRENCY) if args.variant == "threads" else None

    def run_once(items: int) -> int:
        sink = CountingSink()
        flow = build(args, items, sink, data, pool)
        if args.family == "workers":
            cluster_main(flow, [], 0, worker_count_per_proc=args.x)
        else:
            run_main(flow)
        return sink.count

    name = "bytewax021" + (f"-{args.variant}" if args.variant else "")
    result = curvelib.measure_point(run_once, args, name)
    result["versions"] = {"bytewax": benchlib.package_version("bytewax")}
    benchlib.emit(result)
    if pool is not None:
        pool.shutdown()


if __name__ == "__main__":
    main()

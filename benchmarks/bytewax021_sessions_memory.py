"""Bytewax 0.21.1 peak memory of session windows over 1,000,000 one-item keys.

Runs in the Bytewax 0.21.1 interpreter; the same input, clock, window and
reducer as `bench_sessions_memory.py` (aiowax) and
`bytewax_sessions_memory.py` (0.17.2), in that release's functional API:
``TestingSource(KeyedItems(N, "unique"))`` -> ``win.reduce_window(step_id,
up, EventClock(benchlib.event_time, wait_for_system_duration=0),
SessionWindower(gap=1 s), benchlib.add_timed)``, whose ``down`` stream goes
to a null sink counting the sessions. Peak RSS minus the RSS right before
the run, as in `bench_memory.py`.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import benchlib
import bytewax.operators as op
import bytewax.operators.windowing as win
from benchlib import KeyedItems, PeakRss, add_timed, event_time
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, run_main


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


def main() -> None:
    p = benchlib.parser(__doc__ or "", items=1_000_000, repeat=1)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--gap-s", type=float, default=1.0)
    args = p.parse_args()
    flow = Dataflow("sessions_memory")
    source = TestingSource(KeyedItems(args.items, "unique"), batch_size=args.batch_size)
    s = op.input("inp", flow, source)
    clock = win.EventClock(event_time, wait_for_system_duration=timedelta(0))
    windower = win.SessionWindower(gap=timedelta(seconds=args.gap_s))
    out = win.reduce_window("add_timed", s, clock, windower, add_timed)
    sink = CountingSink()
    op.output("out", out.down, sink)
    start = time.perf_counter()
    with PeakRss() as rss:
        run_main(flow)
    wall = time.perf_counter() - start
    result: dict[str, Any] = {
        "bench": "sessions_memory",
        "contestant": "bytewax",
        "items": args.items,
        "batch_size": args.batch_size,
        "gap_s": args.gap_s,
        "sessions": sink.partition.count,
        "kept_ok": sink.partition.count == args.items,
        "wall_s": wall,
        "items_per_s": args.items / wall,
        "versions": {"bytewax": benchlib.package_version("bytewax")},
        **rss.as_dict(),
    }
    benchlib.emit(result)


if __name__ == "__main__":
    main()

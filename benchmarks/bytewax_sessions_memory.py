"""Bytewax 0.17.2 peak memory of session windows over 1,000,000 one-item keys.

Runs in the Bytewax 0.17.2 interpreter; the same input, clock, window and
reducer as `bench_sessions_memory.py` (``TestingInput``,
``reduce_window(step_id, EventClockConfig(...), SessionWindow(gap=1 s),
reducer)``), a null sink counting the sessions. Peak RSS minus the RSS right
before the run, as in `bench_memory.py`.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import benchlib
from benchlib import KeyedItems, PeakRss, add_timed, event_time
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicOutput, StatelessSink
from bytewax.testing import TestingInput, run_main
from bytewax.window import EventClockConfig, SessionWindow


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


def main() -> None:
    p = benchlib.parser(__doc__ or "", items=1_000_000, repeat=1)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--gap-s", type=float, default=1.0)
    args = p.parse_args()
    flow = Dataflow()
    flow.input("inp", TestingInput(KeyedItems(args.items, "unique"), batch_size=args.batch_size))
    clock = EventClockConfig(event_time, wait_for_system_duration=timedelta(0))
    windower = SessionWindow(gap=timedelta(seconds=args.gap_s))
    flow.reduce_window("add_timed", clock, windower, add_timed)
    out = CountingOutput()
    flow.output("out", out)
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
        "sessions": out.sink.count,
        "kept_ok": out.sink.count == args.items,
        "wall_s": wall,
        "items_per_s": args.items / wall,
        "versions": {"bytewax": benchlib.package_version("bytewax")},
        **rss.as_dict(),
    }
    benchlib.emit(result)


if __name__ == "__main__":
    main()

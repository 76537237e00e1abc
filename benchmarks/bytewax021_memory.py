"""Bytewax 0.21.1 peak memory while many items flow into a slow sink.

Runs in the Bytewax 0.21.1 interpreter; the flow of `bytewax_memory.py`
(0.17.2) in that release's functional API: ``TestingSource(range(N),
batch_size=1000) -> op.map(add_one) -> sink`` whose ``write_batch`` sleeps
1 ms per batch (``time.sleep``: 0.21.1 sinks cannot be async either, so
this blocks the worker, which is also what keeps the input from racing
ahead). Peak RSS minus the RSS right before the run, as in
`bench_memory.py`.
"""

from __future__ import annotations

import time
from typing import Any

import benchlib
import bytewax.operators as op
from benchlib import PeakRss, SinkStats, add_one
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, run_main


class SlowPartition(StatelessSinkPartition):  # type: ignore[misc]
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.stats = SinkStats()

    def write_batch(self, items: list[Any]) -> None:
        self.stats.add(len(items))
        time.sleep(self.delay_s)


class SlowSink(DynamicSink):  # type: ignore[misc]
    def __init__(self, delay_s: float) -> None:
        self.partition = SlowPartition(delay_s)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> SlowPartition:
        return self.partition


def main() -> None:
    p = benchlib.parser(__doc__ or "", items=10_000_000, repeat=1)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--delay-ms", type=float, default=1.0)
    args = p.parse_args()
    flow = Dataflow("memory")
    s = op.input("inp", flow, TestingSource(range(args.items), batch_size=args.batch_size))
    s = op.map("add_one", s, add_one)
    sink = SlowSink(args.delay_ms / 1000)
    op.output("slow", s, sink)
    start = time.perf_counter()
    with PeakRss() as rss:
        run_main(flow)
    wall = time.perf_counter() - start
    result: dict[str, Any] = {
        "bench": "memory",
        "contestant": "bytewax",
        "items": args.items,
        "batch_size": args.batch_size,
        "delay_ms": args.delay_ms,
        **sink.partition.stats.as_dict(args.items),
        "wall_s": wall,
        "versions": {"bytewax": benchlib.package_version("bytewax")},
        **rss.as_dict(),
    }
    benchlib.emit(result)


if __name__ == "__main__":
    main()

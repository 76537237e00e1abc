"""Bytewax 0.21.1 throughput: TestingSource -> map -> filter -> null sink.

Runs in the Bytewax 0.21.1 interpreter; the same flow as
`bytewax_throughput.py` (0.17.2) and `bench_throughput.py` (aiowax) in that
release's functional API: ``Dataflow("...")`` takes a flow id, each step is
a function of ``bytewax.operators`` (``op.input``, ``op.map``,
``op.filter``, ``op.output``) taking a step id and the upstream stream,
``bytewax.testing.TestingSource`` replaces ``TestingInput``, and the sink is
a ``DynamicSink`` whose ``build`` also receives the step id. Times
``bytewax.testing.run_main(flow)``.
"""

from __future__ import annotations

from typing import Any

import benchlib
import bytewax.operators as op
from benchlib import add_one, is_even
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


def run_once(items: int, batch_size: int) -> int:
    flow = Dataflow("throughput")
    s = op.input("inp", flow, TestingSource(range(items), batch_size=batch_size))
    s = op.map("add_one", s, add_one)
    s = op.filter("is_even", s, is_even)
    sink = CountingSink()
    op.output("out", s, sink)
    run_main(flow)
    return sink.partition.count


def main() -> None:
    p = benchlib.parser(__doc__ or "", items=1_000_000)
    p.add_argument("--batch-size", type=int, default=1000)
    args = p.parse_args()
    run_once(min(args.items, 1_000 if args.batch_size == 1 else 10_000), args.batch_size)
    times, kept = benchlib.time_runs(lambda: run_once(args.items, args.batch_size), args.repeat)
    result = benchlib.throughput_result("bytewax021", args.items, args.batch_size, times, kept)
    result["versions"] = {"bytewax": benchlib.package_version("bytewax")}
    benchlib.emit(result)


if __name__ == "__main__":
    main()

"""aiowax throughput: TestingSource -> map -> filter -> null sink.

Runs in the aiowax interpreter. ``--loop uvloop`` times the synchronous
``aiowax.testing.run_main(flow)`` (which runs on uvloop); ``--loop asyncio``
times ``asyncio.run(aiowax.run(flow))`` on the default event loop. Both
include starting and stopping the event loop, as Bytewax's ``run_main``
includes starting its worker.
"""

from __future__ import annotations

import asyncio
from typing import Any

import benchlib
from benchlib import add_one, is_even

import aiowax
from aiowax.dataflow import Dataflow
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.testing import TestingSource, run_main


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


def build_flow(items: int, batch_size: int) -> tuple[Dataflow, CountingSink]:
    flow = Dataflow()
    flow.input("inp", TestingSource(range(items), batch_size=batch_size))
    flow.map("add_one", add_one)
    flow.filter("is_even", is_even)
    sink = CountingSink()
    flow.output("out", sink)
    return flow, sink


def run_once(items: int, batch_size: int, loop: str) -> int:
    flow, sink = build_flow(items, batch_size)
    if loop == "uvloop":
        run_main(flow)
    else:
        asyncio.run(aiowax.run(flow))
    return sink.partition.count


def main() -> None:
    p = benchlib.parser(__doc__ or "", items=1_000_000)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = p.parse_args()
    run_once(min(args.items, 10_000), args.batch_size, args.loop)  # warm-up
    times, kept = benchlib.time_runs(
        lambda: run_once(args.items, args.batch_size, args.loop), args.repeat
    )
    result = benchlib.throughput_result("aiowax", args.items, args.batch_size, times, kept)
    result["loop"] = args.loop
    result["versions"] = {
        "aiowax": aiowax.__version__,
        "uvloop": benchlib.package_version("uvloop"),
        "anyio": benchlib.package_version("anyio"),
    }
    benchlib.emit(result)


if __name__ == "__main__":
    main()

"""Peak memory while many items flow into a slow async sink.

Runs in the aiowax interpreter: ``TestingSource(range(N), batch_size=1000)
-> map(add_one) -> sink`` whose ``async def write_batch`` sleeps 1 ms per
batch, so the source is much faster than the sink and only backpressure
keeps items from piling up. Reports peak RSS during the run minus the RSS
right before it (interpreter + imports + flow definition), in MB. See
`benchlib.PeakRss` for how the peak is taken.

``--contestant plain`` is the floor: a plain ``async`` loop that slices the
same range into batches of 1000, maps them and sleeps 1 ms per batch.
Both run on uvloop.
"""

from __future__ import annotations

import asyncio
import time
from itertools import islice
from typing import Any

import benchlib
import uvloop
from benchlib import PeakRss, SinkStats, add_one


def run_aiowax(items: int, batch_size: int, delay_s: float) -> tuple[SinkStats, PeakRss]:
    from aiowax.dataflow import Dataflow
    from aiowax.outputs import DynamicSink, StatelessSinkPartition
    from aiowax.testing import TestingSource, run_main

    class SlowPartition(StatelessSinkPartition[int]):
        def __init__(self) -> None:
            self.stats = SinkStats()

        async def write_batch(self, items: list[int]) -> None:
            self.stats.add(len(items))
            await asyncio.sleep(delay_s)

    class SlowSink(DynamicSink[int]):
        def __init__(self) -> None:
            self.partition = SlowPartition()

        def build(self, worker_index: int, worker_count: int) -> SlowPartition:
            return self.partition

    flow = Dataflow()
    flow.input("inp", TestingSource(range(items), batch_size=batch_size))
    flow.map("add_one", add_one)
    sink = SlowSink()
    flow.output("slow", sink)
    with PeakRss() as rss:
        run_main(flow)
    return sink.partition.stats, rss


def run_plain(items: int, batch_size: int, delay_s: float) -> tuple[SinkStats, PeakRss]:
    stats = SinkStats()

    async def consume() -> None:
        it = iter(range(items))
        while batch := list(islice(it, batch_size)):
            out = list(map(add_one, batch))
            stats.add(len(out))
            await asyncio.sleep(delay_s)

    with PeakRss() as rss:
        uvloop.run(consume())
    return stats, rss


def main() -> None:
    p = benchlib.parser(__doc__ or "", items=10_000_000, repeat=1)
    p.add_argument("--contestant", choices=["aiowax", "plain"], default="aiowax")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--delay-ms", type=float, default=1.0)
    args = p.parse_args()
    fn = run_aiowax if args.contestant == "aiowax" else run_plain
    versions = {"aiowax": benchlib.package_version("aiowax")}
    versions["uvloop"] = benchlib.package_version("uvloop")
    start = time.perf_counter()
    stats, rss = fn(args.items, args.batch_size, args.delay_ms / 1000)
    wall = time.perf_counter() - start
    result: dict[str, Any] = {
        "bench": "memory",
        "contestant": args.contestant,
        "items": args.items,
        "batch_size": args.batch_size,
        "delay_ms": args.delay_ms,
        **stats.as_dict(args.items),
        "wall_s": wall,
        "versions": versions,
        **rss.as_dict(),
    }
    benchlib.emit(result)


if __name__ == "__main__":
    main()

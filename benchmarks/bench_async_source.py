"""aiowax throughput from an ``async def next_batch`` of one item per read.

Runs in the aiowax interpreter, on uvloop. Two sources:

- ``--source queue``: ``next_batch`` awaits an ``asyncio.Queue`` that a
  producer task in the same loop fills 1,000 items per loop turn (a backlog:
  most reads return without waiting), then 5 ``map(add_one)`` and a counting
  sink;
- ``--source ready``: ``next_batch`` never waits (returns the next item at
  once), one ``map(add_one)``, a counting sink.

Reported: items/s over the whole run (event loop start included), best of
``--repeat``; the count is checked. No Bytewax counterpart: its sources
cannot be ``async def``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import datetime
from typing import Any

import uvloop
from bench_throughput import CountingSink
from benchlib import add_one

import aiowax
from aiowax.dataflow import Dataflow
from aiowax.inputs import DynamicSource, StatelessSourcePartition


class _QueuePart(StatelessSourcePartition[int]):
    def __init__(self, queue: asyncio.Queue[int | None]) -> None:
        self.queue = queue

    async def next_batch(self, sched: datetime | None) -> list[int]:
        item = await self.queue.get()
        if item is None:
            raise StopAsyncIteration
        return [item]


class _ReadyPart(StatelessSourcePartition[int]):
    def __init__(self, n: int) -> None:
        self.i = 0
        self.n = n

    async def next_batch(self, sched: datetime | None) -> list[int]:
        if self.i >= self.n:
            raise StopAsyncIteration
        self.i += 1
        return [self.i]


class _Source(DynamicSource[int]):
    def __init__(self, part: StatelessSourcePartition[int]) -> None:
        self.part = part

    def build(self, now: datetime, worker_index: int, worker_count: int) -> Any:
        return self.part


async def _run_once(source: str, n: int) -> tuple[float, int]:
    sink = CountingSink()
    flow = Dataflow()
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    if source == "queue":
        flow.input("inp", _Source(_QueuePart(queue)))
        for i in range(5):
            flow.map(f"m{i}", add_one)
    else:
        flow.input("inp", _Source(_ReadyPart(n)))
        flow.map("m", add_one)
    flow.output("out", sink)

    async def produce() -> None:
        for start in range(0, n, 1000):
            for i in range(start, min(n, start + 1000)):
                queue.put_nowait(i)
            await asyncio.sleep(0)
        queue.put_nowait(None)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        if source == "queue":
            tg.create_task(produce())
        tg.create_task(aiowax.run(flow))
    return time.perf_counter() - started, sink.partition.count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", choices=["queue", "ready"], default="queue")
    p.add_argument("--items", type=int, default=300_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    times = []
    for _ in range(args.repeat):
        seconds, count = uvloop.run(_run_once(args.source, args.items))
        assert count == args.items, (count, args.items)
        times.append(seconds)
    best = min(times)
    print(
        json.dumps(
            {
                "bench": "async_source",
                "source": args.source,
                "items": args.items,
                "times_s": times,
                "items_per_s": args.items / best,
            }
        )
    )


if __name__ == "__main__":
    main()

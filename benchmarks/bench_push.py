"""Embedding throughput: PushSource -> map -> BroadcastSink read by one subscriber.

Runs in the aiowax interpreter, all in one uvloop event loop
(``uvloop.run``), the flow run by ``aiowax.open_flow(flow)``:

- ``--source push``: ``aiowax.connectors.inproc.PushSource()`` (default
  buffer and batch size) fed by one producer task doing ``await
  src.send(i)`` for ``i in range(N)``, then ``src.close()``;
- ``--source testing``: ``TestingSource(range(N), batch_size=--batch-size)``
  (the in-memory source of the other benchmarks);
- ``--sink broadcast``: ``BroadcastSink(overflow="block")`` with one
  subscriber (subscribed before the flow starts), a consumer task counting
  what ``async for`` yields; ``--sink null``: a sink counting batch lengths.

The flow between them is ``map(add_one)``. Reported: input items/s over the
whole ``uvloop.run`` (event loop, flow start and stop included, as for
``run_main`` elsewhere), best of ``--repeat``; the count is checked.
"""

from __future__ import annotations

import asyncio
from typing import Any

import benchlib
import uvloop
from benchlib import add_one

import aiowax
from aiowax.connectors.inproc import BroadcastSink, PushSource, Subscription
from aiowax.dataflow import Dataflow
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.testing import TestingSource


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


async def run_once(args: Any, items: int) -> int:
    flow = Dataflow()
    push: PushSource[int] | None = None
    if args.source == "push":
        push = PushSource()
        flow.input("inp", push)
    else:
        flow.input("inp", TestingSource(range(items), batch_size=args.batch_size))
    flow.map("add_one", add_one)
    broadcast: BroadcastSink[int] | None = None
    null = CountingSink()
    if args.sink == "broadcast":
        broadcast = BroadcastSink(overflow="block")
        flow.output("out", broadcast)
    else:
        flow.output("out", null)
    received = 0

    async def produce(src: PushSource[int]) -> None:
        for i in range(items):
            await src.send(i)
        src.close()

    async def consume(subscription: Subscription[int]) -> None:
        nonlocal received
        async for _ in subscription:
            received += 1

    # Subscribed before the flow starts, so that no item is missed.
    subscription = broadcast.subscribe() if broadcast is not None else None
    async with aiowax.open_flow(flow) as handle:
        jobs = []
        if push is not None:
            jobs.append(produce(push))
        if subscription is not None:
            jobs.append(consume(subscription))
        await asyncio.gather(*jobs)
        await handle.wait()
    return received if broadcast is not None else null.partition.count


def main() -> None:
    p = benchlib.parser(__doc__ or "", items=1_000_000)
    p.add_argument("--source", choices=["push", "testing"], default="push")
    p.add_argument("--sink", choices=["broadcast", "null"], default="broadcast")
    p.add_argument("--batch-size", type=int, default=1, help="TestingSource batch size")
    args = p.parse_args()
    uvloop.run(run_once(args, min(args.items, 10_000)))  # warm-up
    times, counts = benchlib.time_runs(lambda: uvloop.run(run_once(args, args.items)), args.repeat)
    result = benchlib.rate_result(
        "push",
        "aiowax",
        args.items,
        times,
        counts,
        args.items,
        source=args.source,
        sink=args.sink,
        batch_size=args.batch_size if args.source == "testing" else None,
        loop="uvloop",
    )
    result["versions"] = {
        "aiowax": aiowax.__version__,
        "uvloop": benchlib.package_version("uvloop"),
    }
    benchlib.emit(result)


if __name__ == "__main__":
    main()

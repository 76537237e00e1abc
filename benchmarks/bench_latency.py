"""Single-item latency through an idle flow: async source -> 5 maps -> sink.

Runs in the aiowax interpreter. The source partition's ``async def
next_batch`` waits on an ``asyncio.Queue``; a feeder task in the same event
loop puts one item (its send time, ``time.perf_counter_ns()``) into the
queue, waits until the sink has seen it, sleeps ``--gap-ms`` plus a random
0..``--jitter-ms`` so the flow is idle again, and repeats. Each of the 5
maps is ``add_one``, so the sink recovers the send time as ``value - 5``.
The first ``--warmup`` items are not counted. ``--repeat`` rounds (each a
fresh event loop and flow) are pooled: percentiles are over every round's
items, and each round's p50 is listed too, to show the noise.

``--contestant plain`` is the floor: a bare asyncio task that awaits the
same queue, calls ``add_one`` 5 times and signals the feeder, no engine.

Also reported: the CPU time the process used per second of wall time while
feeding (an idle flow should not spin).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import benchlib
from benchlib import Round, add_one

MAPS = 5


class Probe:
    """What the feeder and the receiving end share."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[int | None] = asyncio.Queue()
        self.arrived = asyncio.Event()
        self.latencies_ns: list[int] = []

    def received(self, values: list[int]) -> None:
        now = time.perf_counter_ns()
        for v in values:
            self.latencies_ns.append(now - (v - MAPS))
        self.arrived.set()


async def feed(probe: Probe, gaps: list[float]) -> tuple[float, float]:
    """Send one item per gap, one at a time; return (wall s, CPU s) spent."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for gap in gaps:
        probe.arrived.clear()
        probe.queue.put_nowait(time.perf_counter_ns())
        await asyncio.wait_for(probe.arrived.wait(), 10)
        await asyncio.sleep(gap)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    probe.queue.put_nowait(None)  # end of input
    return wall, cpu


async def receive_plain(probe: Probe) -> None:
    while (item := await probe.queue.get()) is not None:
        for _ in range(MAPS):
            item = add_one(item)
        probe.received([item])


def aiowax_flow(probe: Probe) -> Any:
    from aiowax.dataflow import Dataflow
    from aiowax.inputs import DynamicSource, StatelessSourcePartition
    from aiowax.outputs import DynamicSink, StatelessSinkPartition

    class QueuePartition(StatelessSourcePartition[int]):
        async def next_batch(self, sched: Any) -> list[int]:
            item = await probe.queue.get()
            if item is None:
                raise StopAsyncIteration
            return [item]

    class QueueSource(DynamicSource[int]):
        def build(self, now: Any, worker_index: int, worker_count: int) -> QueuePartition:
            return QueuePartition()

    class ProbePartition(StatelessSinkPartition[int]):
        def write_batch(self, items: list[int]) -> None:
            probe.received(items)

    class ProbeSink(DynamicSink[int]):
        def build(self, worker_index: int, worker_count: int) -> ProbePartition:
            return ProbePartition()

    flow = Dataflow()
    flow.input("queue", QueueSource())
    for i in range(MAPS):
        flow.map(f"add_one_{i}", add_one)
    flow.output("probe", ProbeSink())
    return flow


async def measure(contestant: str, warmup: int, gaps: list[float]) -> Round:
    probe = Probe()
    if contestant == "aiowax":
        import aiowax

        receiver = asyncio.ensure_future(aiowax.run(aiowax_flow(probe)))
    else:
        receiver = asyncio.ensure_future(receive_plain(probe))
    await asyncio.sleep(0.01)  # let the flow start and go idle
    wall, cpu = await feed(probe, gaps)
    await asyncio.wait_for(receiver, 10)
    return probe.latencies_ns[warmup:], cpu / wall


def main() -> None:
    p = benchlib.parser(__doc__ or "", items=2_000, repeat=3)
    p.add_argument("--contestant", choices=["aiowax", "plain"], default="aiowax")
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    benchlib.latency_options(p)
    args = p.parse_args()
    gaps = benchlib.idle_gaps(args.warmup + args.items, args.gap_ms, args.jitter_ms)
    if args.loop == "uvloop":
        import uvloop

        run: Any = uvloop.run
    else:
        run = asyncio.run
    rounds = [run(measure(args.contestant, args.warmup, gaps)) for _ in range(args.repeat)]
    result: dict[str, Any] = {
        "bench": "latency",
        "contestant": args.contestant,
        "loop": args.loop,
        "items": args.items,
        "warmup": args.warmup,
        "gap_ms": args.gap_ms,
        "jitter_ms": args.jitter_ms,
        "maps": MAPS,
        **benchlib.pooled_latency(rounds),
    }
    benchlib.emit(result)


if __name__ == "__main__":
    main()

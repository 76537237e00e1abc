"""`batch`: CPU per list going out by its timeout, against the lists waiting.

On the virtual clock (`aiowax.pytest_plugin.VirtualClockEventLoop`): every
second of loop time a source hands out ``KEYS_PER_S`` items of new keys (one item each, never
again), into ``batch(max_size=10, timeout=TIMEOUT_S)``, so every list goes
out by its timeout and ``KEYS_PER_S x TIMEOUT_S`` lists wait at once. Every
fifth of the run it prints the lists waiting (the step's ``keys`` stat), the
lists that went out and the process CPU per list. A tick that cost as much
as the lists waiting shows as CPU per list growing with them.

Usage: ``PYTHONPATH=src python benchmarks/bench_batch_timeouts.py 4000 60 300``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import timedelta
from typing import Any

import anyio
from bench_throughput import CountingSink

import aiowax
from aiowax.dataflow import Dataflow
from aiowax.inputs import FixedPartitionedSource, StatefulSourcePartition
from aiowax.pytest_plugin import VirtualClockEventLoop


class NewKeys(StatefulSourcePartition[Any, None]):
    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self.second = 0

    async def next_batch(self, sched: Any) -> list[Any]:
        await asyncio.sleep(1.0)
        self.second += 1
        return [(f"k{self.second}-{i}", i) for i in range(self.per_second)]

    def snapshot(self) -> None:
        return None


class Source(FixedPartitionedSource[Any, None]):
    def __init__(self, per_second: int) -> None:
        self.per_second = per_second

    def list_parts(self) -> list[str]:
        return ["new-keys"]

    def build_part(self, now: Any, for_part: str, resume_state: None) -> NewKeys:
        return NewKeys(self.per_second)


async def main(per_second: int, timeout_s: float, seconds: float) -> None:
    flow = Dataflow("batch_timeouts")
    flow.input("in", Source(per_second))
    flow.batch("batch", 10, timedelta(seconds=timeout_s))
    sink = CountingSink()
    flow.output("out", sink)
    loop = asyncio.get_running_loop()
    async with anyio.create_task_group() as tg:
        handle = await aiowax.start_flow(tg, flow)
        cpu, out = time.process_time(), 0
        while loop.time() < seconds:
            await asyncio.sleep(seconds / 5)
            now_cpu, now_out = time.process_time(), sink.partition.count
            lists = now_out - out
            waiting = handle.stats().step("batch").keys
            per_list = (now_cpu - cpu) / max(lists, 1) * 1e6
            print(
                f"t={loop.time():6.0f} s  lists waiting={waiting:>7}  out={lists:>8}  "
                f"cpu={now_cpu - cpu:6.2f} s  cpu/list={per_list:7.2f} us",
                flush=True,
            )
            cpu, out = now_cpu, now_out
        await handle.abort()


if __name__ == "__main__":
    per_second, timeout_s, seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    with asyncio.Runner(loop_factory=VirtualClockEventLoop) as runner:
        runner.run(main(per_second, timeout_s, seconds))

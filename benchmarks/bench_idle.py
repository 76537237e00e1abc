"""CPU used by an idle flow (not part of run.py): prints CPU seconds per wall second.

Two sources that never produce: a sync partition returning ``[]`` (the lane
backs off up to 20 ms between calls) and a `PushSource` nobody feeds (it
waits on an event, waking every 0.25 s so epochs keep closing). Each runs
5 s on uvloop:

    .bench-venvs/aiowax/bin/python benchmarks/bench_idle.py
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import anyio

import aiowax
from aiowax.connectors.inproc import PushSource
from aiowax.dataflow import Dataflow
from aiowax.inputs import DynamicSource, StatelessSourcePartition
from aiowax.testing import TestingSink


class Empty(StatelessSourcePartition[Any]):
    def next_batch(self, sched: datetime | None) -> list[Any]:
        return []


class EmptySource(DynamicSource[Any]):
    def build(self, now: datetime, worker_index: int, worker_count: int) -> Empty:
        return Empty()


async def measure(source: Any, seconds: float = 5.0) -> float:
    flow = Dataflow()
    flow.input("in", source)
    flow.map("m", lambda x: x)
    flow.output("out", TestingSink([]))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with anyio.move_on_after(seconds):
        await aiowax.run(flow)
    return (time.process_time() - cpu0) / (time.perf_counter() - wall0)


def main() -> None:
    for name, source in (
        ("sync source returning []", EmptySource()),
        ("idle PushSource", PushSource()),
    ):
        share = anyio.run(measure, source, backend_options={"use_uvloop": True})
        print(f"{name}: {share:.2%} of a core")


if __name__ == "__main__":
    main()

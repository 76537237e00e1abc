"""An async `map` (or `stateful_map`) over a backlog: when its first result comes out, and its cost.

Two measurements, each run in this process with uvloop:

``first``: ``TestingSource(range(ITEMS))`` (a backlog: its reads are gathered
into batches of up to 1024 items) -> ``map`` with an ``async def`` mapper
that sleeps ``DELAY_MS`` per item, ``max_concurrency=CONCURRENCY`` -> a sink
recording when each list arrives. Prints the time of the first and the
last write and the number of writes. A step that passes results on only
once its whole batch is done holds the first result for
``1024 / CONCURRENCY x DELAY_MS``.

``rate``: ``ITEMS`` through an async mapper that never waits (``nowait``) or
waits once with ``asyncio.sleep(0)`` (``yield0``), then a sync map, into a
null sink; prints items/s. The cost side of handing results on in parts.
Compare commits with ``farm-bench --vs`` on whole runs (the rate of one run
is noisy on a shared machine).

A last argument ``stateful_map`` runs the same through a `stateful_map` on
100 keys (``x % 100``) instead, whose async mapper does the same.

Usage::

    PYTHONPATH=src python benchmarks/bench_async_map_batches.py first 2000 20 1
    PYTHONPATH=src python benchmarks/bench_async_map_batches.py rate 600000 yield0
    PYTHONPATH=src python benchmarks/bench_async_map_batches.py rate 600000 yield0 stateful_map
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import uvloop
from bench_throughput import CountingSink

import aiowax
from aiowax.dataflow import Dataflow
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.testing import TestingSource


class TimedSink(DynamicSink[Any]):
    """Records ``(seconds since start, items)`` of every list it is handed."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.writes: list[tuple[float, int]] = []

    def build(self, worker_index: int, worker_count: int) -> StatelessSinkPartition[Any]:
        sink = self

        class _Part(StatelessSinkPartition[Any]):
            def write_batch(self, items: list[Any]) -> None:
                sink.writes.append((time.monotonic() - sink.start, len(items)))

        return _Part()


def _add_step(flow: Dataflow, step: str, fn: Any, concurrency: int | None = None) -> None:
    """``fn(x)`` as a `map`, or in a `stateful_map` on 100 keys."""
    if step == "map":
        flow.map("m", fn, max_concurrency=concurrency)
        return

    async def mapper(state: int, x: int) -> tuple[int, Any]:
        return state + 1, await fn(x)

    flow.map("key", lambda x: (str(x % 100), x))
    flow.stateful_map("m", lambda: 0, mapper, max_concurrency=concurrency)


def first(items: int, delay_ms: float, concurrency: int, step: str) -> None:
    async def slow(x: int) -> int:
        await asyncio.sleep(delay_ms / 1000)
        return x

    sink = TimedSink(time.monotonic())
    flow = Dataflow("async_map_first")
    flow.input("inp", TestingSource(range(items)))
    _add_step(flow, step, slow, concurrency)
    flow.output("out", sink)
    uvloop.run(aiowax.run(flow))
    (t0, _), (t1, _) = sink.writes[0], sink.writes[-1]
    print(
        f"first {step} {items} items, {delay_ms:g} ms a call, {concurrency} at once: "
        f"first write {t0:.3f} s, last {t1:.3f} s, {len(sink.writes)} writes"
    )


async def _nowait(x: int) -> int:
    return x + 1


async def _yield0(x: int) -> int:
    await asyncio.sleep(0)
    return x + 1


def rate(items: int, mode: str, step: str) -> None:
    mapper = {"nowait": _nowait, "yield0": _yield0}[mode]
    flow = Dataflow("async_map_rate")
    flow.input("inp", TestingSource(range(items), batch_size=1000))
    _add_step(flow, step, mapper)
    flow.map("m2", lambda x: x)
    flow.output("out", CountingSink())
    start = time.perf_counter()
    uvloop.run(aiowax.run(flow))
    print(f"rate {step} {mode}: {items / (time.perf_counter() - start):,.0f} items/s")


if __name__ == "__main__":
    if sys.argv[1] == "first":
        first(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), (sys.argv[5:] or ["map"])[0])
    else:
        rate(int(sys.argv[2]), sys.argv[3], (sys.argv[4:] or ["map"])[0])

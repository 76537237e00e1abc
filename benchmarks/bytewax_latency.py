"""Bytewax 0.17.2 single-item latency: polled source -> 5 maps -> sink.

Runs in the Bytewax 0.17.2 interpreter. Bytewax has no async sources, so the
source's ``next_batch`` polls a ``queue.Queue`` without blocking (returning
``[]`` when it is empty, which is how 0.17 sources wait), and a feeder
thread sends one item at a time (its ``time.perf_counter_ns()``), waits for
the sink to see it, sleeps ``--gap-ms`` plus a random 0..``--jitter-ms``,
and repeats. Same 5 ``add_one`` maps as the aiowax variant.

Bytewax 0.17.2 calls ``next_batch`` about once per millisecond, so its
latency is spread over 0..~1.1 ms; without the jitter, a fixed 1 ms gap
phase-locks with that period and makes the p50 look far better (or worse)
than for items arriving at random times. Also reports CPU time per wall
second while feeding (whether the idle worker spins).
``--repeat`` rounds are pooled as in `bench_latency.py`.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import benchlib
from benchlib import Round, add_one
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicInput, StatelessSource
from bytewax.outputs import DynamicOutput, StatelessSink
from bytewax.testing import run_main

MAPS = 5

items_q: queue.Queue[int | None] = queue.Queue()
arrived = threading.Event()
latencies_ns: list[int] = []


class QueueSource(StatelessSource):  # type: ignore[misc]
    def next_batch(self) -> list[int]:
        try:
            item = items_q.get_nowait()
        except queue.Empty:
            return []
        if item is None:
            raise StopIteration
        return [item]


class QueueInput(DynamicInput):  # type: ignore[misc]
    def build(self, worker_index: int, worker_count: int) -> QueueSource:
        return QueueSource()


class ProbeSink(StatelessSink):  # type: ignore[misc]
    def write_batch(self, items: list[int]) -> None:
        now = time.perf_counter_ns()
        for v in items:
            latencies_ns.append(now - (v - MAPS))
        arrived.set()


class ProbeOutput(DynamicOutput):  # type: ignore[misc]
    def build(self, worker_index: int, worker_count: int) -> ProbeSink:
        return ProbeSink()


def feed(gaps: list[float], stats: dict[str, Any]) -> None:
    time.sleep(0.05)  # let the worker start
    wall0, cpu0 = time.perf_counter(), time.process_time()
    try:
        for gap in gaps:
            arrived.clear()
            items_q.put(time.perf_counter_ns())
            if not arrived.wait(10):
                stats["error"] = "an item did not arrive within 10 s"
                break
            time.sleep(gap)
    finally:
        stats["wall"] = time.perf_counter() - wall0
        stats["cpu"] = time.process_time() - cpu0
        items_q.put(None)


def measure(flow: Dataflow, warmup: int, gaps: list[float]) -> Round:
    latencies_ns.clear()
    stats: dict[str, Any] = {}
    feeder = threading.Thread(target=feed, args=(gaps, stats))
    feeder.start()
    run_main(flow)
    feeder.join()
    if "error" in stats:
        raise SystemExit(stats["error"])
    return latencies_ns[warmup:], stats["cpu"] / stats["wall"]


def main() -> None:
    p = benchlib.parser(__doc__ or "", items=2_000, repeat=3)
    benchlib.latency_options(p)
    args = p.parse_args()
    gaps = benchlib.idle_gaps(args.warmup + args.items, args.gap_ms, args.jitter_ms)
    flow = Dataflow()
    flow.input("queue", QueueInput())
    for _ in range(MAPS):
        flow.map(add_one)
    flow.output("probe", ProbeOutput())
    rounds = [measure(flow, args.warmup, gaps) for _ in range(args.repeat)]
    result: dict[str, Any] = {
        "bench": "latency",
        "contestant": "bytewax",
        "loop": "bytewax worker (polling)",
        "items": args.items,
        "warmup": args.warmup,
        "gap_ms": args.gap_ms,
        "jitter_ms": args.jitter_ms,
        "maps": MAPS,
        **benchlib.pooled_latency(rounds),
        "versions": {"bytewax": benchlib.package_version("bytewax")},
    }
    benchlib.emit(result)


if __name__ == "__main__":
    main()
